"""``bench corruptions``: our batched corruptions against the reference ``imagecorruptions`` package.

Two parts, both on the same images (Imagenette val when it is prepared, otherwise up-sampled digits):

- speed: images/s of ``apply`` on one batch of ``n`` images per corruption (severity 3), and of the reference
  looping over the same images one by one; the speed-up is their ratio;
- validation (``--validate``): for every corruption and severity 1-5, mean SSIM to the clean images for ours
  and for the reference, and the difference.

The reference (``benchmarks._corruption_reference``, a shim over the ``imagecorruptions`` package,
imported only when the reference is asked for) is only used here and in tests. Run from the project root:
``python -m benchmarks corruptions [--n 512] [--validate]`` or ``python -m benchmarks.corruptions``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import script_main
from benchmarks._harness import Table, caption, machine, tables
from zeal_core.corruptions import apply, list_corruptions
from zeal_core.corruptions.metrics import ssim
from zeal_core.device import describe_device, resolve_device
from zeal_core.errors import ConfigError
from zeal_core.progress import ProgressCallback, ProgressEvent
from zeal_core.sampling import seeded_subset

SSIM_TOLERANCE = 0.05  # the "5 points", read as mean SSIM


def _load_reference() -> tuple[Any, str | None]:
    """The reference shim module, or None and the reason it cannot be used (how to install it)."""
    from benchmarks import _corruption_reference as corruption_reference

    reason = corruption_reference.unavailable_reason()
    return (corruption_reference, None) if reason is None else (None, reason)


def benchmark_images(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, str]:
    """``n`` uint8 images (n x 3 x size x size) and a note saying where they come from.

    Imagenette val images when ``load_dataset("imagenette")`` has them; otherwise sklearn digits up-sampled
    (bilinear) to ``size``, which are far simpler images, so speeds and SSIMs are only indicative.
    """
    from zeal_core.data import is_prepared, load_dataset

    try:
        if is_prepared("imagenette"):
            images, _ = load_dataset("imagenette").split("val")
            note = "Imagenette val images"
        else:
            raise LookupError
    except Exception:
        images, _ = load_dataset("digits").split("val")
        note = ("sklearn digits up-sampled (Imagenette is not prepared: run `python -m zeal_core data "
                "prepare --dataset imagenette` for the real numbers)")
    pick = seeded_subset(images.shape[0], n, seed)
    if pick.numel() < n:  # fewer images than asked: repeat them
        pick = pick.repeat(n // max(1, pick.numel()) + 1)[:n]
    chosen = images[pick]
    if chosen.shape[-1] != size or chosen.shape[-2] != size:
        chosen = F.interpolate(chosen.float(), size=(size, size), mode="bilinear", align_corners=False,
                               antialias=True).round().clamp(0, 255).to(torch.uint8)
    return chosen.contiguous(), f"{note}, {size} px"


def _to_numpy(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _from_numpy(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def _time_reference(shim: Any, images: np.ndarray, name: str, severity: int,
                    max_seconds: float) -> tuple[float, int]:
    """Reference images/s over the first images that fit in ``max_seconds`` (at least 2 images)."""
    start = time.perf_counter()
    done = 0
    for image in images:
        shim.reference_corrupt(image[None], name, severity, seed=done)
        done += 1
        if done >= 2 and time.perf_counter() - start > max_seconds:
            break
    return done / (time.perf_counter() - start), done


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_corruption_benchmark(
    n: int = 512,
    size: int = 160,
    names: list[str] | None = None,
    severity: int = 3,
    device: str = "cpu",
    reference: bool = True,
    reference_max_seconds: float = 60.0,
    validate: bool = False,
    validate_n: int = 64,
    validate_sizes: tuple[int, ...] = (160,),
    speed: bool = True,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Speed (and optionally SSIM agreement) of our corruptions against the reference.

    Args:
        n: images in the timed batch.
        size: image side in px.
        names: corruptions to run (default: all).
        severity: level timed (1-5).
        device: ``cpu``, ``cuda`` or ``auto`` for ours; the reference always runs on the CPU.
        reference: also time the reference (needs ``imagecorruptions``).
        reference_max_seconds: stop timing the reference on a corruption after this long (its rate is
            measured on the images done so far; glass_blur takes about 0.4 s per image).
        validate: also build the SSIM table (severities 1-5) on ``validate_n`` images per size.
        validate_n: images per corruption and severity in the SSIM table.
        validate_sizes: image sides for the SSIM table (224 compares identical constants).
        speed: time the corruptions (off: only the SSIM table).
        progress: receives one event per corruption.

    Returns:
        JSON-ready dict with the per-corruption rows, the mean and minimum speed-ups and a markdown table.
    """
    chosen = names or list_corruptions()
    for name in chosen:
        if name not in list_corruptions():
            raise ConfigError(f"unknown corruption {name!r}: use one of {', '.join(list_corruptions())}")
    torch_device = resolve_device(device)
    shim, missing = _load_reference() if reference else (None, None)
    images, source = benchmark_images(n, size)
    images_device = images.to(torch_device)
    images_numpy = _to_numpy(images)
    rows = []
    for index, name in enumerate(chosen if speed else []):
        apply(images_device[:8], name, severity)  # warm-up: kernels, caches (frost textures)
        _sync(torch_device)
        start = time.perf_counter()
        apply(images_device, name, severity, seed=1)
        _sync(torch_device)
        ours = n / (time.perf_counter() - start)
        row: dict[str, Any] = {"name": name, "ours_images_per_s": round(ours, 1)}
        if shim is not None:
            ref_rate, ref_done = _time_reference(shim, images_numpy, name, severity, reference_max_seconds)
            row.update(reference_images_per_s=round(ref_rate, 2), reference_images_timed=ref_done,
                       speedup=round(ours / ref_rate, 2))
        rows.append(row)
        if progress:
            progress(ProgressEvent("bench corruptions", index + 1, len(chosen), f"{name}: {row}"))
    result: dict[str, Any] = {
        "device": describe_device(torch_device),
        "torch_threads": torch.get_num_threads(),
        "images": source,
        "n": n,
        "severity": severity,
        "rows": rows,
        "note": "timed once per corruption; on a shared CPU numbers are pessimistic: rerun on a quiet one",
    }
    if missing:
        result["reference_skipped"] = missing
    speedups = [row["speedup"] for row in rows if "speedup" in row]
    if speedups:
        result["mean_speedup"] = round(float(np.mean(speedups)), 2)
        result["geometric_mean_speedup"] = round(float(np.exp(np.mean(np.log(speedups)))), 2)
        result["min_speedup"] = round(min(speedups), 2)
        result["slower_than_reference"] = [row["name"] for row in rows if row.get("speedup", 1.0) < 1.0]
    if validate and shim is not None:
        result["validation"] = {
            str(side): validation_table(shim, chosen, validate_n, side, progress) for side in validate_sizes
        }
    result["machine"] = machine()
    result["markdown"] = format_markdown(result)
    return result


