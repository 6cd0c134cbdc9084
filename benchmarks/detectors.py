"""``bench detectors``: calibration, power and speed of the drift detectors, in the style of Failing Loudly.

Calibration: the false-positive rate (share of trials with p < alpha) of every detector when reference and
sample are disjoint clean draws. Power: the detection rate per detector x sample size x drift (corruption,
severity, fraction of the sample affected). Each trial draws a fresh random split of the validation set into
a reference and a disjoint sample pool, so trials are independent draws, not re-tests of one split.

Features come from a registered model (``--source model``, digits by default; a digits model is trained and
registered first when none exists, about a minute on 2 cores) or from synthetic Gaussian data
(``--source synthetic``: no model, a mean shift stands in for drift). The model embeds the whole validation
split once per drift (clean, and each corruption x severity applied to every image); a drift with fraction
f replaces a random share f of a sample's clean features by their corrupted versions, which is the same as
applying ``name:severity@f`` to that sample. Sizes larger than the sample pool (half the split) are left
out and reported as skipped (digits has 449 validation images, so n <= 224 there).

Speed: mmd, mmd-fuse and mmd-agg with n = 1000 vs 1000, d = 512, 1000 permutations (median of 3, the same
data for all three, in one process); our MMD against frouros' MMD + PermutationTestDistanceBased on a
smaller case (measured, then extrapolated to the full case assuming O(B·N²) cost: stated in the output);
and UMAP: warm-up, fit on 1,000 points, transform of 1,000 points.

Run: ``python -m benchmarks detectors --json`` (or ``python -m benchmarks.detectors``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import script_main
from benchmarks._embedding_cache import EmbeddingCache
from benchmarks._harness import Table, caption, listed, machine, tables
from zeal_core.progress import ProgressCallback, report

SIZES = (10, 20, 50, 100, 200, 500, 1000)  # sample sizes of the Failing Loudly tables
CORRUPTIONS = ("gaussian_noise", "defocus_blur", "contrast")  # one each of noise, blur, digital
SEVERITIES = (1.0, 3.0, 5.0)
FRACTIONS = (0.1, 0.5, 1.0)


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``bench detectors``."""
    bench = actions.add_parser("detectors", parents=[parent], help="drift detectors: false-positive rate, "
                               "detection rate, MMD and UMAP speed", description=__doc__.split("\n\n")[0])
    add_arguments(bench)
    bench.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by the ``bench`` action and ``python -m``)."""
    parser.add_argument("--source", choices=("model", "synthetic"), default="model",
                        help="features from a registered model (default) or synthetic Gaussians")
    parser.add_argument("--dataset", default="digits", help="dataset for --source model (default digits)")
    parser.add_argument("--model", default=None, help="model version (default: latest for the dataset; "
                        "trains a digits model if there is none)")
    parser.add_argument("--detectors", type=listed(str), default=None, help="comma-separated (default all)")
    parser.add_argument("--sizes", type=listed(int), default=SIZES, help="comma-separated sample sizes")
    parser.add_argument("--corruptions", type=listed(str), default=CORRUPTIONS, help="comma-separated")
    parser.add_argument("--severities", type=listed(float), default=SEVERITIES, help="comma-separated")
    parser.add_argument("--fractions", type=listed(float), default=FRACTIONS, help="comma-separated")
    parser.add_argument("--null-trials", type=int, default=100, help="no-drift trials per size (default 100)")
    parser.add_argument("--trials", type=int, default=20, help="trials per drift cell (default 20)")
    parser.add_argument("--permutations", type=int, default=500, help="MMD permutations in the grid")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--skip-grid", action="store_true", help="speed figures only")
    parser.add_argument("--skip-speed", action="store_true", help="grid only")
    parser.add_argument("--frouros-n", type=int, default=200, help="frouros MMD speed case: n per side")
    parser.add_argument("--frouros-permutations", type=int, default=100, help="frouros speed case: B")


# Feature sources --------------------------------------------------------------------------------------------


def load_bench_model(dataset_name: str, version: str | None, device: str,
                     progress: ProgressCallback | None) -> tuple[Any, Any]:
    """(model, card) of ``version``, or of the latest model for the dataset (training a digits-style one
    first when none is registered)."""
    from zeal_core.device import resolve_device
    from zeal_core.models.registry import ModelRegistry

    registry = ModelRegistry()
    if version is None:
        card = registry.latest(dataset_name)
        if card is None:
            from zeal_core.train import default_config, train_and_register

            report(progress, "train", 0, None, f"no {dataset_name} model registered: training one")
            card = train_and_register(dataset_name, default_config(dataset_name), device=device,
                                      progress=progress)
        version = card.version
    return registry.load(version, device=resolve_device(device))


def grid_options(names: Sequence[str], permutations: int, device: str) -> dict[str, dict[str, Any]]:
    """Options for the grid: ``num_permutations`` and ``device`` for every detector that takes them."""
    import inspect

    from zeal_core.drift import create_detector

    options: dict[str, dict[str, Any]] = {}
    for name in names:
        parameters = inspect.signature(type(create_detector(name))).parameters
        chosen = {"num_permutations": permutations, "device": device}
        options[name] = {key: value for key, value in chosen.items() if key in parameters}
    return options


def _model_features(dataset_name: str, version: str | None, drifts: list[tuple[str, float]], device: str,
                    progress: ProgressCallback | None, cache: Path | None = None
                    ) -> tuple[dict[Any, Any], dict[str, Any]]:
    """Clean and fully-corrupted embeddings of the whole validation split, keyed by None or (name, sev);
    read back from the embedding cache (``--cache``) when a run embedded them before."""
    import torch

    from zeal_core.corruptions import DriftSpec
    from zeal_core.data import load_dataset
    from zeal_core.device import resolve_device
    from zeal_core.embed import compute_embeddings

    model, card = load_bench_model(dataset_name, version, device, progress)
    version = card.version
    torch_device = resolve_device(device)
    dataset = load_dataset(dataset_name)
    images, labels = dataset.split("val")
    store = EmbeddingCache.for_model(card, dataset, torch_device, cache)
    features: dict[Any, Any] = {}
    for index, drift in enumerate([None, *drifts]):
        spec = DriftSpec(steps=(drift,), fraction=1.0) if drift is not None else DriftSpec(steps=())

        def embed(spec: DriftSpec = spec, index: int = index) -> Any:
            batch = spec.apply(images.to(torch_device), seed=index) if spec.steps else images.to(torch_device)
            with torch.inference_mode():
                return compute_embeddings(model, card.model_config, batch, torch_device, labels=labels)

        features[drift] = store.one(np.arange(len(images)), spec.text, index, embed)
        report(progress, "embed", index + 1, len(drifts) + 1, f"embedded {drift or 'clean'}")
    clean = features[None]
    info = {"version": version, "dataset": dataset_name, "val_images": len(clean),
            "embedding_cache": store.summary(),
            "clean_accuracy": clean.accuracy,
            "accuracy": {f"{name}:{severity:g}": features[(name, severity)].accuracy
                         for name, severity in drifts}}
    return features, info


def _synthetic_features(drifts: list[tuple[str, float]], seed: int) -> tuple[dict[Any, Any], dict[str, Any]]:
    """Gaussian stand-ins: 2,000 items, 64-D; drift (name, severity) = mean shift of 0.05 * severity."""
    from zeal_core.embed import Embeddings

    rng = np.random.default_rng(seed)
    count, dims = 2000, 64
    basis = rng.standard_normal((8, dims)) / np.sqrt(8)
    base = rng.standard_normal((count, 8)) @ basis + 0.5 * rng.standard_normal((count, dims))
    logits = base[:, :10] * 2.0

    def embeddings(shift: float) -> Embeddings:
        probs = np.exp(logits + shift) / np.exp(logits + shift).sum(1, keepdims=True)
        return Embeddings(features=(base + shift).astype(np.float32), probs=probs.astype(np.float32),
                          preds=probs.argmax(1), labels=None, indices=np.arange(count))

    features: dict[Any, Any] = {None: embeddings(0.0)}
    for drift in drifts:
        features[drift] = embeddings(0.05 * drift[1])
    return features, {"source": "synthetic", "items": count, "dims": dims}


# The grid ---------------------------------------------------------------------------------------------------


def _trial_split(total: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(total)
    half = (total + 1) // 2
    return order[:half], order[half:]


def _test(name: str, options: dict[str, Any], reference: np.ndarray, sample: np.ndarray, alpha: float,
          seed: int) -> float:
    from zeal_core.drift import create_detector

    detector = create_detector(name, alpha=alpha, seed=seed, **options.get(name, {}))
    return detector.fit(reference).test(sample).p_value


def run_grid(features: dict[Any, Any], detectors: Sequence[str], sizes: Sequence[int],
             drifts: Sequence[tuple[str, float, float]], null_trials: int, trials: int, alpha: float,
             permutations: int, seed: int, device: str, progress: ProgressCallback | None = None
             ) -> dict[str, Any]:
    """False-positive rates (clean vs clean) and detection rates (clean vs drifted) per detector and size.

    Args:
        features: Embeddings of the whole split: key None (clean) and (corruption, severity) (fully drifted).
        detectors: Detector names.
        sizes: Sample sizes; those above the sample pool are skipped.
        drifts: (corruption, severity, fraction) cells.
        null_trials: Trials per size for the false-positive rate.
        trials: Trials per drift cell and size.
        alpha: Significance level.
        permutations: Permutations of the permutation-test detectors (mmd, mmd-fuse, mmd-agg).
        seed: Base seed of the trial splits.
        device: Device for MMD.
        progress: Receives one event per size.
    """
    from zeal_core.drift import detector_info

    clean = features[None]
    total = len(clean)
    pool = total - (total + 1) // 2
    used = [size for size in sizes if 2 <= size <= pool]
    options = grid_options(detectors, permutations, device)
    kinds = {name: detector_info(name).input_kind for name in detectors}
    false_positive: dict[str, dict[int, float]] = {name: {} for name in detectors}
    detection: dict[str, dict[str, dict[int, float]]] = {name: {} for name in detectors}
    rng = np.random.default_rng(seed)
    timing = {name: 0.0 for name in detectors}
    for step, size in enumerate(used):
        rejections = dict.fromkeys(detectors, 0)
        for trial in range(null_trials):
            reference_rows, pool_rows = _trial_split(total, rng)
            sample_rows = pool_rows[:size]
            for name in detectors:
                array = getattr(clean, kinds[name])
                start = time.perf_counter()
                p_value = _test(name, options, array[reference_rows], array[sample_rows], alpha, trial)
                timing[name] += time.perf_counter() - start
                rejections[name] += p_value < alpha
        for name in detectors:
            false_positive[name][size] = rejections[name] / max(null_trials, 1)
        for corruption, severity, fraction in drifts:
            label = f"{corruption}:{severity:g}@{fraction:g}"
            drifted = features[(corruption, severity)]
            hits = dict.fromkeys(detectors, 0)
            for trial in range(trials):
                reference_rows, pool_rows = _trial_split(total, rng)
                sample_rows = pool_rows[:size]
                affected = rng.permutation(size)[: int(np.floor(fraction * size + 0.5))]
                for name in detectors:
                    array = getattr(clean, kinds[name])
                    sample = np.array(array[sample_rows])
                    sample[affected] = getattr(drifted, kinds[name])[sample_rows[affected]]
                    start = time.perf_counter()
                    p_value = _test(name, options, array[reference_rows], sample, alpha, trial)
                    timing[name] += time.perf_counter() - start
                    hits[name] += p_value < alpha
            for name in detectors:
                detection[name].setdefault(label, {})[size] = hits[name] / max(trials, 1)
        report(progress, "grid", step + 1, len(used), f"size {size} done")
    return {"sizes": used, "skipped_sizes": [size for size in sizes if size not in used],
            "reference_size": (total + 1) // 2, "null_trials": null_trials, "trials": trials, "alpha": alpha,
            "false_positive_rate": false_positive, "detection_rate": detection,
            "detector_seconds": {name: round(value, 2) for name, value in timing.items()}}


def grid_markdown(grid: dict[str, Any], machine_record: dict[str, Any] | None = None) -> str:
    """The grid as markdown: one FPR table, and one detection table per drift cell."""
    sizes = grid["sizes"]
    head = ("detector", *(f"n={size}" for size in sizes))
    alpha, null_trials = grid.get("alpha", 0.05), grid["null_trials"]
    # Binomial standard error of a calibrated detector's rate: how far a cell may stray from alpha by chance.
    spread = (alpha * (1 - alpha) / max(null_trials, 1)) ** 0.5
    blocks = [Table(head, [(name, *(f"{rates[size]:.3f}" for size in sizes))
                           for name, rates in grid["false_positive_rate"].items()], caption(
        f"False-positive rate at alpha {alpha:g}, clean vs clean; reference n={grid['reference_size']}",
        trials=f"{null_trials} trials per size",
        standard_error=f"a calibrated detector's rate has a standard error of {spread:.3f}",
        machine_record=machine_record))]
    drifts = sorted({label for rates in grid["detection_rate"].values() for label in rates})
    blocks += [Table(head, [(name, *(f"{cells[label][size]:.2f}" for size in sizes))
                            for name, cells in grid["detection_rate"].items()],
                     caption(f"Detection rate, {label}", trials=grid["trials"])) for label in drifts]
    return tables(*blocks)


# Speed ------------------------------------------------------------------------------------------------------


KERNEL_DETECTORS = ("mmd", "mmd-fuse", "mmd-agg")  # the permutation-test detectors the speed section times


def speed_data(n: int = 1000, dims: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The speed case: n x dims standard Gaussian reference and a sample shifted by 0.05 (float32)."""
    rng = np.random.default_rng(seed)
    reference = rng.standard_normal((n, dims)).astype(np.float32)
    sample = (rng.standard_normal((n, dims)) + 0.05).astype(np.float32)
    return reference, sample


