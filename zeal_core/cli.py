"""The command line: ``zeal <command> ... [--json]`` or ``python -m zeal_core ...`` (``COMMAND_MODULES``).

Each subcommand lives in ``zeal_core/commands/<name>.py`` and exposes ``register(subparsers, parent)``; its
handler returns a JSON-ready dict. With ``--json`` exactly one JSON object goes to stdout and logs go to
stderr; without it the same dict is printed as a short report (``zeal_core.textreport``; ``--verbose`` for
more). Progress goes to stderr: one bar on a terminal, a few lines in a log, nothing with ``--quiet``
(``zeal_core.cli_progress``). On error the exit code is non-zero and stderr gets a one-line reason.

Building the parser imports no heavy module (torch, timm, scikit-learn, ...): a command module imports what
it needs inside its handler, so ``zeal check --help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path

from zeal_core import cli_progress
from zeal_core.cli_progress import stderr_progress
from zeal_core.errors import ZealError
from zeal_core.textreport.layout import safe

# Subcommand modules under zeal_core/commands, in help order.
COMMAND_MODULES = ("data", "train", "evaluate", "models", "drift", "check", "history", "settings", "retrain",
                   "monitor")

log = logging.getLogger("zeal_core")
DEBUG_VARIABLE = "ZEAL_DEBUG"  # environment variable: 1 prints the traceback of an unexpected error


__all__ = ["build_parser", "main", "run", "stderr_progress"]


def json_parent() -> argparse.ArgumentParser:
    """The options every command shares (``--json``, ``--verbose``, ``--quiet``), as a parent parser."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    parent.add_argument("-v", "--verbose", action="store_true",
                        help="text output: every estimator, cause, file and timing, not just the top few")
    parent.add_argument("-q", "--quiet", action="store_true",
                        help="no progress and no log messages on stderr (warnings and errors still show)")
    return parent


def program_name() -> str:
    """``zeal`` when run as the console script, else ``python -m zeal_core``."""
    return "zeal" if Path(sys.argv[0]).name == "zeal" else "python -m zeal_core"


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one subparser per command module that is present."""
    parent = json_parent()
    parser = argparse.ArgumentParser(prog=program_name(), description="Zeal Drift Lab command line: see, "
                                     "measure and fix data drift in image classifiers")
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


def _print_text(args: argparse.Namespace, result: dict) -> None:
    from zeal_core.textreport import format_result

    print(format_result(getattr(args, "command", None) or "", result, action=getattr(args, "action", None),
                        verbose=getattr(args, "verbose", False)))


@contextlib.contextmanager
def _progress_display(args: argparse.Namespace) -> Iterator[None]:
    """A fresh progress display while the handler runs (log messages go through it), cleared before the
    answer or an error is printed."""
    quiet = getattr(args, "quiet", False)
    display = cli_progress.start(quiet=quiet)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, cli_progress.ProgressLogHandler):
            handler.setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        yield
    finally:
        display.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code (0 ok, 1 a check found drift or problems, 2 user error,
    130 interrupted)."""
    return run(build_parser(), argv)


def _fail(args: argparse.Namespace, message: str) -> int:
    """Report an error on one line (and as ``{"ok": false}`` under ``--json``); returns exit code 2."""
    message = " ".join(message.split())  # one line, whatever the exception text held
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": message}))
    print(f"error: {safe(message)}", file=sys.stderr)  # a file name's escape codes are not obeyed
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
    logging.basicConfig(level=logging.INFO, format="%(message)s",
                        handlers=[cli_progress.ProgressLogHandler()])
    args = parser.parse_args(argv)
    try:
        with _progress_display(args):
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
            _print_text(args, result)
    except Exception as error:  # e.g. a name the terminal cannot encode: still one line and exit 2
        return _fail(args, unexpected_error_text(error))
    if isinstance(result.get("exit_code"), int):  # a command with its own codes (check: 1 means drift)
        return int(result["exit_code"])
    return 1 if result.get("ok") is False else 0  # a check that ran and found problems (e.g. bench load)
