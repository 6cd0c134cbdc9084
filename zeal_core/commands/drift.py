"""``drift``: embed a clean reference and a drifted sample with a registered model, then run detectors."""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add the ``drift`` command."""
    drift = subparsers.add_parser(
        "drift", parents=[parent], help="test a drifted sample against a clean reference",
        description="Embed a clean reference (one half of the split) and a sample from the other, disjoint "
                    "half with a drift spec applied, then run two-sample drift detectors on them.")
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


def parse_detector_names(text: str) -> list[str]:
    """``all`` or ``a,b`` -> registered names (unknown ones raise ConfigError listing the known)."""
    from zeal_core.drift import detector_info, list_detectors

    if text.strip() == "all":
        return list_detectors()
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        detector_info(name)  # raises with the list of known names
    return names


def _drift(args: argparse.Namespace) -> dict:
    from zeal_core.corruptions import DriftSpec
    from zeal_core.data import load_dataset
    from zeal_core.drift import run_detectors
    from zeal_core.embed import embed_sample, part_positions
    from zeal_core.errors import ConfigError
    from zeal_core.models.registry import ModelRegistry

    start = time.perf_counter()
    # Check every cheap argument before loading a model or embedding anything, so a typo fails at once.
    names = parse_detector_names(args.detector)
    DriftSpec.parse(args.drift)
    if args.n < 2:
        raise ConfigError(f"--n {args.n}: a two-sample test needs at least 2 drifted images")
    if not 0.0 < args.alpha < 1.0:
        raise ConfigError(f"--alpha {args.alpha}: use a significance level between 0 and 1, e.g. 0.05")
    registry = ModelRegistry()
    version = registry.resolve(args.model)
    card = registry.card(version)
    dataset = load_dataset(args.dataset or card.dataset)
    split_size = int(dataset.split(args.split)[1].shape[0])
    reference_n = args.reference_n or len(part_positions(split_size, "reference"))
    reference = embed_sample(version, dataset, "clean", n=reference_n, seed=args.seed, split=args.split,
                             device=args.device, part="reference")
    sample = embed_sample(version, dataset, args.drift, n=args.n, seed=args.seed, split=args.split,
                          device=args.device, part="sample")
    embed_seconds = time.perf_counter() - start
    results = run_detectors(reference, sample, names=names, alpha=args.alpha,
                            options={"mmd": {"num_permutations": args.permutations, "seed": args.seed,
                                             "device": args.device}} if "mmd" in names else None)
    output = {
        "version": version, "dataset": dataset.name, "drift": sample.spec, "n": len(sample),
        "reference_n": len(reference), "alpha": args.alpha,
        "reference_accuracy": reference.accuracy, "sample_accuracy": sample.accuracy,
        "drift_detected_by": [result.detector for result in results if result.is_drift],
        "table": "\n" + "\n".join(
            f"  {r.detector:<6} p={r.p_value:<8.4g} {'DRIFT' if r.is_drift else 'no drift':<8} "
            f"statistic={r.statistic:<10.4g} effect={r.effect_size:<8.4g} {r.runtime_s:.3f}s"
            for r in results),
        "results": [_summary(result.to_dict()) for result in results],
        "embed_seconds": round(embed_seconds, 3),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return output


def _summary(result: dict) -> dict:
    """A result without its long per-dimension lists (kept short for the terminal and --json)."""
    details = {key: value for key, value in result["details"].items()
               if key not in ("p_values", "most_drifted_scores", "most_drifted")}
    return {**result, "details": details}
