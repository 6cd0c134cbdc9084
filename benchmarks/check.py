"""``bench check``: what ``python -m zeal_core check`` costs from cron, and how often it is right.

Speed (the way cron runs it): a folder of ``--files`` held-out PNGs is checked by ``python -m zeal_core check
FOLDER --json`` in a new process each time. The first run may fit the model's reference and its diagnosis
warm-up (kept on disk next to the model); every later run loads them. Beside it, in the same run and
interleaved with the checks (so both see the same machine load), ``python -c "import torch, timm"`` gives the
baseline: the cost of merely starting Python with the libraries any check needs. Target: the median later
check at most 1.6x the median baseline (and at most 10 s for Imagenette). Each run's own ``timings`` (decode,
embed, detectors, ...) are reported too, with the CPU seconds of both (less sensitive to a shared machine).

Calibration and power: ``--trials`` clean batches of ``--n`` images drawn from the held-out sample half, and
as many under ``--drift`` (default gaussian_noise:3 on every image), each checked with the standard profile's
decision rule (Bonferroni at its alpha). The false-positive rate comes with its binomial standard error; the
target is at most alpha + 2 SE. The batches go through the service's reference directly: the command decodes
lossless PNGs of the same pixels first, which changes nothing the check sees.

Run: ``python -m benchmarks check --json`` (digits; ``--dataset imagenette --model VERSION`` needs the
prepared data and a model for it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import script_main

BASELINE = "import torch, timm"  # what every check must import anyway


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``bench check``."""
    bench = actions.add_parser("check", parents=[parent], description=__doc__.split("\n\n")[0],
                               help="the check command from cron: time in new processes, false alarms, power")
    add_arguments(bench)
    bench.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--dataset", default="digits", help="dataset (default digits)")
    parser.add_argument("--model", default=None, help="model version (default: the newest for the dataset; "
                        "a digits model is trained when there is none)")
    parser.add_argument("--files", type=int, default=200, help="PNG files in the folder (default 200)")
    parser.add_argument("--repeats", type=int, default=5, help="new-process checks and baselines (default 5)")
    parser.add_argument("--n", type=int, default=100, help="images per calibration batch (default 100)")
    parser.add_argument("--trials", type=int, default=200, help="clean and drifted batches (default 200)")
    parser.add_argument("--drift", default="gaussian_noise:3", help="drift of the power batches")
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


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, its stdout) of one new process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}")
    return wall, cpu, done.stdout


def speed(version: str, dataset: str, files: int, repeats: int) -> dict[str, Any]:
    """New-process checks of one folder of ``files`` PNGs beside ``import torch, timm`` baselines."""
    from zeal_core.data import shared_dataset
    from zeal_core.embed import part_positions

    images, _ = shared_dataset(dataset).split("val")
    positions = part_positions(images.shape[0], "sample")[:files]
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "batch"
        folder.mkdir()
        _write_pngs(folder, images[torch.from_numpy(positions)])
        env["ZEAL_STATE_DIR"] = str(Path(tmp) / "state")  # the checks' history: not the user's
        check = [sys.executable, "-m", "zeal_core", "check", str(folder), "--model", version, "--json"]
        first_wall, first_cpu, out = _timed(check, env)
        first = json.loads(out)
        baseline, later = [], []
        for _ in range(repeats):  # interleaved: both see the same load
            baseline.append(_timed([sys.executable, "-c", BASELINE], env)[:2])
            wall, cpu, out = _timed(check, env)
            later.append((wall, cpu, json.loads(out)))
    base_wall = statistics.median(wall for wall, _ in baseline)
    base_cpu = statistics.median(cpu for _, cpu in baseline)
    check_wall = statistics.median(wall for wall, _, _ in later)
    check_cpu = statistics.median(cpu for _, cpu, _ in later)
    return {
        "files": len(positions), "repeats": repeats, "baseline_command": f"python -c {BASELINE!r}",
        "first_check_s": round(first_wall, 3), "first_check_cpu_s": round(first_cpu, 3),
        "first_check_timings": first["timings"],
        "baseline_s": round(base_wall, 3), "baseline_cpu_s": round(base_cpu, 3),
        "check_s": round(check_wall, 3), "check_cpu_s": round(check_cpu, 3),
        "check_over_baseline": round(check_wall / base_wall, 3),
        "check_over_baseline_cpu": round(check_cpu / base_cpu, 3),
        "check_all_s": [round(wall, 3) for wall, _, _ in later],
        "baseline_all_s": [round(wall, 3) for wall, _ in baseline],
        "check_timings": later[len(later) // 2][2]["timings"],
        "settings": first["settings"], "drift": first["drift"],
        "target": "median later check <= 1.6x median baseline (Imagenette: <= 10 s)",
    }


def calibration(version: str, n: int, trials: int, drift: str) -> dict[str, Any]:
    """False-positive rate on clean held-out batches and detection rate under ``drift`` (standard profile)."""
    from zeal_core.service import CheckService

    reference = CheckService("standard").reference(version)
    alpha = reference.config.alpha
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
        out["speed"] = speed(version, args.dataset, args.files, args.repeats)
    if not args.skip_calibration:
        out["calibration"] = calibration(version, args.n, args.trials, args.drift)
    out["load_average_end"] = os.getloadavg()[0]
    return out


def show(result: dict[str, Any]) -> None:
    """Print the result for people."""
    if "speed" in result:
        part = result["speed"]
        print(f"first check of {part['files']} PNGs (may fit and keep the reference): "
              f"{part['first_check_s']:.2f} s")
        print(f"later checks, new process each, median of {part['repeats']}: {part['check_s']:.2f} s "
              f"({part['check_cpu_s']:.2f} s CPU); python -c {BASELINE!r}: {part['baseline_s']:.2f} s "
              f"({part['baseline_cpu_s']:.2f} s CPU)")
        print(f"check / baseline: {part['check_over_baseline']:.2f} wall, "
              f"{part['check_over_baseline_cpu']:.2f} CPU (target <= 1.6)")
        print("inside the check: " + ", ".join(f"{key} {value:.2f} s"
                                               for key, value in part["check_timings"].items()))
    if "calibration" in result:
        part = result["calibration"]
        print(f"clean batches of {part['n']}: flagged {part['false_positive_rate']:.3f} over "
              f"{part['trials']} trials (alpha {part['alpha']}, SE {part['standard_error_at_alpha']})")
        print(f"{part['drift']}: flagged {part['detection_rate']:.3f}")
    print(f"load average {result['load_average_start']:.1f} -> {result['load_average_end']:.1f}")


if __name__ == "__main__":
    raise SystemExit(script_main(__doc__.split("\n\n")[0], add_arguments, run, show))
