"""``python -m benchmarks <action>``: benchmarks that print numbers (speed targets live here, never in tests).

Extension point: every module ``benchmarks/<name>.py`` (not starting with ``_``) is an action. It
exposes ``register(actions, parent)``, which adds its own subparser and handler, e.g.::

    def register(actions, parent):
        sub = actions.add_parser("corruptions", parents=[parent], help="corruption throughput")
        sub.add_argument("--n", type=int, default=256)
        sub.set_defaults(handler=run)        # run(args) -> JSON-ready dict

Nothing else needs editing: ``bench_actions()`` finds the modules, ``ACTION_ORDER`` only fixes the help order
of the known ones (others follow, sorted by name). A module that fails to import because an optional
package is missing is left out (its action does not appear); any other import error is raised.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from types import ModuleType

from benchmarks._harness import finished, options_parent

# Help order of the known actions; any other module in benchmarks is appended by name.
ACTION_ORDER = ("train", "corruptions", "detectors", "estimate", "app", "load")


def bench_actions() -> dict[str, ModuleType]:
    """Action name -> module, for every importable ``benchmarks.<name>`` module."""
    import benchmarks as package

    names = [info.name for info in pkgutil.iter_modules(package.__path__) if not info.name.startswith("_")]
    ordered = [name for name in ACTION_ORDER if name in names] + sorted(set(names) - set(ACTION_ORDER))
    actions: dict[str, ModuleType] = {}
    for name in ordered:
        try:
            actions[name] = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as error:
            if error.name and error.name.startswith(("zeal_core", "benchmarks")):
                raise
    return actions


def build_parser() -> argparse.ArgumentParser:
    """``python -m benchmarks``: one subcommand per module, with the shared ``--json``, ``--out``."""
    parent = options_parent()
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description="Zeal Drift Lab benchmarks (print numbers; speed targets)")
    actions = parser.add_subparsers(dest="action", required=True)
    for module in bench_actions().values():
        module.register(actions, parent)
    for sub in actions.choices.values():  # one machine record in every result, one --out
        sub.set_defaults(handler=finished(sub.get_default("handler")))
    return parser
