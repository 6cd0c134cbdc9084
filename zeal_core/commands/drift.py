"""``drift``: simulate a drift on the held-out sample half and check it against the model's reference."""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add the ``drift`` command."""
    drift = subparsers.add_parser(
        "drift", parents=[parent], help="test a simulated drift against the clean reference",
        description="Load (or fit once and keep) the model's reference on one half of the split under "
                    "the lab's check profile (`settings`), draw a sample from the other, disjoint half, "
                    "apply the drift spec and check it as `check` and the Drift Lab do.")
    drift.add_argument("--model", default="active", help="version id, 'active' (default) or 'latest'")
    drift.add_argument("--dataset", help="dataset name (default: the one the model was trained on)")
    drift.add_argument("--drift", default="clean", help="drift-spec text, e.g. gaussian_noise:3@0.5 "
                       "(default clean: a no-drift check)")
    drift.add_argument("--n", type=int, default=100, help="sample size (default 100)")
    drift.add_argument("--profile", default=None,
                       help="check profile (standard, full, quick; default: the lab's, see `settings`)")
    drift.add_argument("--reference-n", type=int, default=None,
                       help="override: reference size (default: the profile's)")
    drift.add_argument("--detector", default=None,
                       help="override: detector name, comma-separated names, or 'all' "
                            "(default: the profile's)")
    drift.add_argument("--alpha", type=float, default=None,
                       help="override: family-wise significance level (default: the profile's, 0.05)")
    drift.add_argument("--permutations", type=int, default=None,
                       help="override: permutations of the kernel tests (default: the profile's)")
    drift.add_argument("--seed", type=int, default=None,
                       help="override: seeds the reference draw, the sample draw, the corruption and "
                            "the tests")
    drift.add_argument("--split", choices=("val", "train"), default="val", help="which split (default val)")
    drift.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    drift.set_defaults(handler=_drift)


def _drift(args: argparse.Namespace) -> dict:
    from zeal_core.commands.check import _detectors
    from zeal_core.corruptions import DriftSpec
    from zeal_core.service import CheckService

    start = time.perf_counter()
    # Check every cheap argument before loading a model or embedding anything, so a typo fails at once.
    spec = DriftSpec.parse(args.drift)
    overrides = {"reference_n": args.reference_n, "alpha": args.alpha, "seed": args.seed,
                 "permutations": args.permutations, "detectors": _detectors(args.detector)}
    service = CheckService(args.profile, overrides=overrides, device=args.device)
    reference = service.reference(args.model, args.dataset, split=args.split)
    report = service.check(spec, reference=reference, n=args.n, seed=service.profile.seed,
                           parts=("detectors", "typical"))
    results = report.to_dict()["detectors"]
    return {
        "version": reference.version, "dataset": reference.dataset_name, "drift": spec.text, "n": report.n,
        "reference_n": report.reference_n, "alpha": report.decision.alpha, "settings": report.settings,
        "reference_accuracy": reference.reference.accuracy, "sample_accuracy": report.accuracy,
        "clean_sample_accuracy": report.clean_accuracy,
        "drift_detected_by": [result.detector for result in report.results if result.is_drift],
        "decision": report.decision.to_dict(),
        "table": "\n" + "\n".join(
            f"  {r.detector:<6} p={r.p_value:<8.4g} {'DRIFT' if r.is_drift else 'no drift':<8} "
            f"statistic={r.statistic:<10.4g} effect={r.effect_size:<8.4g} {r.runtime_s:.3f}s"
            for r in report.results),
        "results": results,
        "typical": [{"index": item.index, "score": round(float(item.score), 4)} for item in report.typical],
        "embed_seconds": round(report.timings.get("embed", 0.0), 3),
        "seconds": round(time.perf_counter() - start, 3),
    }
