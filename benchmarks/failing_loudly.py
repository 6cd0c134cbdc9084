"""``bench failing-loudly``: detection accuracy over a fixed set of shifts, as in Failing Loudly's Table 1.

Rabanser, Günnemann & Lipton, "Failing Loudly: An Empirical Study of Methods for Detecting Dataset Shift"
(NeurIPS 2019) report, per sample size, the share of shifted samples a detector flags at alpha 0.05,
averaged over all their shifts (noise, adversarial, knock-out, image transforms, each on 10/50/100 % of the
sample; 5 random runs each). This benchmark builds the same table for every registered detector on our
models, with our shift set ``SHIFT_SPECS``: every ImageNet-C common corruption at small / medium / large
severity (1, 3, 5) on 10 / 50 / 100 % of the sample. Beside it stand the paper's Table 1 rows for its best
method (BBSD + KS) and its best MMD.

Each trial draws a fresh random split of the validation set: a reference of ``--reference`` images (default
1,000, the paper's reference size for MMD; at most half the split) and a disjoint sample pool. A null trial
tests a clean sample of n pool images; a shift trial draws n pool images and gives the spec's share of them
their shifted embeddings. Every detector sees the same reference and sample in a trial (paired comparisons).
The model embeds the whole validation split (or a seeded subset of ``--max-images``) once per distinct
corruption chain (``zeal_core.shifts``), so trials only resample rows. Sizes larger than the pool are
skipped and reported.

A spec may also carry a class mix (label shift): when ``getattr(spec, "class_mix", None)`` is set, the trial
draws its sample positions with ``spec.draw_positions(...)`` instead of uniformly (``draw_trial_sample``, the
one place that knows). New shift kinds are new spec texts in ``SHIFT_SPECS``.

Run: ``python -m benchmarks failing-loudly --dataset digits --json`` (``--out reports/bench/X.json`` also
writes ``X.json`` and ``X.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import script_main
from benchmarks._embedding_cache import EmbeddingCache
from benchmarks._harness import Table, beside, caption, listed, machine, tables
from zeal_core.progress import ProgressCallback, report

SIZES = (10, 20, 50, 100, 200, 500, 1000)  # the paper's Table 1 columns
# Every ImageNet-C common corruption x small / medium / large severity x share of the sample affected.
COMMON_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
SHIFT_SPECS: tuple[str, ...] = tuple(f"{name}:{severity}@{fraction}" for name in COMMON_CORRUPTIONS
                                     for severity in (1, 3, 5) for fraction in (0.1, 0.5, 1))
# Beyond ImageNet-C (kept out of the paper-comparable table, reported by group): every geometry and capture
# kind at small / medium / large severity on the whole sample, and label shift at the same strengths.
BEYOND_KINDS = ("rotation", "zoom", "translation", "perspective", "white_balance", "gamma", "exposure",
                "vignetting", "resize_nearest", "resize_bilinear", "resize_bicubic", "chroma_subsampling")
BEYOND_SPECS: tuple[str, ...] = (
    tuple(f"{name}:{severity}" for name in BEYOND_KINDS for severity in (1, 3, 5))
    + tuple(f"label_shift:{severity}" for severity in (1, 3, 5)))
# Rabanser et al. 2019, Table 1 (detection accuracy averaged over all shifts, alpha 0.05), n = SIZES.
PAPER_ROWS = {
    "paper: BBSD + KS (best method)": (0.19, 0.28, 0.47, 0.47, 0.51, 0.65, 0.70),
    "paper: MMD (best MMD)": (0.20, 0.27, 0.40, 0.43, 0.45, 0.53, 0.61),
}
NEW_DETECTORS = ("mmd-fuse", "mmd-agg")  # the detectors the targets are about
BASELINE = "mmd"  # what they must match or beat


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``bench failing-loudly``."""
    bench = actions.add_parser("failing-loudly", parents=[parent], help="detection accuracy over a fixed "
                               "shift set per sample size, beside Failing Loudly's Table 1",
                               description=__doc__.split("\n\n")[0])
    add_arguments(bench)
    bench.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by the ``bench`` action and ``python -m``)."""
    parser.add_argument("--dataset", default="digits", help="dataset (default digits)")
    parser.add_argument("--model", default=None, help="model version (default: latest for the dataset)")
    parser.add_argument("--detectors", type=listed(str), default=None, help="comma-separated (default all)")
    parser.add_argument("--sizes", type=listed(int), default=SIZES, help="comma-separated sample sizes")
    parser.add_argument("--specs", type=listed(str), default=None,
                        help="comma-separated drift specs (default: the documented SHIFT_SPECS, and "
                             "BEYOND_SPECS unless --no-beyond)")
    parser.add_argument("--no-beyond", action="store_true",
                        help="leave out the geometry, capture and label-shift specs (BEYOND_SPECS)")
    parser.add_argument("--corruptions", type=listed(str), default=None,
                        help="keep only the specs whose first step is one of these corruptions (specs "
                             "without corruption steps, e.g. class mixes, are always kept)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="use a seeded random subset of this many validation images (default all)")
    parser.add_argument("--reference", type=int, default=1000,
                        help="reference images per trial (default 1000; at most half the split)")
    parser.add_argument("--null-trials", type=int, default=300, help="clean trials per size (default 300)")
    parser.add_argument("--trials", type=int, default=1, help="trials per spec and size (default 1)")
    parser.add_argument("--permutations", type=int, default=300,
                        help="permutations of the permutation-test detectors (default 300)")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


# Shifts and trials ------------------------------------------------------------------------------------------


def shift_embeddings(dataset_name: str, version: str | None, specs: Sequence[Any], device: str,
                     progress: ProgressCallback | None, max_images: int | None = None, seed: int = 0,
                     cache: Path | None = None) -> tuple[Any, dict[tuple, Any], Any, dict[str, Any]]:
    """Clean embeddings of the validation split and, per distinct corruption chain, its shifted embeddings.

    Args:
        dataset_name: Dataset to load.
        version: Model version (None: the latest for the dataset).
        specs: The shifts; each distinct chain of corruption steps is embedded once.
        device: Where to corrupt and embed.
        progress: Receives the shift bank's events.
        max_images: Keep a seeded random subset of this many validation images (None: all), which bounds
            the embedding time (46 passes over the images for the default shift set).
        seed: Seed of that subset.
        cache: ``--cache`` (``benchmarks._embedding_cache``: a second run reads the embeddings back).

    Returns:
        (clean Embeddings, {steps: Embeddings of every image under those steps}, dataset, info).
    """
    from benchmarks.detectors import load_bench_model
    from zeal_core.corruptions import DriftSpec
    from zeal_core.data import load_dataset
    from zeal_core.device import resolve_device
    from zeal_core.embed import compute_embeddings
    from zeal_core.shifts import build_shift_bank, replace_spec

    model, card = load_bench_model(dataset_name, version, device, progress)
    torch_device = resolve_device(device)
    dataset = load_dataset(dataset_name)
    images, labels = dataset.split("val")
    positions = np.arange(len(images))
    if max_images is not None and max_images < len(images):
        positions = np.sort(np.random.default_rng(seed).permutation(len(images))[:max_images])
        images, labels = images[positions], labels[positions]
    store = EmbeddingCache.for_model(card, dataset, torch_device, cache)
    start = time.perf_counter()
    clean = store.one(positions, "clean", 0, lambda: compute_embeddings(
        model, card.model_config, images.to(torch_device), torch_device, labels=labels))
    chains = sorted({spec.steps for spec in specs if spec.steps})
    bank_specs = [DriftSpec(steps=steps) for steps in chains]
    embedded = store.embeddings(positions, [spec.text for spec in bank_specs], 0, lambda: [
        item.embeddings for item in build_shift_bank(model, card.model_config, images, labels, bank_specs,
                                                     torch_device, progress=progress)])
    shifted = {spec.steps: replace_spec(item, spec) for spec, item in zip(bank_specs, embedded, strict=True)}
    info = {"version": card.version, "dataset": dataset_name, "val_images": len(clean),
            "embedding_cache": store.summary(),
            "clean_accuracy": clean.accuracy, "corruption_chains": len(chains),
            "embed_seconds": round(time.perf_counter() - start, 1),
            "accuracy": {DriftSpec(steps=steps).text: shifted[steps].accuracy for steps in chains}}
    return clean, shifted, dataset, info


def draw_trial_sample(spec: Any, pool_rows: np.ndarray, pool_labels: np.ndarray | None, size: int,
                      rng: np.random.Generator, class_names: Sequence[str] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One trial's sample: rows of the split, and which of them carry the spec's corruption steps.

    The one place that knows how a spec turns into a sample. A spec with a class mix (label shift) picks its
    positions in the pool with ``spec.draw_positions``; any other spec takes a uniform random subset. The
    corruption steps, if any, then hit a random ``spec.affected_count(size)`` of the sample.

    Args:
        spec: A DriftSpec.
        pool_rows: Rows of the split that form this trial's sample pool.
        pool_labels: Their true labels (needed by class mixes).
        size: n.
        rng: The trial's generator.
        class_names: The dataset's class names, for class mixes.
    """
    class_mix = getattr(spec, "class_mix", None)
    if class_mix:
        positions = spec.draw_positions(pool_labels, size, int(rng.integers(2**31)), class_names=class_names,
                                        known_classes=None)
        rows = pool_rows[np.asarray(positions, dtype=np.int64)]
    else:
        rows = pool_rows[rng.permutation(len(pool_rows))[:size]]
    affected = np.zeros(len(rows), dtype=bool)
    if spec.steps:
        affected[rng.permutation(len(rows))[: spec.affected_count(len(rows))]] = True
    return rows, affected


