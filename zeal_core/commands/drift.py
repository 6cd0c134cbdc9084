"""``drift``: simulate a drift on the held-out sample half and check it against the model's reference."""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add the ``drift`` command."""
    drift = subparsers.add_parser(
        "drift", parents=[parent], help="test a simulated drift against the clean reference",
        description="Fit (or reuse) the model's reference on one half of the split, draw a sample from the "
                    "other, disjoint half, apply the drift spec and check it with every detector.")
    drift.add_argument("--model", default="active", help="version id, 'active' (default) or 'latest'")
    drift.add_argument("--dataset", help="dataset name (default: the one the model was trained on)")
    drift.add_argument("--drift", default="clean", help="drift-spec text, e.g. gaussian_noise:3@0.5 "
                       "(default clean: a no-drift check)")
    drift.add_argument("--n", type=int, default=100, help="sample size (default 100)")
    drift.add_argument("--reference-n", type=int, help="reference size (default: the whole reference half)")
    drift.add_argument("--detector", default="all",
                       help="detector name, comma-separated names, or 'all' (default)")
    drift.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    drift.add_argument("--permutations", type=int, default=1000, help="MMD permutations (default 1000)")
    drift.add_argument("--seed", type=int, default=0, help="seeds the draw, the corruption and the tests")
    drift.add_argument("--split", choices=("val", "train"), default="val", help="which split (default val)")
    drift.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    drift.set_defaults(handler=_drift)


def _drift(args: argparse.Namespace) -> dict:
    from zeal_core.corruptions import DriftSpec
    from zeal_core.drift import parse_detector_names
    from zeal_core.reference import ReferenceConfig, get_reference

    start = time.perf_counter()
    # Check every cheap argument before loading a model or embedding anything, so a typo fails at once.
    names = parse_detector_names(args.detector)
    spec = DriftSpec.parse(args.drift)
    options = {"mmd": {"num_permutations": args.permutations, "device": args.device}} \
        if "mmd" in names else {}
    config = ReferenceConfig(reference_n=args.reference_n, seed=args.seed, alpha=args.alpha,
                             detectors=tuple(names), detector_options=options, split=args.split)
    reference = get_reference(args.model, args.dataset, config, device=args.device)
    report = reference.check(spec, n=args.n, seed=args.seed, parts=("detectors", "typical"))
    results = report.to_dict()["detectors"]
    return {
        "version": reference.version, "dataset": reference.dataset_name, "drift": spec.text, "n": report.n,
        "reference_n": report.reference_n, "alpha": args.alpha,
        "reference_accuracy": reference.reference.accuracy, "sample_accuracy": report.accuracy,
        "clean_sample_accuracy": report.clean_accuracy,
        "drift_detected_by": [result.detector for result in report.results if result.is_drift],
        "decision": report.decision.to_dict(),
        "table": "\n" + "\n".join(
            f"  {r.detector:<6} p={r.p_value:<8.4g} {'DRIFT' if r.is_drift else 'no drift':<8} "
            f"statistic={r.statistic:<10.4g} effect={r.effect_size:<8.4g} {r.runtime_s:.3f}s"
            for r in report.results),
        "results": results,
        "embed_seconds": round(report.timings.get("embed", 0.0), 3),
        "seconds": round(time.perf_counter() - start, 3),
    }
