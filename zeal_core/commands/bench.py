"""``bench <action>``: benchmarks that print numbers (speed targets live here, never in tests).

Extension point: every module ``zeal_core/bench/<name>.py`` (not starting with ``_``) is an action. It
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

# Help order of the known actions; any other module in zeal_core/bench is appended by name.
ACTION_ORDER = ("train", "corruptions", "detectors", "estimate", "app", "load")


def bench_actions() -> dict[str, ModuleType]:
    """Action name -> module, for every importable ``zeal_core.bench.<name>`` module."""
    import zeal_core.bench as package

    names = [info.name for info in pkgutil.iter_modules(package.__path__) if not info.name.startswith("_")]
    ordered = [name for name in ACTION_ORDER if name in names] + sorted(set(names) - set(ACTION_ORDER))
    actions: dict[str, ModuleType] = {}
    for name in ordered:
        try:
            actions[name] = importlib.import_module(f"zeal_core.bench.{name}")
        except ModuleNotFoundError as error:
            if error.name and error.name.startswith("zeal_core"):
                raise
    return actions


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add the ``bench`` command and one action per benchmark module."""
    bench = subparsers.add_parser("bench", help="benchmarks (print numbers; for speed targets)")
    actions = bench.add_subparsers(dest="action", required=True)
    for module in bench_actions().values():
        module.register(actions, parent)