def select_specs(specs: Sequence[Any], corruptions: Sequence[str] | None) -> list[Any]:
    """The specs whose first corruption step is in ``corruptions`` (all when None), plus step-free ones.

    Raises:
        ConfigError: No spec is left.
    """
    from zeal_core.errors import ConfigError

    kept = [spec for spec in specs
            if corruptions is None or not spec.steps or spec.steps[0][0] in corruptions]
    if not kept:
        raise ConfigError(f"no shift spec uses the corruptions {list(corruptions or [])}")
    return kept


def _split(total: int, reference_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A fresh random split: reference rows and the disjoint sample pool."""
    order = rng.permutation(total)
    return order[:reference_size], order[reference_size:]


def run_trials(clean: Any, shifted: dict[tuple, Any], specs: Sequence[Any], detectors: Sequence[str],
               sizes: Sequence[int], reference_size: int, null_trials: int, trials: int, alpha: float,
               options: dict[str, dict[str, Any]], seed: int, class_names: Sequence[str] | None = None,
               progress: ProgressCallback | None = None,
               checkpoint: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Decisions of every detector on every null and shift trial.

    ``checkpoint``, when given, receives the result so far after each size (long runs keep what they did).

    Returns:
        JSON-ready dict: ``null[detector][size]`` (list of 0/1 rejections), ``shift[detector][size]`` (list
        of 0/1 detections, one per spec x trial, specs in order), sizes used and skipped, seconds per
        detector.
    """
    from zeal_core.corruptions import DriftSpec
    from zeal_core.drift import create_detector, detector_info

    total = len(clean)
    pool = total - reference_size
    used = [size for size in sizes if 2 <= size <= pool]
    kinds = {name: detector_info(name).input_kind for name in detectors}
    null: dict[str, dict[int, list[int]]] = {name: {size: [] for size in used} for name in detectors}
    shift: dict[str, dict[int, list[int]]] = {name: {size: [] for size in used} for name in detectors}
    seconds = dict.fromkeys(detectors, 0.0)
    rng = np.random.default_rng(seed)
    clean_spec = DriftSpec.clean()

    def result(done: list[int]) -> dict[str, Any]:
        return {"sizes": done, "skipped_sizes": [size for size in sizes if size not in used],
                "reference_size": reference_size, "pool_size": pool, "null_trials": null_trials,
                "trials_per_spec": trials, "specs": [spec.text for spec in specs], "alpha": alpha,
                "null": {name: {size: null[name][size] for size in done} for name in detectors},
                "shift": {name: {size: shift[name][size] for size in done} for name in detectors},
                "detector_seconds": {name: round(value, 1) for name, value in seconds.items()}}

    def one_trial(spec: Any, size: int, trial_seed: int, into: dict[str, dict[int, list[int]]]) -> None:
        reference_rows, pool_rows = _split(total, reference_size, rng)
        labels = None if clean.labels is None else clean.labels[pool_rows]
        rows, affected = draw_trial_sample(spec, pool_rows, labels, size, rng, class_names)
        chain = shifted.get(spec.steps)
        for name in detectors:
            kind = kinds[name]
            sample = np.array(getattr(clean, kind)[rows])
            if chain is not None and affected.any():
                sample[affected] = getattr(chain, kind)[rows[affected]]
            start = time.perf_counter()
            detector = create_detector(name, alpha=alpha, seed=trial_seed, **options.get(name, {}))
            result = detector.fit(getattr(clean, kind)[reference_rows]).test(sample)
            seconds[name] += time.perf_counter() - start
            into[name][size].append(int(result.p_value < alpha))

    for step, size in enumerate(used):
        for trial in range(null_trials):
            one_trial(clean_spec, size, trial, null)
        for index, spec in enumerate(specs):
            for trial in range(trials):
                one_trial(spec, size, index * trials + trial, shift)
        report(progress, "failing-loudly", step + 1, len(used), f"size {size} done")
        if checkpoint is not None:
            checkpoint(result(used[: step + 1]))
    return result(used)


# Summaries --------------------------------------------------------------------------------------------------


def summarise(trials: dict[str, Any]) -> dict[str, Any]:
    """Rates with standard errors, breakdowns by severity and fraction, and the issue's target checks."""
    from zeal_core.corruptions import DriftSpec

    alpha = trials["alpha"]
    sizes = trials["sizes"]
    specs = [DriftSpec.parse(text) for text in trials["specs"]]
    per_spec = trials["trials_per_spec"]
    calibrated_se = {size: math.sqrt(alpha * (1 - alpha) / max(trials["null_trials"], 1)) for size in sizes}
    groups = [shift_group(spec) for spec in specs]
    core = np.array([group == "imagenet-c" for group in groups])  # the paper-comparable shift set
    spec_of = np.repeat(np.arange(len(specs)), per_spec)
    core_columns = core[spec_of]
    fpr, accuracy, by_fraction, by_severity, by_group = {}, {}, {}, {}, {}
    for name, cells in trials["null"].items():
        fpr[name] = {size: _rate(cells[size]) for size in sizes}
    for name, cells in trials["shift"].items():
        hits = np.array([cells[size] for size in sizes], dtype=float)  # sizes x (specs * trials)
        accuracy[name] = {size: _rate(hits[row][core_columns].astype(int).tolist())
                          for row, size in enumerate(sizes)}
        core_specs = [spec for spec, keep in zip(specs, core, strict=True) if keep]
        core_hits, core_of = hits[:, core_columns], np.repeat(np.arange(len(core_specs)), per_spec)
        by_fraction[name] = _breakdown(core_hits, core_of, [spec.fraction for spec in core_specs])
        severities = [spec.steps[0][1] if spec.steps else 0.0 for spec in core_specs]
        by_severity[name] = _breakdown(core_hits, core_of, severities)
        key_of = np.array(groups)[spec_of]
        by_group[name] = {group: {size: _rate(hits[row][key_of == group].astype(int).tolist())
                                  for row, size in enumerate(sizes)}
                          for group in dict.fromkeys(groups)}
    checks = _targets(trials, fpr, calibrated_se, core_columns)
    return {"false_positive_rate": fpr, "calibrated_se": calibrated_se, "accuracy": accuracy,
            "accuracy_by_fraction": by_fraction, "accuracy_by_severity": by_severity,
            "accuracy_by_group": by_group, "targets": checks}


def shift_group(spec: Any) -> str:
    """The group a shift spec belongs to: "imagenet-c", "geometric", "capture" (its first pixel step's
    registry group), or "label shift" / "unseen classes" for a class mix."""
    from zeal_core.corruptions import drift_kind_groups

    if spec.steps:
        return next((group for group, names in drift_kind_groups().items() if spec.steps[0][0] in names),
                    "other")
    if spec.class_mix is not None:
        return spec.class_mix.kind.replace("_", " ")
    return "clean"


def _rate(decisions: list[int]) -> dict[str, float]:
    """Share of 1s with its binomial standard error (an upper bound for a mix of shifts)."""
    count = len(decisions)
    rate = float(np.mean(decisions)) if count else float("nan")
    error = math.sqrt(rate * (1 - rate) / count) if count else float("nan")
    return {"rate": rate, "se": error, "trials": count}


def _breakdown(hits: np.ndarray, spec_of: np.ndarray, keys: list[float]) -> dict[str, float]:
    """Mean detection over all sizes for each value of a spec attribute (fraction or severity)."""
    key_of = np.array(keys)[spec_of]
    return {f"{key:g}": round(float(hits[:, key_of == key].mean()), 3) for key in sorted(set(keys))}


def _targets(trials: dict[str, Any], fpr: dict[str, Any], calibrated_se: dict[int, float],
             core: np.ndarray) -> dict[str, Any]:
    """The issue's checks: calibration of the new detectors, and power against ``mmd`` (paired) on the
    paper-comparable shifts (``core``: a mask over the spec x trial columns)."""
    alpha, sizes = trials["alpha"], trials["sizes"]
    present = [name for name in NEW_DETECTORS if name in trials["shift"]]
    calibration = {name: {size: fpr[name][size]["rate"] <= alpha + 2 * calibrated_se[size] for size in sizes}
                   for name in present} if trials["null_trials"] else {}
    power: dict[str, Any] = {}
    if BASELINE in trials["shift"]:
        for name in present:
            cells = {}
            for size in sizes:
                difference = (np.array(trials["shift"][name][size])
                              - np.array(trials["shift"][BASELINE][size]))[core]
                cells[size] = {"difference": round(float(difference.mean()), 4),
                               "se": round(float(difference.std(ddof=1) / math.sqrt(len(difference))), 4)
                               if len(difference) > 1 else float("nan")}
            power[name] = cells
    best = {size: max((power[name][size]["difference"] for name in power), default=float("nan"))
            for size in sizes}
    return {"calibration_within_alpha_plus_2se": calibration,
            "all_calibrated": all(all(cells.values()) for cells in calibration.values()) if calibration
            else None,
            "paired_difference_vs_mmd": power,
            "best_new_minus_mmd": best,
            "new_at_least_mmd_every_n": bool(power) and all(value >= 0 for value in best.values()),
            "new_above_mmd_n_le_200": bool(power) and all(best[size] > 0 for size in sizes if size <= 200)}


def markdown(result: dict[str, Any]) -> str:
    """The accuracy table beside the paper's rows, the false-positive table, breakdowns and target checks."""
    from zeal_core.corruptions import DriftSpec

    trials, summary = result["trials"], result["summary"]
    sizes = trials["sizes"]
    head = ("detector", *(f"n={size}" for size in sizes))
    machine_record = result.get("machine")
    core_count = sum(1 for text in trials["specs"] if shift_group(DriftSpec.parse(text)) == "imagenet-c")
    if not core_count:  # only shifts beyond ImageNet-C: their table by group is all there is
        return tables(*_group_blocks(summary, sizes, machine_record, always=True))
    tests = core_count * trials["trials_per_spec"]
    rows = [(label, *(f"{dict(zip(SIZES, row, strict=True))[size]:.2f}" if size in SIZES else "-"
                      for size in sizes)) for label, row in PAPER_ROWS.items()]
    rows += [(name, *(f"{cells[size]['rate']:.2f} ± {cells[size]['se']:.2f}" for size in sizes))
             for name, cells in summary["accuracy"].items()]
    blocks: list[Table | str] = [Table(head, rows, caption(
        f"Detection accuracy at alpha {trials['alpha']:g}, averaged over {core_count} ImageNet-C shifts "
        f"({trials['trials_per_spec']} trial(s) each); reference {trials['reference_size']} images",
        n=sizes, trials=f"{tests} tests per cell",
        standard_error="± one binomial standard error (an upper bound for a mix of shifts)",
        machine_record=machine_record))]
    se = next(iter(summary["calibrated_se"].values()), float("nan"))
    if trials["null_trials"]:
        blocks.append(Table(head, [(name, *(f"{cells[size]['rate']:.3f}" for size in sizes))
                                   for name, cells in summary["false_positive_rate"].items()], caption(
            "False-positive rate, clean vs clean", trials=f"{trials['null_trials']} trials per size",
            standard_error=f"a calibrated detector's standard error is {se:.3f}, so alpha + 2 SE = "
                           f"{trials['alpha'] + 2 * se:.3f}")))
    blocks.append(_share_table(summary))
    blocks += _group_blocks(summary, sizes, machine_record)
    targets = summary["targets"]
    if targets["paired_difference_vs_mmd"]:
        blocks.append(Table(head, [(f"{name} - mmd", *(f"{cells[size]['difference']:+.3f} ± "
                                                       f"{cells[size]['se']:.3f}" for size in sizes))
                                   for name, cells in targets["paired_difference_vs_mmd"].items()],
                            caption("Paired difference in detection rate against mmd (same trials)",
                                    standard_error="± standard error")))
    closing = (f"Targets: new detectors within alpha + 2 SE in every cell: {targets['all_calibrated']}; "
               f"a new detector >= mmd at every n: {targets['new_at_least_mmd_every_n']}; above mmd at every "
               f"n <= 200: {targets['new_above_mmd_n_le_200']}.")
    if trials["skipped_sizes"]:
        closing += (f"\nSizes skipped (larger than the {trials['pool_size']}-image sample pool): "
                    f"{', '.join(str(size) for size in trials['skipped_sizes'])}.")
    return tables(*blocks, closing)


def _share_table(summary: dict[str, Any]) -> Table:
    """Detection accuracy by share of the sample affected and by severity (mean over all sizes)."""
    fractions = sorted({key for cells in summary["accuracy_by_fraction"].values() for key in cells},
                       key=float)
    severities = sorted({key for cells in summary["accuracy_by_severity"].values() for key in cells},
                        key=float)
    rows = [(name, *(f"{summary['accuracy_by_fraction'][name][key]:.2f}" for key in fractions),
             *(f"{summary['accuracy_by_severity'][name][key]:.2f}" for key in severities))
            for name in summary["accuracy"]]
    return Table(("detector", *(f"{key} affected" for key in fractions),
                  *(f"severity {key}" for key in severities)), rows,
                 "Detection accuracy by share of the sample affected and by severity (mean over all sizes):")


def _group_blocks(summary: dict[str, Any], sizes: Sequence[int], machine_record: Any = None,
                  always: bool = False) -> list[Table | str]:
    """Detection accuracy per shift group (ImageNet-C, geometric, capture, label shift) and n, with the
    number of tests per cell."""
    by_group = summary.get("accuracy_by_group") or {}
    groups = list(dict.fromkeys(group for cells in by_group.values() for group in cells))
    if len(groups) < 2 and not always:
        return []
    counts = {group: next(iter(by_group.values()))[group][sizes[0]]["trials"] for group in groups} if sizes \
        else {}
    rows = [(name, group, *(f"{cells[group][size]['rate']:.2f}" for size in sizes))
            for group in groups for name, cells in by_group.items()]
    table = Table(("detector", "group", *(f"n={size}" for size in sizes)), rows, caption(
        "Detection accuracy by kind of shift (geometry and capture kinds at severity 1 / 3 / 5 on the whole "
        "sample; label shift: the class mix changed, no pixel touched)", n=list(sizes),
        trials="tests per cell: " + ", ".join(f"{group} {count}" for group, count in counts.items()),
        standard_error="± one binomial standard error: up to 0.5 / sqrt(tests)",
        machine_record=machine_record))
    return [table]


# Entry points -----------------------------------------------------------------------------------------------


def bench_failing_loudly(args: argparse.Namespace, progress: ProgressCallback | None = None
                         ) -> dict[str, Any]:
    """Run the benchmark described in the module docstring; returns a JSON-ready dict."""
    import torch

    from benchmarks.detectors import grid_options
    from zeal_core.corruptions import DriftSpec
    from zeal_core.device import resolve_device
    from zeal_core.drift import list_detectors
    from zeal_core.fileio import atomic_write_text
    from zeal_core.jsonable import to_jsonable

    start = time.perf_counter()
    device = str(resolve_device(args.device))
    texts = args.specs or (SHIFT_SPECS + (() if args.no_beyond else BEYOND_SPECS))
    specs = select_specs([DriftSpec.parse(text) for text in texts], args.corruptions)
    detectors = list(args.detectors or list_detectors())
    clean, shifted, dataset, info = shift_embeddings(args.dataset, args.model, specs, device, progress,
                                                     args.max_images, args.seed, getattr(args, "cache", None))
    reference_size = min(args.reference, (len(clean) + 1) // 2)
    options = grid_options(detectors, args.permutations, device)
    partial = beside(args.out, ".partial.json") if getattr(args, "out", None) else None

    def checkpoint(done: dict[str, Any]) -> None:
        if partial is not None:  # what a long run has done survives an interruption
            atomic_write_text(partial, json.dumps(to_jsonable({"features": info, "trials": done})))

    trials = run_trials(clean, shifted, specs, detectors, args.sizes, reference_size, args.null_trials,
                        args.trials, args.alpha, options, args.seed, class_names=dataset.class_names,
                        progress=progress, checkpoint=checkpoint)
    result = {"device": device, "torch_threads": torch.get_num_threads(), "features": info,
              "permutations": args.permutations, "trials": trials}
    result["summary"] = summarise(trials)
    result["machine"] = machine()
    result["markdown"] = markdown(result)
    result["seconds"] = round(time.perf_counter() - start, 1)
    if partial is not None:  # the harness writes the whole result to --out when this returns
        partial.unlink(missing_ok=True)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Handler of ``python -m benchmarks failing-loudly``."""
    from zeal_core.cli import stderr_progress

    return bench_failing_loudly(args, progress=stderr_progress)


def _show(result: dict[str, Any]) -> None:
    print(result["markdown"], file=sys.stderr)
    print(json.dumps({key: value for key, value in result.items() if key != "trials"}, default=str, indent=1))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.failing_loudly [options]``: prints the tables, then the JSON."""
    return script_main(__doc__, add_arguments, run, _show, argv,
                       prog="python -m benchmarks.failing_loudly")


if __name__ == "__main__":
    sys.exit(main())
