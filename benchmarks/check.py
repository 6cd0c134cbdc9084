"""``bench check``: what ``python -m zeal_core check`` costs and how often it is right.

Speed: a folder of PNG files (``--files`` held-out images of the dataset) is checked twice in one process,
exactly as the command does it (find, decode, fitted reference, check, record): the first check fits the
reference (embeds the split, fits every detector), the second reuses it. The output splits each into fit,
decode, embed, detectors, typical (per-image scores) and record, beside the total.

Calibration and power: ``--trials`` clean batches of ``--n`` images drawn from the held-out sample half, and
as many under ``--drift`` (default gaussian_noise:3 on every image), each checked with the command's decision
rule (every detector, Bonferroni at ``--alpha``). The false-positive rate comes with its binomial standard
error; the target is at most alpha + 2 SE. The batches go through ``FittedReference.check`` directly: the
command decodes lossless PNGs of the same pixels first, which changes nothing the check sees.

Run: ``python -m benchmarks check --json`` (digits; ``--dataset imagenette`` needs the prepared data and
a model for it).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import script_main


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``bench check``."""
    bench = actions.add_parser("check", parents=[parent], description=__doc__.split("\n\n")[0],
                               help="the check command: time split, false-positive rate and power")
    add_arguments(bench)
    bench.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--dataset", default="digits", help="dataset (default digits)")
    parser.add_argument("--model", default=None, help="model version (default: the newest for the dataset; "
                        "a digits model is trained when there is none)")
    parser.add_argument("--files", type=int, default=200, help="PNG files in the timed folder (default 200)")
    parser.add_argument("--n", type=int, default=100, help="images per calibration batch (default 100)")
    parser.add_argument("--trials", type=int, default=200, help="clean and drifted batches (default 200)")
    parser.add_argument("--drift", default="gaussian_noise:3", help="drift of the power batches")
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise level (default 0.05)")
    parser.add_argument("--skip-speed", action="store_true", help="calibration and power only")
    parser.add_argument("--skip-calibration", action="store_true", help="speed only")


def _model(dataset: str, version: str | None) -> str:
    from zeal_core.models.registry import ModelRegistry

    registry = ModelRegistry()
    if version:
        return registry.resolve(version)
    card = registry.latest(dataset)
    if card is not None:
        return card.version
    if dataset != "digits":
        raise SystemExit(f"no model for {dataset}: train one first (python -m zeal_core train --dataset "
                         f"{dataset})")
    from benchmarks.app import seed_model

    return seed_model(registry.root, epochs=None)


def _write_pngs(folder: Path, images: torch.Tensor) -> None:
    from PIL import Image

    for index, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"held_out_{index:04d}.png")


def _one_check(folder: Path, version: str, alpha: float) -> dict[str, float]:
    """The command's steps, each timed (s)."""
    from zeal_core.data.files import decode_paths, find_images
    from zeal_core.history import HistoryStore, record_check
    from zeal_core.reference import ReferenceConfig, get_reference

    times: dict[str, float] = {}
    start = time.perf_counter()
    paths, _ = find_images([str(folder)])
    mark = time.perf_counter()
    reference = get_reference(version, config=ReferenceConfig(alpha=alpha), device="cpu")
    times["fit_reference"] = time.perf_counter() - mark
    mark = time.perf_counter()
    images, names, skipped = decode_paths(paths, reference.image_size)
    times["decode"] = time.perf_counter() - mark
    report = reference.check(images, file_names=names, skipped=skipped, parts=("detectors", "typical"))
    times.update({key: report.timings[key] for key in ("embed", "detectors", "typical")})
    mark = time.perf_counter()
    record_check(report, images=images, store=HistoryStore(folder.parent / "history.sqlite"), origin="cli",
                 max_side=reference.source.card.model_config.image_size)
    times["record"] = time.perf_counter() - mark
    times["total"] = time.perf_counter() - start
    times["drift"] = float(bool(report.drift))
    return {key: round(value, 4) for key, value in times.items()}


