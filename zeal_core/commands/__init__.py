"""Subcommands of ``python -m zeal_core``; each module exposes ``register(subparsers, parent)``."""