def kernel_test_speed(name: str, reference: np.ndarray, sample: np.ndarray, device: str = "cpu",
                      permutations: int = 1000, repeats: int = 3) -> dict[str, Any]:
    """Seconds for one test of a kernel detector (distances, kernels, all permutations), median of
    ``repeats`` after one warm-up; also the process CPU seconds per thread (less sensitive to other load)."""
    import os

    import torch

    from zeal_core.drift import create_detector

    detector = create_detector(name, num_permutations=permutations, device=device).fit(reference)
    detector.test(sample)  # warm-up (allocator, kernels)
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = detector.test(sample)
        if detector.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append((time.process_time() - cpu_start) / torch.get_num_threads())
    return {"detector": name, "n": len(reference), "m": len(sample), "dims": reference.shape[1],
            "permutations": permutations, "device": str(detector.device), "threads": torch.get_num_threads(),
            "kernels": result.details.get("num_kernels", 1),
            "seconds_median": round(float(np.median(times)), 4),
            "seconds_all": [round(t, 4) for t in times],
            "cpu_seconds_per_thread_median": round(float(np.median(cpu_times)), 4),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def mmd_speed(device: str = "cpu", n: int = 1000, dims: int = 512, permutations: int = 1000,
              repeats: int = 3) -> dict[str, Any]:
    """Seconds for one MMD test (kernel + all permutations), median of ``repeats`` after one warm-up."""
    reference, sample = speed_data(n, dims)
    return kernel_test_speed("mmd", reference, sample, device, permutations, repeats)


def frouros_speed(n: int = 200, dims: int = 512, permutations: int = 100, target_n: int = 1000,
                  target_permutations: int = 1000) -> dict[str, Any]:
    """frouros MMD + PermutationTestDistanceBased on a small case, and our detector on the same case."""
    import os
    from functools import partial

    from frouros.callbacks import PermutationTestDistanceBased
    from frouros.detectors.data_drift import MMD
    from frouros.utils.kernels import rbf_kernel

    from zeal_core.drift import create_detector

    rng = np.random.default_rng(0)
    reference = rng.standard_normal((n, dims))
    sample = rng.standard_normal((n, dims)) + 0.05
    ours = create_detector("mmd", num_permutations=permutations).fit(reference)
    ours.test(sample)
    start = time.perf_counter()
    our_result = ours.test(sample)
    our_seconds = time.perf_counter() - start
    jobs = os.cpu_count() or 1
    detector = MMD(kernel=partial(rbf_kernel, sigma=our_result.details["sigma"]),
                   callbacks=[PermutationTestDistanceBased(num_permutations=permutations, random_state=0,
                                                           num_jobs=jobs, method="conservative")])
    detector.fit(X=reference)
    start = time.perf_counter()
    _, logs = detector.compare(X=sample)
    frouros_seconds = time.perf_counter() - start
    scale = (target_permutations / permutations) * (2 * target_n / (2 * n)) ** 2
    return {"n": n, "dims": dims, "permutations": permutations, "frouros_jobs": jobs,
            "frouros_seconds": round(frouros_seconds, 3), "ours_seconds": round(our_seconds, 4),
            "speedup_same_case": round(frouros_seconds / our_seconds, 1),
            "frouros_p_value": float(logs["PermutationTestDistanceBased"]["p_value"]),
            "ours_p_value": our_result.p_value,
            "frouros_extrapolated_seconds": round(frouros_seconds * scale, 1),
            "extrapolation": f"to n={target_n} vs {target_n}, B={target_permutations}, assuming cost "
                             f"proportional to B·N² (x{scale:g}); not measured"}


def umap_speed(points: int = 1000, dims: int = 512) -> dict[str, Any]:
    """UMAP warm-up time in this process, fit on ``points`` reference points, transform of ``points``."""
    from zeal_core import projection

    start = time.perf_counter()
    projection.warm_umap(background=False)
    warm_seconds = time.perf_counter() - start
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (10, dims))
    reference = (centres[np.arange(points) % 10] + rng.standard_normal((points, dims))).astype(np.float32)
    sample = (centres[np.arange(points) % 10] + rng.standard_normal((points, dims)) + 0.3).astype(np.float32)
    start = time.perf_counter()
    projector = projection.fit_projection(reference, method="umap")
    fit_seconds = time.perf_counter() - start
    projector.transform(sample[:50])  # first transform of a new fit: small one-off costs
    start = time.perf_counter()
    projector.transform(sample)
    transform_seconds = time.perf_counter() - start
    return {"points": points, "dims": dims, "warm_seconds": round(warm_seconds, 2),
            "fit_seconds": round(fit_seconds, 2), "transform_seconds": round(transform_seconds, 3),
            "numba_cache": projection.warm_status()["numba_cache"]}


