"""Benchmark actions for ``python -m benchmarks <action>``: one module per action.

Add ``benchmarks/<name>.py`` exposing ``register(actions, parent)`` (see ``benchmarks._actions``).
A module that can also run on its own (``python -m benchmarks.<name>``) calls ``script_main``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any


def script_main(description: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                handler: Callable[[argparse.Namespace], dict[str, Any]],
                show: Callable[[dict[str, Any]], None], argv: Sequence[str] | None = None,
                prog: str | None = None) -> int:
    """Entry point of ``python -m benchmarks.<name>``: the action's options plus the shared ``--json`` and
    ``--out`` (``benchmarks._harness.options_parent``), the handler wrapped as under ``python -m benchmarks``.

    Args:
        description: The ``--help`` text.
        add_arguments: Adds the action's options (the same function its ``register`` uses).
        handler: Runs the benchmark; returns a JSON-ready dict.
        show: Prints the result for people when ``--json`` is not given.
        argv: Arguments (default: the command line).
        prog: Program name for ``--help``.

    Returns:
        The exit code, 0.
    """
    from benchmarks._harness import finished, options_parent

    parser = argparse.ArgumentParser(prog=prog, description=description, parents=[options_parent()])
    add_arguments(parser)
    args = parser.parse_args(argv)
    result = finished(handler)(args)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        show(result)
    return 0