def speed(version: str, dataset: str, files: int, alpha: float) -> dict[str, Any]:
    """Two checks of one folder of ``files`` PNGs; the second reuses the fitted reference."""
    from zeal_core.data import shared_dataset
    from zeal_core.embed import part_positions
    from zeal_core.reference import forget_references

    images, _ = shared_dataset(dataset).split("val")
    positions = part_positions(images.shape[0], "sample")[:files]
    forget_references()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "batch"
        folder.mkdir()
        _write_pngs(folder, images[torch.from_numpy(positions)])
        first = _one_check(folder, version, alpha)
        second = _one_check(folder, version, alpha)
    return {"files": len(positions), "first": first, "second": second,
            "second_over_first": round(second["total"] / first["total"], 3),
            "target": "second check <= 1/3 of the first"}


def calibration(version: str, n: int, trials: int, drift: str, alpha: float) -> dict[str, Any]:
    """False-positive rate on clean held-out batches and detection rate under ``drift``."""
    from zeal_core.reference import ReferenceConfig, get_reference

    reference = get_reference(version, config=ReferenceConfig(alpha=alpha), device="cpu")
    start = time.perf_counter()
    clean = [reference.check("clean", n=n, seed=10_000 + trial, parts=("detectors",))
             for trial in range(trials)]
    drifted = [reference.check(drift, n=n, seed=20_000 + trial, parts=("detectors",))
               for trial in range(trials)]
    false_positive = float(np.mean([report.decision.drift for report in clean]))
    detection = float(np.mean([report.decision.drift for report in drifted]))
    se = math.sqrt(alpha * (1 - alpha) / trials)

    def per_detector(reports: list) -> dict[str, float]:
        names = [result.detector for result in reports[0].results]
        return {name: float(np.mean([report.result(name).p_value < report.decision.threshold
                                     for report in reports])) for name in names}

    return {"n": n, "trials": trials, "alpha": alpha, "rule": clean[0].decision.rule,
            "false_positive_rate": false_positive, "standard_error_at_alpha": round(se, 4),
            "within_alpha_plus_2se": false_positive <= alpha + 2 * se,
            "drift": drift, "detection_rate": detection,
            "detection_standard_error": round(math.sqrt(max(detection * (1 - detection), 1e-12) / trials), 4),
            "per_detector_clean": per_detector(clean), "per_detector_drift": per_detector(drifted),
            "reference_n": reference.reference_n, "seconds": round(time.perf_counter() - start, 1)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The benchmark; the machine and load are stated with the numbers."""
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    version = _model(args.dataset, args.model)
    out: dict[str, Any] = {"dataset": args.dataset, "version": version,
                           "machine": f"{os.cpu_count()} CPUs visible, torch {torch.get_num_threads()} "
                                      "threads, no GPU",
                           "load_average_start": os.getloadavg()[0]}
    if not args.skip_speed:
        out["speed"] = speed(version, args.dataset, args.files, args.alpha)
    if not args.skip_calibration:
        out["calibration"] = calibration(version, args.n, args.trials, args.drift, args.alpha)
    out["load_average_end"] = os.getloadavg()[0]
    return out


def show(result: dict[str, Any]) -> None:
    """Print the result for people."""
    if "speed" in result:
        speed_part = result["speed"]
        for which in ("first", "second"):
            parts = ", ".join(f"{key} {value:.2f} s" for key, value in speed_part[which].items()
                              if key != "drift")
            print(f"{which} check of {speed_part['files']} PNGs: {parts}")
        print(f"second / first: {speed_part['second_over_first']:.2f} (target <= 0.33)")
    if "calibration" in result:
        part = result["calibration"]
        print(f"clean batches of {part['n']}: flagged {part['false_positive_rate']:.3f} over "
              f"{part['trials']} trials (alpha {part['alpha']}, SE {part['standard_error_at_alpha']})")
        print(f"{part['drift']}: flagged {part['detection_rate']:.3f}")
    print(f"load average {result['load_average_start']:.1f} -> {result['load_average_end']:.1f}")


if __name__ == "__main__":
    raise SystemExit(script_main(__doc__.split("\n\n")[0], add_arguments, run, show))
