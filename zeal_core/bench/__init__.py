"""Benchmark actions for ``python -m zeal_core bench <action>``: one module per action.

Add ``zeal_core/bench/<name>.py`` exposing ``register(actions, parent)`` (see ``zeal_core.commands.bench``).
"""
