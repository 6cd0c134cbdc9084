"""The command line: ``python -m zeal_core <command> ... [--json]`` (the commands: ``COMMAND_MODULES``).

Each subcommand lives in ``zeal_core/commands/<name>.py`` and exposes ``register(subparsers, parent)``; its
handler returns a JSON-ready dict. With ``--json`` exactly one JSON object goes to stdout and logs go to
stderr; on error the exit code is non-zero and stderr gets a one-line reason.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from zeal_core.errors import ZealError
from zeal_core.progress import ProgressEvent

# Subcommand modules under zeal_core/commands, in help order.
COMMAND_MODULES = ("data", "train", "evaluate", "models", "drift", "check", "history", "settings", "retrain",
                   "monitor")

log = logging.getLogger("zeal_core")


def stderr_progress(event: ProgressEvent) -> None:
    """Log a progress event as one line on stderr (stdout stays clean for ``--json``)."""
    fraction = event.fraction
    share = f" {fraction:6.1%}" if fraction is not None else ""
    print(f"[{event.stage}]{share} {event.message}".rstrip(), file=sys.stderr, flush=True)


def json_parent() -> argparse.ArgumentParser:
    """The options every command shares (``--json``), as an argparse parent parser."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one subparser per command module that is present."""
    parent = json_parent()
    parser = argparse.ArgumentParser(prog="python -m zeal_core", description="Zeal Drift Lab command line")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"zeal_core.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"zeal_core.commands.{name}":
                raise
            continue
        module.register(subparsers, parent)
    return parser


def _print_human(result: dict[str, Any]) -> None:
    for key, value in result.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        print(f"{key}: {value}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code (0 ok, 1 a check found drift or problems, 2 user error,
    130 interrupted)."""
    return run(build_parser(), argv)


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` with ``parser`` and run the chosen handler under the exit-code contract of ``main``."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except ZealError as error:
        if args.json:
            print(json.dumps({"ok": False, "error": str(error)}))
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, default=str))
    else:
        _print_human(result)
    if isinstance(result.get("exit_code"), int):  # a command with its own codes (check: 1 means drift)
        return int(result["exit_code"])
    return 1 if result.get("ok") is False else 0  # a check that ran and found problems (e.g. bench load)
