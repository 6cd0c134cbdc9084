"""``bench estimate``: how close label-free accuracy estimates come to the truth on shifts no fit saw.

Per dataset (digits and Imagenette; a dataset whose data or model is missing is skipped with a message):

- Reference and bank: ``--reference-n`` clean images of the validation split's reference half and the same
  images under every ImageNet-C corruption x severity (``benchmarks._labelfree_views``).
- Scored on the disjoint sample pool, under four groups of shifts: the bank's kinds, each scored by fits
  *without its whole family* (leave one family out, ``benchmarks._estimate_score``); registered kinds never
  in a bank (geometry, capture); shifts made by an independent PIL/numpy implementation
  (``benchmarks._external_shifts``: photo filter, screenshot, rain, sensor noise, capture pipeline,
  overlay, lens blur); two-corruption compounds. The whole pool per shift, then ``--trials`` random draws
  at each of ``--sizes`` (the same draws for every estimator): error against the draw's own accuracy,
  whether the 90 % interval holds it (and the stream's accuracy), how often the estimate is flagged as an
  extrapolation.
- Also: clean re-splits, a label-shift check, the pm-atc ablation, speed.

Targets (issue 25), for the estimate a warm check shows (shift-calibrated) on the held-out groups at
n = 200: coverage >= 85 %, MAE <= 4 points, no kind over 8.

Embeddings are cached (``benchmarks._embedding_cache``, under ``--cache``); ``--out PATH`` writes the
JSON result to ``PATH``, the tables to ``PATH`` with ``.md`` and one scatter plot per dataset beside them
(``<stem>_<dataset>.png``), e.g. ``--datasets digits --out reports/bench/estimate_digits.json``.

Run: ``python -m benchmarks estimate --json`` (or ``python -m benchmarks.estimate``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks import script_main
from benchmarks._estimate_report import markdown, scatter, targets
from benchmarks._estimate_score import (
    SHOWN,
    ablation,
    clean_resplits,
    fitted_diagnosers,
    fitted_estimators,
    label_shift,
    score_draws,
    score_full,
    speed,
    summarise,
)
from benchmarks._harness import beside, listed, machine
from benchmarks._labelfree_views import add_view_arguments, views_for
from zeal_core.progress import ProgressCallback

SIZES = (50, 100, 200)

__all__ = ["bench_dataset", "bench_estimate", "fitted_estimators", "label_shift", "markdown", "score_draws",
           "score_full", "speed", "summarise"]


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``bench estimate``."""
    bench = actions.add_parser("estimate", parents=[parent], help="label-free accuracy estimators: error and "
                               "interval coverage on shifts no fit saw", description=__doc__.split("\n\n")[0])
    add_arguments(bench)
    bench.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by the ``bench`` action and ``python -m``)."""
    add_view_arguments(parser)
    parser.add_argument("--estimators", type=listed(str), default=None,
                        help="comma-separated (default all)")
    parser.add_argument("--sizes", type=listed(int), default=SIZES, help="draw sizes (default 50,100,200)")
    parser.add_argument("--trials", type=int, default=10, help="draws per shift and size (default 10)")
    parser.add_argument("--no-diagnosis", action="store_true",
                        help="skip the diagnosis (then no 'shown by a check' row: its unknown verdicts flag "
                        "extrapolations)")
    parser.add_argument("--no-extras", action="store_true",
                        help="skip clean re-splits, the pm-atc ablation and the speed runs")


def bench_dataset(dataset_name: str, args: argparse.Namespace, progress: ProgressCallback | None = None
                  ) -> dict[str, Any]:
    """The whole benchmark for one dataset (``{"skipped": reason}`` when its data or model is missing)."""
    from zeal_core.estimate import list_estimators

    views = views_for(dataset_name, args, progress)
    if isinstance(views, str):
        print(f"bench estimate: skipping {dataset_name}: {views}", file=sys.stderr)
        return {"skipped": views}
    names = list(args.estimators or list_estimators())
    start = time.perf_counter()
    fitted = fitted_estimators(views, names, args.seed)
    diagnosers = None if args.no_diagnosis else fitted_diagnosers(views, args.seed)
    rows = score_full(views, fitted, diagnosers)
    draws = score_draws(views, fitted, [n for n in args.sizes if n <= len(views.pool)], args.trials,
                        args.seed, progress, diagnosers)
    first = next(iter(fitted[names[0]].values()))
    result = {"info": views.info, "machine": machine(), "level": first.level, "rows": rows,
              "summary": summarise(rows, names + ([SHOWN] if diagnosers else [])), "draws": draws,
              "trials": args.trials,
              "label_shift": label_shift(views, fitted),
              "calibration": {key: first.fit_details[key]
                              for key in ("temperature", "ece_before", "ece_after")},
              "speed": {} if args.no_extras else speed(views, names, args.seed),
              "clean_resplits": None if args.no_extras else clean_resplits(views, names, args.seed),
              "ablation": ablation(views, args.seed) if "pm-atc" in names and not args.no_extras else None,
              "score_seconds": round(time.perf_counter() - start, 1)}
    result["targets"] = targets(result)
    result["targets_estimator"] = targets(result, "shift-calibrated") if result["targets"].get(
        "estimator") != "shift-calibrated" else None
    result["machine_after"] = machine()
    result["table"] = markdown(result)
    if getattr(args, "out", None):
        result["figure"] = str(scatter(result, beside(args.out, f"_{dataset_name}.png")))
    return result


def bench_estimate(args: argparse.Namespace, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Run the benchmark described in the module docstring; returns a JSON-ready dict."""
    from zeal_core.jsonable import to_jsonable

    start = time.perf_counter()
    output = {name: bench_dataset(name, args, progress) for name in args.datasets}
    seconds = round(time.perf_counter() - start, 1)
    tables = "\n\n".join(f"## {name}\n\n{value['table']}" for name, value in output.items()
                         if "table" in value)
    return to_jsonable({"datasets": output, "seconds": seconds, "markdown": tables}, nan_to_none=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Handler of ``python -m benchmarks estimate``."""
    from zeal_core.cli import stderr_progress

    return bench_estimate(args, progress=stderr_progress)


def _show(result: dict[str, Any]) -> None:
    for name, value in result["datasets"].items():
        print(value.get("table", f"{name}: skipped: {value.get('skipped')}"), file=sys.stderr)
    print(json.dumps(result, default=str, indent=1))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.estimate [options]``: prints the Markdown tables, then the JSON."""
    return script_main(__doc__, add_arguments, run, _show, argv, prog="python -m benchmarks.estimate")


if __name__ == "__main__":
    sys.exit(main())
