"""The text layout of any command without a report of its own: the result dict as a readable outline.

Scalars become ``name: value`` lines (shares of accuracy as percentages, seconds with a unit); a mapping
becomes an indented section; a list of records becomes a table of their plain fields; a list of lists of
numbers (a confusion matrix) becomes aligned rows. Without ``--verbose`` long lists are cut to their first
rows and deep sections to a count, each with a pointer to ``--verbose`` / ``--json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from zeal_core.textreport import TextOptions
from zeal_core.textreport.layout import clip, number, percent, safe, table, wrap

SKIPPED_KEYS = {"exit_code"}  # the process's exit code says it already
PRE_RENDERED_KEYS = {"table", "markdown"}  # multi-line text a handler laid out itself (its lines are kept)
ROWS_SHOWN = 10  # list rows shown without --verbose
ITEMS_SHOWN = 20  # scalar list items shown without --verbose
DEPTH_SHOWN = 2  # nested sections shown without --verbose; deeper ones become a count


def label(key: Any) -> str:
    """A dict key as a label: ``val_accuracy`` -> ``val accuracy``."""
    return safe(str(key).replace("_", " "))


def scalar_text(key: Any, value: Any, parent: Any = "") -> str:
    """A plain value for people: accuracies as percentages, seconds with ``s``, the rest via ``number``.

    Args:
        key: The value's key (its name says what it is: ``val_accuracy``, ``train_seconds``).
        value: The value.
        parent: The key of the mapping holding it (``per_class_accuracy`` makes its entries accuracies).
    """
    name = f"{parent}_{key}" if "accuracy" in str(parent) else str(key)
    if isinstance(value, float) and not isinstance(value, bool):
        if ("accuracy" in name or name.endswith("_share")) and 0.0 <= value <= 1.0:
            return percent(value)
        if name == "seconds" or name.endswith("_seconds") or name.endswith("_s"):
            return f"{value:.3g} s" if value < 100 else f"{value:,.0f} s"
    return number(value)


def is_scalar(value: Any) -> bool:
    """True for values that fit on one line: None, bools, numbers and strings."""
    return value is None or isinstance(value, (bool, int, float, str))


def render_mapping(values: Mapping[str, Any], options: TextOptions, indent: str = "", depth: int = 0,
                   parent: Any = "") -> list[str]:
    """Lines for a result dict (or one of its sections, ``parent`` being the section's key)."""
    lines: list[str] = []
    for key, value in values.items():
        if key in SKIPPED_KEYS or (key == "ok" and value is True):
            continue
        lines.extend(render_entry(key, value, options, indent, depth, parent))
    return lines


def render_entry(key: Any, value: Any, options: TextOptions, indent: str, depth: int,
                 parent: Any = "") -> list[str]:
    """Lines for one ``key: value`` entry of any shape."""
    name = label(key)
    if key in PRE_RENDERED_KEYS and isinstance(value, str):
        return [line.rstrip() for line in (f"{indent}{name}:", *(
            _fit(indent + safe(row), options) for row in value.strip("\n").splitlines()))]
    if is_scalar(value):
        return wrap(scalar_text(key, value, parent), options.columns, indent=indent + "    ",
                    first=f"{indent}{name}: ")
    if isinstance(value, Mapping):
        return _render_section(key, value, options, indent, depth)
    if isinstance(value, Sequence):
        return _render_list(name, list(value), options, indent)
    return wrap(safe(value), options.columns, indent=indent + "    ", first=f"{indent}{name}: ")


def _fit(line: str, options: TextOptions) -> str:
    return clip(line, options.columns)


def _render_section(key: Any, value: Mapping[str, Any], options: TextOptions, indent: str,
                    depth: int) -> list[str]:
    name = label(key)
    if not value:
        return [f"{indent}{name}: -"]
    if all(is_scalar(item) for item in value.values()):
        inline = ", ".join(f"{label(inner)} {scalar_text(inner, item, key)}" for inner, item in value.items())
        if len(indent) + len(name) + 2 + len(inline) <= options.columns:
            return [f"{indent}{name}: {inline}"]
    if depth + 1 >= DEPTH_SHOWN and not options.verbose:
        return [f"{indent}{name}: {len(value)} entries (--verbose or --json to see them)"]
    return [f"{indent}{name}:", *render_mapping(value, options, indent + "  ", depth + 1, key)]


def _render_list(name: str, items: list[Any], options: TextOptions, indent: str) -> list[str]:
    if not items:
        return [f"{indent}{name}: -"]
    if all(is_scalar(item) for item in items):
        shown = items if options.verbose else items[:ITEMS_SHOWN]
        text = ", ".join(number(item) for item in shown) + _more(len(items) - len(shown))
        return wrap(text, options.columns, indent=indent + "    ", first=f"{indent}{name}: ")
    if all(isinstance(item, Sequence) and not isinstance(item, str) and all(map(is_scalar, item))
           for item in items):
        return [f"{indent}{name}:", *table([""] * max(map(len, items)), items, options.columns,
                                            indent=indent + "  ", align=">" * max(map(len, items)))[1:]]
    if all(isinstance(item, Mapping) for item in items):
        return [f"{indent}{name}: {len(items)}", *records_table(items, options, indent + "  ")]
    return wrap(", ".join(safe(item) for item in items), options.columns, indent=indent + "    ",
                first=f"{indent}{name}: ")


def records_table(items: list[Mapping[str, Any]], options: TextOptions, indent: str = "  ") -> list[str]:
    """A list of records as a table of their plain (one-line) fields, cut to ``ROWS_SHOWN`` rows."""
    keys: list[str] = []
    for item in items:
        keys.extend(key for key, value in item.items() if is_scalar(value) and key not in keys)
    shown = items if options.verbose else items[:ROWS_SHOWN]
    rows = [[_cell(key, item.get(key)) for key in keys] for item in shown]
    lines = table([label(key) for key in keys], rows, options.columns, indent=indent)
    if len(shown) < len(items):
        lines.append(f"{indent}{_more(len(items) - len(shown)).strip()}")
    return lines


def _cell(key: str, value: Any) -> str:
    return safe(value) if isinstance(value, str) else scalar_text(key, value)


def _more(hidden: int) -> str:
    return f" ... and {hidden} more (--verbose or --json for all)" if hidden > 0 else ""
