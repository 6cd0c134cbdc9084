"""Plain-text building blocks for the command line: safe strings, widths, wrapped sentences and tables.

Everything a user supplied (file names, sources, version ids read from disk) goes through ``safe`` before it
reaches a terminal: control characters (ANSI escapes, carriage returns, bidi overrides, line separators)
are shown escaped (``\\x1b``), never obeyed, and bytes that were not valid UTF-8 in a file name are shown as
``\\xNN`` instead of crashing ``print``. Widths count terminal columns (East Asian wide characters take two),
and no line is ever wider than ``MAX_WIDTH``.
"""

from __future__ import annotations

import math
import os
import shutil
import textwrap
import unicodedata
from collections.abc import Sequence
from typing import Any

MAX_WIDTH = 160  # columns: the widest line the command line prints, whatever the terminal
MIN_WIDTH = 60  # columns: below this, a narrow terminal gets lines wrapped at this width anyway
_ESCAPED_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}  # controls, formats, separators, oddities
_ELLIPSIS = "…"


def output_width() -> int:
    """Columns to lay text out in: the terminal's width on a terminal (at least ``MIN_WIDTH``), else the
    maximum; never more than ``MAX_WIDTH``. ``COLUMNS`` in the environment wins, as for other tools."""
    columns = shutil.get_terminal_size((MAX_WIDTH, 24)).columns if "COLUMNS" not in os.environ else \
        _int_or(os.environ["COLUMNS"], MAX_WIDTH)
    return max(MIN_WIDTH, min(MAX_WIDTH, columns))


def _int_or(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def _escape_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by os.fsdecode's surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def safe(value: Any) -> str:
    """``value`` as one printable line: every control or format character shown escaped, never obeyed.

    Examples: ``"evil\\x1b[31m.png"`` -> ``"evil\\\\x1b[31m.png"``, ``"a\\nb"`` -> ``"a\\\\x0ab"``.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(_escape_char(char) if unicodedata.category(char) in _ESCAPED_CATEGORIES else char
                   for char in text)


def width(text: str) -> int:
    """Terminal columns ``text`` takes (wide East Asian characters count two, combining marks none)."""
    total = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        total += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return total


def clip(text: str, columns: int) -> str:
    """``text`` cut to at most ``columns`` columns, ending in an ellipsis when something was cut."""
    if width(text) <= columns:
        return text
    kept, used = [], 0
    for char in text:
        step = 0 if unicodedata.combining(char) else (2 if unicodedata.east_asian_width(char) in "WF" else 1)
        if used + step > columns - 1:
            break
        kept.append(char)
        used += step
    return "".join(kept) + _ELLIPSIS


def clip_middle(text: str, columns: int) -> str:
    """``text`` cut in the middle to at most ``columns`` columns (keeps a path's start and its file name)."""
    if width(text) <= columns or columns < 5:
        return clip(text, columns)
    tail = 2 * columns // 3  # the end of a path (the file name) tells more than its start
    head = columns - tail - 1
    end = text
    while width(end) > tail:
        end = end[1:]
    return clip(text, head + 1)[:-1] + _ELLIPSIS + end


def pad(text: str, columns: int, align: str = "<") -> str:
    """``text`` padded with spaces to ``columns`` columns (``align`` ``<`` left, ``>`` right)."""
    gap = " " * max(0, columns - width(text))
    return gap + text if align == ">" else text + gap


def wrap(text: str, columns: int, indent: str = "", first: str | None = None) -> list[str]:
    """A paragraph wrapped to ``columns``: the first line starts with ``first`` (default ``indent``), the
    others with ``indent``; a word longer than a line is broken."""
    first = indent if first is None else first
    lines = textwrap.wrap(text, width=columns, initial_indent=first, subsequent_indent=indent,
                          break_on_hyphens=False) or [first.rstrip()]
    return [clip(line, columns) for line in lines]


def number(value: Any, digits: int = 4) -> str:
    """A number for people: ints as they are, floats with ``digits`` significant digits, ``-`` for none."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}g}"
    return safe(value)


def percent(value: Any, decimals: int = 1) -> str:
    """A share in [0, 1] as a percentage (``0.286`` -> ``28.6%``), ``-`` for none."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return "-"
    return f"{value:.{decimals}%}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], columns: int, *, indent: str = "  ",
          align: str | None = None, stretch: int | None = None) -> list[str]:
    """Rows under a header, columns padded to their widest cell, every line clipped to ``columns``.

    Args:
        header: Column titles.
        rows: Cells (any value; ``safe``-d, numbers through ``number``).
        columns: The widest a line may be.
        indent: Put before every line.
        align: One character per column, ``<`` or ``>`` (default: all left).
        stretch: The column that gives up room when the table is too wide (cut in the middle, e.g. file
            names); default the widest.
    """
    cells = [[_cell(value) for value in row] for row in rows]
    titles = [safe(title) for title in header]
    widths = [max([width(title)] + [width(row[index]) for row in cells])
              for index, title in enumerate(titles)]
    align = align or "<" * len(titles)
    stretch = widths.index(max(widths)) if stretch is None else stretch
    room = columns - width(indent) - 2 * (len(titles) - 1) - sum(widths) + widths[stretch]
    widths[stretch] = max(8, min(widths[stretch], room))
    lines = []
    for row in [titles, *cells]:
        parts = []
        for index, cell in enumerate(row):
            if index == stretch:
                cell = clip_middle(cell, widths[index])
            last = index == len(row) - 1
            parts.append(cell if last and align[index] == "<" else pad(cell, widths[index], align[index]))
        lines.append(clip((indent + "  ".join(parts)).rstrip(), columns))
    return lines


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return safe(value)
    return number(value)