def validation_table(shim: Any, names: list[str], n: int, size: int,
                     progress: ProgressCallback | None = None) -> list[dict[str, Any]]:
    """Mean SSIM to clean, ours and reference, per corruption and severity 1-5, on ``n`` images."""
    images, _ = benchmark_images(n, size, seed=1)
    clean_numpy = _to_numpy(images)
    table = []
    for index, name in enumerate(names):
        for severity in range(1, 6):
            ours = apply(images, name, severity, seed=severity).cpu()
            reference = _from_numpy(shim.reference_corrupt(clean_numpy, name, severity, seed=severity))
            ours_ssim = float(ssim(ours, images).mean())
            reference_ssim = float(ssim(reference, images).mean())
            table.append({"name": name, "severity": severity, "size": size, "ours_ssim": round(ours_ssim, 4),
                          "reference_ssim": round(reference_ssim, 4),
                          "difference": round(ours_ssim - reference_ssim, 4)})
        if progress:
            progress(ProgressEvent("validate corruptions", index + 1, len(names), f"{size} px: {name}"))
    return table


def format_markdown(result: dict[str, Any]) -> str:
    """The speed table and (when present) the SSIM tables as markdown."""
    blocks: list[Table | str] = []
    if result["rows"]:
        blocks.append(Table(("corruption", "ours img/s", "reference img/s", "speed-up"), [
            (row["name"], f"{row['ours_images_per_s']:.0f}", row.get("reference_images_per_s", "-"),
             row.get("speedup", "-")) for row in result["rows"]], caption(
            f"Speed, {result['images']}, severity {result['severity']}, {result['device']}", n=result["n"],
            machine_record=result.get("machine")), align="lrrr"))
    if "mean_speedup" in result:
        blocks.append(f"mean speed-up {result['mean_speedup']}x (geometric "
                      f"{result['geometric_mean_speedup']}x), minimum {result['min_speedup']}x")
    for size, table in result.get("validation", {}).items():
        by_name: dict[str, list[str]] = {}
        for entry in table:
            flag = " !" if abs(entry["difference"]) > SSIM_TOLERANCE else ""
            by_name.setdefault(entry["name"], []).append(
                f"{entry['ours_ssim']:.3f} / {entry['reference_ssim']:.3f} "
                f"({entry['difference']:+.3f}){flag}")
        blocks.append(Table(("corruption", "1", "2", "3", "4", "5"),
                            [(name, *cells) for name, cells in by_name.items()],
                            f"Mean SSIM to clean at {size} px, ours / reference (difference):"))
    return tables(*blocks)