def _optional(measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``measure()``, or why it was skipped when a package it needs is missing (a lean GPU image, say)."""
    try:
        return measure()
    except ImportError as error:
        return {"skipped": f"{error.name or error} is not installed"}


# Entry points -----------------------------------------------------------------------------------------------


def bench_detectors(args: argparse.Namespace, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Run the benchmark described in the module docstring; returns a JSON-ready dict."""
    import torch

    from zeal_core.device import resolve_device
    from zeal_core.drift import list_detectors

    start = time.perf_counter()
    device = str(resolve_device(args.device))
    output: dict[str, Any] = {"device": device, "torch_threads": torch.get_num_threads(),
                              "note": "timings on a shared CPU are pessimistic; rerun on a quiet machine"}
    if not args.skip_grid:
        detectors = list(args.detectors or list_detectors())
        drift_pairs = [(name, float(severity)) for name in args.corruptions for severity in args.severities]
        cells = [(name, severity, float(fraction)) for name, severity in drift_pairs
                 for fraction in args.fractions]
        if args.source == "model":
            features, info = _model_features(args.dataset, args.model, drift_pairs, device, progress,
                                             getattr(args, "cache", None))
        else:
            features, info = _synthetic_features(drift_pairs, args.seed)
        grid = run_grid(features, detectors, args.sizes, cells, args.null_trials, args.trials, args.alpha,
                        args.permutations, args.seed, device, progress)
        output.update({"features": info, "grid": grid, "markdown": grid_markdown(grid, machine())})
    if not args.skip_speed:
        reference, sample = speed_data()  # one case for every kernel detector, in this one process
        speed: dict[str, Any] = {}
        for target in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
            for name in KERNEL_DETECTORS:
                key = f"{name.replace('-', '_')}_{target}"  # mmd_cpu, mmd_fuse_cpu, mmd_agg_cuda, ...
                speed[key] = kernel_test_speed(name, reference, sample, target)
        speed["frouros"] = _optional(lambda: frouros_speed(args.frouros_n,
                                                           permutations=args.frouros_permutations))
        speed["umap"] = _optional(umap_speed)
        output["speed"] = speed
    output["seconds"] = round(time.perf_counter() - start, 1)
    return output


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Handler of ``python -m benchmarks detectors``."""
    from zeal_core.cli import stderr_progress

    return bench_detectors(args, progress=stderr_progress)


def _show(result: dict[str, Any]) -> None:
    if "markdown" in result:
        print(result["markdown"], file=sys.stderr)
    print(json.dumps(result, default=str, indent=1))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.detectors [options]``: prints the markdown table, then the JSON."""
    return script_main(__doc__, add_arguments, run, _show, argv, prog="python -m benchmarks.detectors")


if __name__ == "__main__":
    sys.exit(main())
