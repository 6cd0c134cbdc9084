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
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from zeal_core.errors import ZealError
from zeal_core.progress import ProgressEvent

# Subcommand modules under zeal_core/commands, in help order.
COMMAND_MODULES = ("data", "train", "evaluate", "models", "drift", "check", "history", "retrain", "monitor")

log = logging.getLogger("zeal_core")
DEBUG_VARIABLE = "ZEAL_DEBUG"  # environment variable: 1 prints the traceback of an unexpected error


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


def _fail(args: argparse.Namespace, message: str) -> int:
    """Report an error on one line (and as ``{"ok": false}`` under ``--json``); returns exit code 2."""
    message = " ".join(message.split())  # one line, whatever the exception text held
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": message}))
    print(f"error: {message}", file=sys.stderr)
    return 2


def unexpected_error_text(error: BaseException) -> str:
    """One line for an exception that is not the lab's own: its type and first line, and where to look."""
    first = (str(error).strip().splitlines() or [""])[0][:300]
    return (f"unexpected {type(error).__name__}: {first} (a bug or a fault of the machine, not a result; "
            f"set {DEBUG_VARIABLE}=1 for the traceback)")


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` with ``parser`` and run the chosen handler under the exit-code contract of ``main``.

    The contract holds whatever happens: 1 is only ever a result (``check``: drift), so an exception that
    is not a ``ZealError`` (a bug, a broken disk, a damaged file nobody foresaw) also exits 2 with one line,
    never 1 with a traceback, which a ``check ... || alert`` script would take for drift.
    """
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except ZealError as error:
        return _fail(args, str(error))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the exit-code contract: never 1, never a traceback
        if os.environ.get(DEBUG_VARIABLE, "").strip() not in ("", "0"):
            traceback.print_exc(file=sys.stderr)
        return _fail(args, unexpected_error_text(error))
    try:
        if args.json:
            print(json.dumps(result, default=str))
        else:
            _print_human(result)
    except Exception as error:  # e.g. a name the terminal cannot encode: still one line and exit 2
        return _fail(args, unexpected_error_text(error))
    if isinstance(result.get("exit_code"), int):  # a command with its own codes (check: 1 means drift)
        return int(result["exit_code"])
    return 1 if result.get("ok") is False else 0  # a check that ran and found problems (e.g. bench load)
