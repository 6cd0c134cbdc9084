"""``bench diagnose``: does the diagnosis name known drifts, and say "unknown" to drifts it never saw?

For each dataset (digits, Imagenette; a dataset without a registered model or prepared data is skipped
with a message) the diagnoser is fitted on ``--reference-n`` images of the validation split's *reference*
half and their shift bank (every ImageNet-C corruption x severity), and scored on random subsets of a
disjoint pool of the *sample* half (``benchmarks._labelfree_views``; trials of one cell share pool images,
so at n close to the pool size the standard errors are too small).

- Held-out shifts (the issue-25 targets): every bank family left out in turn (the diagnoser refitted
  without it; only "unknown shift" is right), registered kinds never in a bank (geometry, capture), shifts
  of an independent PIL/numpy implementation (``benchmarks._external_shifts``) and compounds (right:
  "unknown shift" or a family the shift belongs to). Diagnosed as after a detector fired
  (``drift_detected=True``) and by the own gate; shifts that collapse predictions onto a few classes must
  never be called "label shift".
- Known kinds: top-1 / top-3 corruption, family, severity MAE, own-gate detection, "unknown" share; clean
  subsets ("no drift"); label shift with Dirichlet(``--dirichlet``) class priors (BBSE L1, verdicts, how
  often the assumption check rejects a real label shift); partial drifts; speed.

``--out PATH`` writes the JSON result to ``PATH``, the tables to ``PATH`` with ``.md`` and one confusion
matrix per dataset beside them (``<stem>_<dataset>_confusion.png``), e.g. ``--datasets digits --out
reports/bench/diagnose_digits.json``; embeddings are cached (``benchmarks._embedding_cache``, under
``--cache``).

Run: ``python -m benchmarks diagnose --json`` (or ``python -m benchmarks.diagnose``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks import script_main
from benchmarks._diagnose_report import confusion_figure, markdown, targets
from benchmarks._diagnose_score import (
    TARGET_SIZE,
    draw_label_shifted,
    score_clean,
    score_collapse_known,
    score_corruptions,
    score_fractions,
    score_held_out_families,
    score_label_shift,
    score_unseen,
    speed,
)
from benchmarks._harness import beside, listed, machine
from benchmarks._labelfree_views import add_view_arguments, views_for
from zeal_core.progress import ProgressCallback, report

SIZES = (50, 100, 200, 500)
LABEL_SIZES = (100, 200, 500)
HELD_OUT_SIZES = (100, 200)
SPEED_SIZES = (100, 500, 1000)
FRACTIONS = (0.3, 0.6)  # partial drifts scored at n = 100
FRACTION_SEVERITIES = (3.0, 5.0)

__all__ = ["bench_dataset", "bench_diagnose", "confusion_figure", "draw_label_shifted", "markdown",
           "score_clean", "score_corruptions", "score_label_shift", "targets"]


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``bench diagnose``."""
    bench = actions.add_parser("diagnose", parents=[parent], help="drift diagnosis: held-out families "
                               "'unknown', collapse never 'label shift', known kinds named, clean 'no drift'",
                               description=__doc__.split("\n\n")[0])
    add_arguments(bench)
    bench.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by the ``bench`` action and ``python -m``)."""
    add_view_arguments(parser)
    parser.add_argument("--sizes", type=listed(int), default=SIZES,
                        help="known-kind sample sizes (those above the pool are skipped)")
    parser.add_argument("--trials", type=int, default=10, help="subsets per kind x severity x size")
    parser.add_argument("--clean-trials", type=int, default=200, help="clean subsets per size")
    parser.add_argument("--label-trials", type=int, default=100, help="label-shifted subsets per size")
    parser.add_argument("--label-sizes", type=listed(int), default=LABEL_SIZES)
    parser.add_argument("--label-pool-n", type=int, default=1000,
                        help="clean sample-half images label-shift subsets are drawn from (one pass)")
    parser.add_argument("--dirichlet", type=float, default=1.0, help="concentration of the random priors")
    parser.add_argument("--held-out-sizes", type=listed(int), default=HELD_OUT_SIZES)
    parser.add_argument("--held-out-trials", type=int, default=5, help="subsets per held-out shift and size")
    parser.add_argument("--no-family-refits", action="store_true",
                        help="skip refitting without each family (the slow part)")
    parser.add_argument("--fractions", type=listed(float), default=FRACTIONS,
                        help="shares of corrupted images for the partial-drift table")
    parser.add_argument("--fraction-trials", type=int, default=4, help="subsets per kind x severity x share")
    parser.add_argument("--diagnoser", default="signature")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="diagnoser option (JSON value), e.g. components=24")


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    from zeal_core.config import parse_pairs

    return parse_pairs(pairs, "--option", "components=24")


def bench_dataset(dataset: str, args: argparse.Namespace, progress: ProgressCallback | None = None
                  ) -> dict[str, Any]:
    """The whole benchmark on one dataset, JSON-ready (``{"skipped": why}`` when it cannot run)."""
    from zeal_core.diagnose import create_diagnoser
    from zeal_core.jsonable import to_jsonable

    views = views_for(dataset, args, progress)
    if isinstance(views, str):
        return {"skipped": views}
    options = _options(args.option)
    start = time.perf_counter()
    diagnoser = create_diagnoser(args.diagnoser, **options).fit(views.reference, views.bank, seed=args.seed)
    fit_seconds = time.perf_counter() - start
    report(progress, "diagnose-fit", 1, 1, f"{dataset}: fitted in {fit_seconds:.0f} s")
    rng = np.random.default_rng(args.seed + 1)
    pool = len(views.pool)
    sizes = [n for n in args.sizes if n <= pool]
    held_sizes = [n for n in args.held_out_sizes if n <= pool]
    kinds = views.bank_kinds
    result: dict[str, Any] = {"info": views.info, "machine": machine(), "kinds": kinds,
                              "severities": list(args.severities), "sizes": sizes,
                              "bank_sets": len(views.bank), "trials": args.trials,
                              "diagnoser": args.diagnoser, "options": options, "fit_seconds": fit_seconds,
                              "fit_report": getattr(diagnoser, "fit_report", {})}
    result["unseen"] = score_unseen(diagnoser, views, held_sizes, args.held_out_trials, rng)
    result["collapse_known"] = score_collapse_known(diagnoser, views, held_sizes, args.held_out_trials, rng)
    levels = list(args.pool_severities or args.severities)
    result["severities"] = levels
    result["corruptions"] = score_corruptions(diagnoser, views, kinds, levels, sizes, args.trials,
                                              rng, progress)
    result["clean"] = score_clean(diagnoser, views.pool, sizes, args.clean_trials, rng)
    clean_pool = views.pool
    if args.label_pool_n > pool:  # a larger clean pool for large label-shift samples (no shifted copies)
        larger = views_for(dataset, args, None, pool_n=args.label_pool_n, with_pool=False)
        clean_pool = larger.pool if not isinstance(larger, str) else clean_pool
    label_sizes = [n for n in args.label_sizes if n <= len(clean_pool)]
    result["label_shift"] = score_label_shift(diagnoser, clean_pool, label_sizes, args.label_trials,
                                              args.dirichlet, rng)
    result["info"] = {**views.info, "label_pool_n": len(clean_pool)}
    fraction_levels = [level for level in FRACTION_SEVERITIES if level in levels] or levels[-2:]
    result["fractions"] = score_fractions(diagnoser, views, kinds, fraction_levels, args.fractions,
                                          min(TARGET_SIZE, pool), args.fraction_trials, rng)
    result["speed_s"] = speed(diagnoser, views.pool, SPEED_SIZES, rng)
    if not args.no_family_refits:
        result["held_out_families"] = score_held_out_families(args.diagnoser, options, views, held_sizes,
                                                              args.held_out_trials, args.seed, rng, progress)
    result["targets"] = targets(result)
    result["machine_after"] = machine()
    result = to_jsonable(result, nan_to_none=True)
    result["markdown"] = markdown(result)
    return result


def bench_diagnose(args: argparse.Namespace, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Run the benchmark on every dataset that can run; draw the confusion matrices when ``--out`` is set
    (the harness writes the JSON and Markdown)."""
    from zeal_core.fileio import atomic_write_bytes

    start = time.perf_counter()
    output: dict[str, Any] = {"datasets": {}, "skipped": {}}
    for dataset in args.datasets:
        result = bench_dataset(dataset, args, progress)
        if "skipped" in result:
            print(f"bench diagnose: skipping {dataset}: {result['skipped']}", file=sys.stderr)
            output["skipped"][dataset] = result["skipped"]
            continue
        output["datasets"][dataset] = result
        if getattr(args, "out", None):
            atomic_write_bytes(beside(args.out, f"_{dataset}_confusion.png"), confusion_figure(result))
    output["seconds"] = round(time.perf_counter() - start, 1)
    output["markdown"] = "\n\n".join(f"## {name}\n\n{value['markdown']}"
                                      for name, value in output["datasets"].items())
    return output


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Handler of ``python -m benchmarks diagnose``."""
    from zeal_core.cli import stderr_progress

    return bench_diagnose(args, progress=stderr_progress)


def _show(result: dict[str, Any]) -> None:
    for dataset in result["datasets"].values():
        print(dataset["markdown"])
    for dataset, reason in result["skipped"].items():
        print(f"skipped {dataset}: {reason}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.diagnose [options]``."""
    return script_main(__doc__, add_arguments, run, _show, argv, prog="python -m benchmarks.diagnose")


if __name__ == "__main__":
    sys.exit(main())

