"""Join ``python -m benchmarks adapt`` results run one setting per process into one result.

On a shared machine the settings of one benchmark can run as separate processes (``--settings continual``,
then ``mixed``, then ``episodic``, each with ``--out``), so a slow one does not lose the others' numbers.
The parts must share the model, streams and seeds (checked); a later part's setting replaces an earlier
one's (so a joined result can be a part, with one setting rerun); the join recomputes the issue's
targets over all settings and adds the batch-level paired differences of the new strategy against the
others: the same batches, served by both, so the difference's standard error is far smaller than either
mean's.

Usage: ``python -m benchmarks._adapt_join OUT.json PART.json [PART.json ...]``
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from benchmarks.adapt import LITERATURE, targets

SHARED = ("corruptions", "severity", "n", "batch_size", "seeds", "max_clean_drop", "gate")


def paired(per_seed: dict[str, Any], setting: str, new: str, old: str) -> dict[str, Any] | None:
    """Mean and standard error of ``new`` − ``old`` accuracy over the batches of ``setting`` (all seeds)."""
    diffs = [a - b for runs in per_seed.values() if new in runs.get(setting, {}) and old in runs[setting]
             for a, b in zip(runs[setting][new]["batch_accuracy"], runs[setting][old]["batch_accuracy"],
                             strict=True)]
    if len(diffs) < 2:
        return None
    mean = sum(diffs) / len(diffs)
    variance = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return {"mean": mean, "se": math.sqrt(variance / len(diffs)), "batches": len(diffs)}


def _per_setting(values: dict[str, Any], key: str, setting: str) -> Any:
    """``values[key]`` for ``setting``: a part that is itself joined has one per setting."""
    value = values[key]
    return value[setting] if isinstance(value, dict) else value


def join(parts: list[dict[str, Any]], new: str = "roid") -> dict[str, Any]:
    """One result from per-setting results of the same model, streams and seeds."""
    first = parts[0]
    for part in parts[1:]:
        if part["model"] != first["model"] or any(part["protocol"][key] != first["protocol"][key]
                                                   for key in SHARED):
            raise ValueError("parts differ in model or protocol: they cannot be joined")
    table = {setting: rows for part in parts for setting, rows in part["table"].items()}
    per_seed: dict[str, Any] = {}
    for part in parts:
        for seed, settings in part["per_seed"].items():
            per_seed.setdefault(seed, {}).update(settings)
    comparisons = {f"{setting}: {new} - {old}": paired(per_seed, setting, new, old)
                   for setting in ("continual", "mixed") for old in table.get(setting, {}) if old != new}
    return {
        "machine": {**first["machine"],
                    "load_average": {setting: _per_setting(part["machine"], "load_average", setting)
                                     for part in parts for setting in part["table"]}},
        "model": first["model"],
        "protocol": {**first["protocol"], "settings": list(table),
                     "strategies": {setting: list(rows) for setting, rows in table.items()},
                     "min_gain_z": next((part["protocol"].get("min_gain_z") for part in reversed(parts)
                                         if "episodic" in part["table"]), None),  # the episodic guard's
                     "joined": "one process per setting (same model, streams, seeds), joined"},
        "table": table,
        "targets": targets(table, new=new, margin=first["protocol"]["max_clean_drop"]),
        "paired_batches": {name: value for name, value in comparisons.items() if value},
        "literature_error_percent": LITERATURE,
        "seconds": {setting: _per_setting(part, "seconds", setting)
                    for part in parts for setting in part["table"]},
        "per_seed": per_seed,
    }


def main(argv: list[str]) -> int:
    """Write the joined result to ``argv[0]`` and print its table, targets and paired differences."""
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    result = join([json.loads(Path(path).read_text()) for path in argv[1:]])
    Path(argv[0]).write_text(json.dumps(result, indent=1, default=str))
    for setting, rows in result["table"].items():
        for name, row in rows.items():
            extras = " ".join(f"{key}={row[key]:.3g}" for key in (
                "clean_after", "resets", "gated", "guard_refused", "guard_declined",
                "longest_run_below_source", "batches_below_source", "unguarded_mean",
                "clean_after_passed_min", "seconds")
                if row.get(key) is not None)
            print(f"{setting:9s} {name:10s} {100 * row['mean']:5.1f} ± {100 * row['se_images']:.1f} {extras}")
    print(json.dumps({"targets": result["targets"], "paired_batches": result["paired_batches"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
