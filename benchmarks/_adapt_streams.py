"""The corrupted image streams of ``python -m benchmarks adapt``, built once and cached on disk.

A stream is ``n`` validation images (a seeded draw per corruption) under one ImageNet-C corruption at one
severity, corrupted at the dataset's own size (160 px for Imagenette, as every other Imagenette benchmark
does) and then resized to the model's input size with the same antialiased bilinear resize the model's
``prepare_batch`` applies, rounded to uint8. Only the resized images are cached (safetensors, arrays only):
glass blur alone takes minutes per thousand images on two shared cores.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

STREAM_SEED_STRIDE = 7919  # corruption i of seed s draws images with s * stride + i and corrupts with it too


@dataclass(frozen=True)
class Stream:
    """One corruption's images, in stream order."""

    corruption: str  # e.g. "gaussian_noise", or "clean"
    images: torch.Tensor  # uint8 N x 3 x S x S at the model's input size
    labels: torch.Tensor  # int64 N


def to_model_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images resized to ``size`` as ``prepare_batch`` does (antialiased bilinear), rounded to uint8."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for start in range(0, images.shape[0], 256):
        part = F.interpolate(images[start:start + 256].float(), size=(size, size), mode="bilinear",
                             antialias=True, align_corners=False)
        out.append(part.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _cache_path(cache: Path, fingerprint: str, corruption: str, severity: float, n: int, seed: int,
                size: int) -> Path:
    key = hashlib.sha256(f"{fingerprint}|{corruption}|{severity}|{n}|{seed}|{size}".encode()).hexdigest()[:16]
    return cache / f"{corruption}_s{severity:g}_n{n}_seed{seed}_{size}px_{key}.safetensors"


def _larger_cached(cache: Path, fingerprint: str, corruption: str, severity: float, n: int, seed: int,
                   size: int) -> Path | None:
    """A cached stream of the same corruption, severity, seed and size with more than ``n`` images, if any.

    Its images are the same seeded permutation of the split, so its first ``n`` are a seeded draw of ``n``
    (corrupted in chunks of 256 with other noise draws than an ``n``-image build would use)."""
    for path in sorted(cache.glob(f"{corruption}_s{severity:g}_n*_seed{seed}_{size}px_*.safetensors")):
        longer = path.name[len(f"{corruption}_s{severity:g}_n"):].split("_", 1)[0]
        if not longer.isdigit() or int(longer) <= n:
            continue
        if path == _cache_path(cache, fingerprint, corruption, severity, int(longer), seed, size):
            return path
    return None


def build_stream(dataset: object, corruption: str, severity: float, n: int, seed: int, index: int, size: int,
                 cache: Path | None) -> Stream:
    """The stream of ``corruption`` (or ``"clean"``), from the cache when it is there.

    Args:
        dataset: The ``ImageDataset`` (its validation split is drawn from).
        corruption: A registered corruption name, or ``"clean"``.
        severity: Its severity.
        n: Images (all of the split when larger).
        seed: The run's seed.
        index: The corruption's position (each gets its own draw and noise).
        size: The model's input size.
        cache: Folder of cached streams, or None (no cache).
    """
    from safetensors.torch import load_file, save_file

    from zeal_core.corruptions import apply

    path = None if cache is None else _cache_path(cache, dataset.fingerprint, corruption, severity, n, seed,
                                                  size)
    if path is not None and path.exists():
        arrays = load_file(str(path))
        return Stream(corruption, arrays["images"], arrays["labels"])
    larger = (None if cache is None else
              _larger_cached(cache, dataset.fingerprint, corruption, severity, n, seed, size))
    if larger is not None:  # the same seeded draw, longer: its first n images (a prefix of the permutation)
        arrays = load_file(str(larger))
        return Stream(corruption, arrays["images"][:n].contiguous(), arrays["labels"][:n].contiguous())
    images, labels = dataset.split("val")
    stream_seed = seed * STREAM_SEED_STRIDE + index
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(stream_seed))[:n]
    picked = images[order]
    if corruption != "clean":
        picked = torch.cat([apply(picked[start:start + 256], corruption, severity, seed=stream_seed + start)
                            for start in range(0, picked.shape[0], 256)])
    stream = Stream(corruption, to_model_size(picked, size).contiguous(), labels[order].contiguous())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"images": stream.images, "labels": stream.labels}, str(path))
    log.info("stream %s:%g, %d images, seed %d%s", corruption, severity, n, seed,
             f" cached in {path}" if path else "")
    return stream


def batches(stream: Stream, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Full batches of ``stream`` in order (a last partial batch is left out)."""
    count = stream.images.shape[0] // batch_size
    return [(stream.images[i * batch_size:(i + 1) * batch_size],
             stream.labels[i * batch_size:(i + 1) * batch_size]) for i in range(count)]


def interleave(streams: list[Stream], batch_size: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """The mixed stream: batch i comes from corruption i mod k (each corruption's batches in order)."""
    per_stream = [batches(stream, batch_size) for stream in streams]
    rounds = max((len(parts) for parts in per_stream), default=0)
    mixed = []
    for position in range(rounds):
        for stream, parts in zip(streams, per_stream, strict=True):
            if position < len(parts):
                mixed.append((stream.corruption, *parts[position]))
    return mixed
