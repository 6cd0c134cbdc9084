"""The command line's text output: each command's JSON-ready result read as a short report.

``--json`` prints a handler's result as it is; without it, ``format_result`` turns the same dict into lines
for people. A command with a report of its own registers a formatter by name, one module per report
(``check.py``: the check and drift reports; ``history.py``: the history list, one check, the policy);
every other command gets the generic layout (``generic.py``): scalars as ``name: value``, small mappings
as sections, lists of records as tables, long lists cut with a pointer to ``--verbose`` and ``--json``.
No JSON is ever printed, every line fits in ``MAX_WIDTH`` columns, and everything read from outside goes
through ``layout.safe``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeal_core.plugins import Registry
from zeal_core.textreport.layout import MAX_WIDTH, output_width, width, wrap


@dataclass(frozen=True)
class TextOptions:
    """How much to show and how wide."""

    verbose: bool = False  # every estimator, cause, file and timing instead of the top few
    columns: int = MAX_WIDTH  # the widest a line may be (terminal columns)


Formatter = Callable[[dict[str, Any], TextOptions], list[str]]
FORMATTERS: Registry[Formatter] = Registry("text report")


def register_formatter(*names: str) -> Callable[[Formatter], Formatter]:
    """Register a formatter for commands named ``"check"`` or ``"history show"`` (command, then action)."""
    def decorate(formatter: Formatter) -> Formatter:
        for name in names:
            FORMATTERS.add(name, formatter)
        return formatter

    return decorate


def format_result(command: str, result: dict[str, Any], *, action: str | None = None, verbose: bool = False,
                  columns: int | None = None) -> str:
    """A command's result as text for people (what the command line prints without ``--json``).

    Args:
        command: The command's name (``check``, ``history``, ...).
        result: The handler's JSON-ready dict (the ``--json`` object).
        action: The command's action (``list``, ``show``, ...), when it has actions.
        verbose: Show everything rather than the top few of each list.
        columns: Line width; default the terminal's, at most ``MAX_WIDTH``.
    """
    from zeal_core.textreport import check as _check  # noqa: F401 - registers the check and drift reports
    from zeal_core.textreport import history as _history  # noqa: F401 - registers the history reports
    from zeal_core.textreport.generic import render_mapping

    options = TextOptions(verbose=verbose, columns=min(columns or output_width(), MAX_WIDTH))
    formatter = render_mapping
    for name in (f"{command} {action}" if action else None, command):
        if name and name in FORMATTERS:
            formatter = FORMATTERS.get(name)
            break
    try:
        lines = formatter(result, options)
    except Exception as error:  # a result of an unexpected shape: the answer still shows, in the outline
        logging.getLogger(__name__).warning("text report failed (%s: %s); the plain outline follows",
                                            type(error).__name__, error)
        lines = render_mapping(result, options)
    return "\n".join(fitted(lines, options.columns))


def fitted(lines: list[str], columns: int) -> list[str]:
    """``lines`` with any line wider than ``columns`` wrapped (keeping its indent): the width guarantee."""
    out = []
    for line in lines:
        if width(line) <= columns:
            out.append(line)
            continue
        indent = line[:len(line) - len(line.lstrip(" "))]
        out.extend(wrap(line.strip(), columns, indent=indent + "  ", first=indent))
    return out