def _handler(args: argparse.Namespace) -> dict[str, Any]:
    from zeal_core.cli import stderr_progress

    if args.threads:
        torch.set_num_threads(args.threads)
    return run_corruption_benchmark(
        n=args.n, size=args.size, names=args.names.split(",") if args.names else None, severity=args.severity,
        device=args.device, reference=not args.no_reference, reference_max_seconds=args.reference_seconds,
        validate=args.validate or args.validate_only, validate_n=args.validate_n,
        validate_sizes=tuple(int(side) for side in args.validate_sizes.split(",")),
        speed=not args.validate_only,
        progress=stderr_progress)


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``bench corruptions`` (the extension point of ``benchmarks._actions``)."""
    sub = actions.add_parser("corruptions", parents=[parent],
                             help="corruption speed and SSIM against imagecorruptions")
    _add_arguments(sub)
    sub.set_defaults(handler=_handler)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=512, help="images in the timed batch")
    parser.add_argument("--size", type=int, default=160, help="image side in px")
    parser.add_argument("--names", default="", help="comma-separated corruptions (default: all)")
    parser.add_argument("--severity", type=int, default=3, help="severity timed")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (ours; the reference is CPU)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads for ours (default: torch default; reference: 1 thread)")
    parser.add_argument("--no-reference", action="store_true", help="time ours only")
    parser.add_argument("--reference-seconds", type=float, default=60.0,
                        help="time budget per corruption for the reference (rate over the images done)")
    parser.add_argument("--validate", action="store_true", help="also the SSIM table, severities 1-5")
    parser.add_argument("--validate-only", action="store_true",
                        help="only the SSIM table (implies --validate)")
    parser.add_argument("--validate-n", type=int, default=64, help="images per cell of the SSIM table")
    parser.add_argument("--validate-sizes", default="160", help="comma-separated sides for the SSIM table")


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.corruptions``: the markdown tables on stdout (``--json`` for the dict)."""
    return script_main(__doc__, _add_arguments, _handler, lambda result: print(result["markdown"]), argv,
                       prog="python -m benchmarks.corruptions")


if __name__ == "__main__":
    raise SystemExit(main())
