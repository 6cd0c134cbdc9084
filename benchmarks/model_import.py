"""``bench import``: how long importing a checkpoint takes, split into read, check, data, build, evaluate.

The checkpoint is a registry version exported to a temporary folder in each format (``safetensors`` and a
``torch.save`` state dict, as a user would bring it) or a file given with ``--weights``. Each format is
imported ``--trials`` times into a temporary registry (the registry in use is never written), after one
warm-up import that is not counted (the first import in a process pays one-time allocations). Every stage
is reported as mean, standard error and minimum over the trials, together with the machine (CPU count,
torch threads, load average before and after: above the CPU count means other processes shared the cores).

Run: ``python -m benchmarks import --version active --json``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import script_main

STAGES = ("read", "check", "data", "build", "head", "evaluate", "save", "total")


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--version", default="active", help="registry version to export and re-import "
                                                            "(default: the active one)")
    source.add_argument("--weights", help="a checkpoint file to import instead")
    parser.add_argument("--arch", help="timm name (default: the version's, or the file's metadata)")
    parser.add_argument("--dataset", help="dataset to evaluate on (default: the version's)")
    parser.add_argument("--image-size", type=int, help="input side in px (default: the version's)")
    parser.add_argument("--formats", nargs="+", default=["safetensors", "state-dict"],
                        help="export formats to import (with --version)")
    parser.add_argument("--trials", type=int, default=3, help="counted imports per format (default 3)")
    parser.add_argument("--reset-head", action="store_true", help="also fit a new head (adds its stage)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``bench import``."""
    bench = actions.add_parser("import", parents=[parent], help="seconds to import a checkpoint, by stage",
                               description=__doc__.split("\n\n")[0])
    _add_arguments(bench)
    bench.set_defaults(handler=run)


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _stage_summary(trials: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    summary = {}
    for stage in STAGES:
        values = [trial[stage] for trial in trials if stage in trial]
        if not values:
            continue
        se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
        summary[stage] = {"mean_s": round(statistics.fmean(values), 3), "se_s": round(se, 3),
                          "min_s": round(min(values), 3)}
    return summary


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Import the checkpoint(s) and time every stage."""
    import torch

    from zeal_core.device import describe_device, resolve_device
    from zeal_core.errors import ConfigError
    from zeal_core.importing import import_checkpoint
    from zeal_core.jsonable import to_jsonable
    from zeal_core.models.export import export_version
    from zeal_core.models.registry import ModelRegistry

    if args.trials < 1:
        raise ConfigError(f"--trials must be >= 1, not {args.trials}")
    device = resolve_device(args.device)
    result: dict[str, Any] = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                              "device": describe_device(device), "load_average_before": _load_average(),
                              "trials": args.trials, "warmup_trials": 1, "formats": {}}
    with tempfile.TemporaryDirectory(prefix="zeal-bench-import-") as scratch:
        files: dict[str, Path] = {}
        options: dict[str, Any] = {"arch": args.arch, "dataset": args.dataset, "image_size": args.image_size}
        if args.weights:
            files[Path(args.weights).suffix.lstrip(".") or "file"] = Path(args.weights)
        else:
            source = ModelRegistry()
            card = source.card(source.resolve(args.version))
            result["version"] = card.version
            options = {"arch": args.arch or card.model_config.arch, "dataset": args.dataset or card.dataset,
                       "image_size": args.image_size or card.model_config.image_size,
                       "class_names": card.class_names}
            for export_format in args.formats:
                exported = export_version(card.version, Path(scratch) / export_format, export_format)
                files[export_format] = Path(exported["weights"])
        if not options["dataset"]:
            raise ConfigError("give --dataset to import a --weights file")
        for name, path in files.items():
            registry = ModelRegistry(Path(scratch) / f"registry-{name}")
            trials = []
            for trial in range(args.trials + 1):
                start = time.perf_counter()
                card = import_checkpoint(path, reset_head=args.reset_head, registry=registry, device=device,
                                         **options)
                wall = time.perf_counter() - start
                if trial > 0:  # the first is the warm-up
                    trials.append({**card.metrics["import_seconds"], "wall": wall})
                registry.delete(card.version)
            result["formats"][name] = {"file": path.name, "bytes": path.stat().st_size,
                                       "val_n": card.metrics["val_n"],
                                       "val_accuracy": card.metrics["val_accuracy"],
                                       "image_size": card.model_config.image_size, "dataset": card.dataset,
                                       "stages": _stage_summary(trials), "trials": trials}
    result["load_average_after"] = _load_average()
    loads = [value for value in (result["load_average_before"], result["load_average_after"]) if value]
    result["under_load"] = bool(loads) and max(loads) > (os.cpu_count() or 1)
    return to_jsonable(result, nan_to_none=True)


def _show(result: dict[str, Any]) -> None:
    print(f"{result['device']}, {result['cpu_count']} CPUs, load {result['load_average_before']} -> "
          f"{result['load_average_after']}{' (under load)' if result['under_load'] else ''}; "
          f"{result['trials']} trials after 1 warm-up")
    for name, entry in result["formats"].items():
        stages = ", ".join(f"{stage} {value['mean_s']:.2f} ± {value['se_s'] or 0:.2f}"
                           for stage, value in entry["stages"].items())
        print(f"{name} ({entry['file']}, {entry['val_n']} val images at {entry['image_size']} px): "
              f"{stages} s")


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.model_import``."""
    return script_main(__doc__, _add_arguments, run, _show, argv,
                       prog="python -m benchmarks.model_import")


if __name__ == "__main__":
    raise SystemExit(main())
