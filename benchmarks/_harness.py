"""What every benchmark shares: one options shape, one machine record, one ``--out``, one table writer.

- ``options_parent()``: the options every action has, ``--json`` (print one JSON object), ``--out PATH``
  (write the JSON result to ``PATH``, and the result's ``markdown`` to ``PATH`` with ``.md`` beside it)
  and ``--cache DIR`` (the folder of on-disk caches: ``benchmarks._embedding_cache``, adapt's streams).
- ``machine()`` is the one shape of the machine a number was measured on: cores, architecture, accelerator,
  torch threads, load average (a shared machine is stated as such) and a one-line description for tables.
- ``finished(handler)`` wraps every action's handler, both under ``python -m benchmarks ACTION`` and
  ``python -m benchmarks.NAME``: the result gets ``machine`` (unless it has its own) and is written to
  ``--out``. A benchmark's other files (figures) go ``beside(out, suffix)``.
- ``Table``: Markdown and CSV from columns and rows, with a caption that states machine, sample sizes,
  trials and standard errors (``caption``).
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUSY_SHARE = 0.75  # a 1-minute load average above this share of the cores is stated as "under load"
OUT_HELP = ("write the JSON result to PATH (and its tables to PATH with .md, figures beside it with the same "
            "stem)")


def machine() -> dict[str, Any]:
    """CPU, threads, accelerator and load now: what every table states."""
    import torch

    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else [float("nan")] * 3
    cores = os.cpu_count() or 1
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    busy = load[0] > BUSY_SHARE * cores
    description = (f"{cores} CPU cores {platform.machine()}, {'GPU ' + gpu if gpu else 'no GPU'}, torch "
                   f"{torch.get_num_threads()} threads" + (f", under load (load average {load[0]:.1f})"
                                                           if busy else ""))
    return {"cpu_count": cores, "arch": platform.machine(), "platform": platform.platform(), "gpu": gpu,
            "torch_threads": torch.get_num_threads(), "load_average": load, "under_load": busy,
            "description": description}


def options_parent() -> argparse.ArgumentParser:
    """The options every benchmark shares (``--json``, ``-v``, ``-q`` of every command, plus ``--out``)."""
    from zeal_core.cli import json_parent

    parent = json_parent()
    add_out(parent)
    return parent


def add_out(parser: argparse.ArgumentParser) -> None:
    """Add the one output option, ``--out PATH``, and the one cache folder, ``--cache DIR``."""
    parser.add_argument("--out", type=Path, default=None, metavar="PATH", help=OUT_HELP)
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR",
                        help="folder of the benchmarks' on-disk caches (embeddings, adapt streams; default: "
                        "the state folder, ZEAL_STATE_DIR)")


def json_path(out: Path | str) -> Path:
    """The JSON file ``--out`` names (``.json`` added when ``PATH`` has another or no suffix)."""
    out = Path(out)
    return out if out.suffix == ".json" else out.with_name(out.name + ".json")


def beside(out: Path | str, suffix: str) -> Path:
    """A file next to ``--out`` with the same stem: ``beside("r/x.json", "_confusion.png")`` is
    ``r/x_confusion.png``."""
    path = json_path(out)
    return path.with_name(path.stem + suffix)


def write_out(out: Path | str, result: dict[str, Any]) -> Path:
    """Write ``result`` as JSON to ``--out`` and its ``markdown`` (when it has one) beside it; returns the
    JSON path."""
    from zeal_core.fileio import atomic_write_text
    from zeal_core.jsonable import to_jsonable

    path = json_path(out)
    atomic_write_text(path, json.dumps(to_jsonable(result, nan_to_none=True), indent=1, default=str) + "\n")
    if isinstance(result.get("markdown"), str):
        atomic_write_text(beside(path, ".md"), result["markdown"].rstrip("\n") + "\n")
    return path


def finished(handler: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    """``handler`` whose result also holds ``machine`` (taken when it ends) unless it has its own, and is
    written to ``args.out`` when that is set."""

    @functools.wraps(handler)
    def run(args: Any) -> dict[str, Any]:
        result = handler(args)
        if isinstance(result, dict):
            result.setdefault("machine", machine())
            if getattr(args, "out", None):
                write_out(args.out, result)
        return result

    return run



def median_seconds(call: Callable[[], Any], repeats: int) -> float:
    """Median wall seconds of ``call()`` over ``repeats`` runs, after one warm-up run."""
    import time

    import numpy as np

    call()  # warm-up: caches, lazy imports, allocator
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        runs.append(time.perf_counter() - start)
    return float(np.median(runs))


def caption(what: str, *, machine_record: dict[str, Any] | None = None, n: Any = None, trials: Any = None,
            standard_error: str | None = None) -> str:
    """One caption line: what the table shows, then sample sizes, trials, standard errors and machine.

    Args:
        what: What the table measures.
        machine_record: ``machine()`` or a stored one (its ``description``), or None to leave it out.
        n: Sample size(s) (a number, a list, or text).
        trials: Trials per cell (a number) or text that says what they are.
        standard_error: How the ± (or the spread) is computed, e.g. "± binomial SE".
    """
    parts = [what]
    if n is not None:
        parts.append("n = " + (", ".join(str(v) for v in n) if isinstance(n, list | tuple) else str(n)))
    if trials is not None:
        parts.append(trials if isinstance(trials, str) else f"{trials} trials")
    if standard_error:
        parts.append(standard_error)
    if machine_record:
        described = machine_record.get("description") if isinstance(machine_record, dict) else machine_record
        parts.append(f"machine: {described}")
    return "; ".join(parts) + ":"


@dataclass(frozen=True)
class Table:
    """A table built once and written as Markdown or CSV."""

    columns: Sequence[str]  # header cells
    rows: Sequence[Sequence[Any]]  # cells, already formatted where the unit or precision matters
    caption: str = ""  # one line above the Markdown table (see ``caption``); not in the CSV
    align: str = ""  # per column "l" or "r" (default: Markdown's plain rule)

    def markdown(self) -> str:
        """The caption, a blank line, then the Markdown table."""
        rule = ("|" + "|".join("---:" if side == "r" else "---" for side in self.align) + "|" if self.align
                else "|---" * len(self.columns) + "|")
        lines = ([self.caption, ""] if self.caption else []) + [_markdown_row(self.columns), rule]
        return "\n".join(lines + [_markdown_row(row) for row in self.rows])

    def csv(self) -> str:
        """The header and rows as CSV text."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return buffer.getvalue()


def _markdown_row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


def tables(*blocks: Table | str) -> str:
    """Tables and prose lines, separated by blank lines."""
    return "\n\n".join(block.markdown() if isinstance(block, Table) else block for block in blocks if block)


def listed(kind: type = str) -> Callable[[str], tuple]:
    """An argparse ``type`` for a comma-separated list: ``--sizes 50,100`` -> ``(50, 100)``."""

    def parse(text: str) -> tuple:
        return tuple(kind(part.strip()) for part in text.split(",") if part.strip())

    return parse
