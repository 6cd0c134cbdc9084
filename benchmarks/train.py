"""``bench train``: the reference recipe against ours, in one process, on the same data.

- reference: the original project's pipeline: ImageFolder-style samples decoded by PIL in a torchvision
  ``DataLoader`` (RandomResizedCrop 224 + flip, ToTensor, Normalize), fp32, AdamW lr 1e-3, wd 0.01,
  batch 64, label smoothing 0.1;
- ours: ``zeal_core.train.train_model`` with the dataset's default recipe (uint8 data on the device, batch
  augmentation there, bf16/channels-last on CUDA).

Both print training images/s (validation excluded) and time-to-accuracy (training seconds until the first
per-epoch validation at or above ``--target``). ``--max-seconds`` bounds each run's training time so the
benchmark fits a CPU; a run stopped by it reports the accuracy it reached.

Data: ``digits`` is embedded (the reference gets the same images as PNG files in memory). ``imagenette``
reads the prepared cache (ours) and the raw archive ``data_dir()/imagenette2-160.tgz`` or an extracted
``imagenette2-160`` folder (reference, decoding the JPEGs itself); where they are absent the run is skipped
with a message. Run: ``python -m benchmarks train --dataset digits --json``.
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from zeal_core.errors import DataError
from zeal_core.sampling import seeded_subset

TARGETS = {"digits": 0.97, "imagenette": 0.70}  # default time-to-accuracy targets (val top-1 share)


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``bench train``."""
    bench = actions.add_parser("train", parents=[parent], help="reference recipe vs ours: images/s, "
                               "time-to-accuracy", description=__doc__.split("\n\n")[0])
    bench.add_argument("--dataset", choices=("digits", "imagenette"), default="digits")
    bench.add_argument("--max-seconds", type=float, default=120.0,
                       help="training-time budget per run, s (default 120)")
    bench.add_argument("--target", type=float, help="val accuracy for time-to-accuracy "
                       "(default 0.97 digits, 0.70 imagenette)")
    bench.add_argument("--epochs", type=int, help="our recipe's epochs (default: the dataset's)")
    bench.add_argument("--image-size", type=int, help="our recipe's input size (default: the dataset's)")
    bench.add_argument("--reference-epochs", type=int, default=10, help="reference epochs (default 10)")
    bench.add_argument("--reference-workers", type=int, default=min(2, os.cpu_count() or 1),
                       help="DataLoader worker processes for the reference")
    bench.add_argument("--val-limit", type=int, help="validate both runs on this many val images (seeded "
                       "subset; default all)")
    bench.add_argument("--reference-source", help="an extracted imagenette2-160 folder or the .tgz archive")
    bench.add_argument("--skip-reference", action="store_true", help="run ours only")
    bench.add_argument("--skip-ours", action="store_true", help="run the reference only")
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    bench.set_defaults(handler=run)


# The reference pipeline ------------------------------------------------------------------------------------


class EncodedImageFolder(torch.utils.data.Dataset):
    """ImageFolder-style samples held as encoded files (PNG/JPEG bytes); PIL decodes one per ``__getitem__``.

    The bytes stand in for the files on disk (in the page cache after the first epoch), so the work per
    sample is the reference's: PIL decode, RGB convert, torchvision transforms.
    """

    def __init__(self, samples: list[tuple[bytes, int]], transform: Any) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        data, label = self.samples[index]
        with Image.open(io.BytesIO(data)) as image:
            return self.transform(image.convert("RGB")), label


def _png_samples(images: torch.Tensor, labels: torch.Tensor) -> list[tuple[bytes, int]]:
    from PIL import Image

    samples = []
    for image, label in zip(images, labels.tolist(), strict=True):
        buffer = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
        samples.append((buffer.getvalue(), int(label)))
    return samples


def _imagenette_samples(source: Path) -> dict[str, list[tuple[bytes, int]]]:
    """Encoded JPEGs per split from an extracted folder or the .tgz (read front to back, never extracted)."""
    from zeal_core.data.imagenette import WNID_NAMES

    class_index = {wnid: index for index, wnid in enumerate(sorted(WNID_NAMES))}
    splits: dict[str, list[tuple[bytes, int]]] = {"train": [], "val": []}
    if source.is_dir():
        for split in splits:
            for wnid, index in class_index.items():
                for path in sorted((source / split / wnid).glob("*")):
                    splits[split].append((path.read_bytes(), index))
        return splits
    with tarfile.open(source, "r:gz") as archive:
        for member in archive:
            parts = Path(member.name).parts
            wanted = len(parts) >= 4 and parts[-3] in splits and parts[-2] in class_index
            if not member.isfile() or not wanted:
                continue
            file = archive.extractfile(member)
            if file is not None:
                splits[parts[-3]].append((file.read(), class_index[parts[-2]]))
    return splits


def _find_imagenette_source(explicit: str | None) -> Path | None:
    from zeal_core.paths import PROJECT_ROOT, data_dir

    candidates = [Path(explicit)] if explicit else [
        data_dir() / "imagenette2-160", data_dir() / "imagenette2-160.tgz",
        PROJECT_ROOT.parent / "shared" / "data" / "imagenette2-160.tgz",
    ]
    for path in candidates:
        if (path.is_dir() and (path / "train").is_dir()) or path.is_file():
            return path
    return None


def run_reference(train_samples: list[tuple[bytes, int]], val_samples: list[tuple[bytes, int]],
                  num_classes: int, *, epochs: int, max_seconds: float, target: float, workers: int,
                  device: torch.device) -> dict[str, Any]:
    """Train the reference recipe; returns images/s, time-to-target and the accuracy reached."""
    import timm
    from torchvision import transforms

    normalize = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    crop_flip = [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
    train_transform = transforms.Compose([*crop_flip, transforms.ToTensor(), normalize])
    val_transform = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(), normalize])
    loader_options = {"num_workers": workers, "persistent_workers": workers > 0,
                      "pin_memory": device.type == "cuda"}
    train_loader = torch.utils.data.DataLoader(EncodedImageFolder(train_samples, train_transform),
                                               batch_size=64, shuffle=True, drop_last=True, **loader_options)
    val_loader = torch.utils.data.DataLoader(EncodedImageFolder(val_samples, val_transform), batch_size=64,
                                             **loader_options)
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=num_classes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

    def validate() -> float:
        model.eval()
        correct = 0
        with torch.inference_mode():
            for inputs, labels in val_loader:
                predictions = model(inputs.to(device)).argmax(dim=1).cpu()
                correct += int((predictions == labels).sum())
        model.train()
        return correct / len(val_samples)

    train_seconds, images, accuracy, time_to_target, epochs_run = 0.0, 0, None, None, 0
    stopped = False
    for _ in range(epochs):
        model.train()
        tick = time.perf_counter()  # loading time counts: it is the reference's bottleneck
        for inputs, labels in train_loader:
            loss = F.cross_entropy(model(inputs.to(device)), labels.to(device), label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images += labels.shape[0]
            now = time.perf_counter()
            train_seconds += now - tick
            tick = now
            if train_seconds >= max_seconds:
                stopped = True
                break
        epochs_run += 1
        accuracy = validate()
        if time_to_target is None and accuracy >= target:
            time_to_target = train_seconds
        if stopped or time_to_target is not None:
            break
    return {"recipe": "reference: PIL + DataLoader, 224 px, fp32, AdamW lr 1e-3, batch 64",
            "images_per_s": images / train_seconds if train_seconds else 0.0, "train_seconds": train_seconds,
            "images": images, "epochs_run": epochs_run, "stopped_by_budget": stopped,
            "val_accuracy": accuracy, "time_to_target_s": time_to_target, "loader_workers": workers}


# Ours -----------------------------------------------------------------------------------------------------


def run_ours(dataset, *, epochs: int | None, image_size: int | None, max_seconds: float, target: float,
             device: torch.device) -> dict[str, Any]:
    """Train our recipe with the same budget and target."""
    from zeal_core.train import default_config, train_model

    config = default_config(dataset.name, gpu=device.type == "cuda")
    config = replace(config, epochs=epochs or config.epochs, image_size=image_size or config.image_size,
                     max_seconds=max_seconds, stop_at_accuracy=target, eval_each_epoch=True)
    result = train_model(dataset, config, device=device)
    recipe = (f"ours: on-device uint8 + batch augmentation, {config.image_size} px, {config.optimizer} "
              f"{config.schedule}, batch {config.batch_size}, {config.epochs} epochs")
    return {"recipe": recipe,
            "images_per_s": result.metrics["images_per_s"], "train_seconds": result.metrics["train_seconds"],
            "epochs_run": result.metrics["epochs_run"], "val_accuracy": result.metrics["val_accuracy"],
            "time_to_target_s": result.metrics["time_to_target_s"],
            "stopped_by_budget": result.metrics["train_seconds"] >= max_seconds,
            "history": [{"epoch": h["epoch"], "val_accuracy": h["val_accuracy"],
                         "train_seconds": round(h["train_seconds"], 2)} for h in result.history]}


def _subset(dataset, limit: int | None):
    """The dataset with its val split cut to ``limit`` images (seeded), for quicker validation."""
    from zeal_core.data import ImageDataset

    if limit is None or limit >= int(dataset.is_val.sum()):
        return dataset
    val_index = dataset.is_val.nonzero().flatten()
    keep = val_index[seeded_subset(len(val_index), limit, seed=0)]
    mask = ~dataset.is_val
    mask[keep] = True
    return ImageDataset(name=dataset.name, images=dataset.images[mask], labels=dataset.labels[mask],
                        is_val=dataset.is_val[mask], class_names=dataset.class_names,
                        fingerprint=dataset.fingerprint + f"-val{limit}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Handler of ``bench train``: both runs, one JSON-ready summary."""
    from zeal_core.data import load_dataset
    from zeal_core.device import describe_device, resolve_device

    device = resolve_device(args.device)
    target = args.target if args.target is not None else TARGETS[args.dataset]
    summary: dict[str, Any] = {"dataset": args.dataset, "device": describe_device(device),
                               "target_accuracy": target, "max_seconds": args.max_seconds,
                               "cpu_count": os.cpu_count(), "load_average": _load_average()}
    try:
        dataset = load_dataset(args.dataset)
    except DataError as error:
        summary["skipped"] = f"our run skipped: {error}"
        dataset = None
    if dataset is not None:
        dataset = _subset(dataset, args.val_limit)
    if not args.skip_ours and dataset is not None:
        summary["ours"] = run_ours(dataset, epochs=args.epochs, image_size=args.image_size,
                                   max_seconds=args.max_seconds, target=target, device=device)
    if not args.skip_reference:
        samples = _reference_samples(args, dataset, summary)
        if samples is not None:
            train_samples, val_samples, num_classes = samples
            summary["reference"] = run_reference(
                train_samples, val_samples, num_classes, epochs=args.reference_epochs,
                max_seconds=args.max_seconds, target=target, workers=args.reference_workers, device=device)
    if "ours" in summary and "reference" in summary and summary["reference"]["images_per_s"]:
        speedup = summary["ours"]["images_per_s"] / summary["reference"]["images_per_s"]
        summary["speedup_images_per_s"] = round(speedup, 2)
    return summary


def _reference_samples(args: argparse.Namespace, dataset, summary: dict[str, Any]):
    if args.dataset == "digits":
        train_images, train_labels = dataset.split("train")
        val_images, val_labels = dataset.split("val")
        return (_png_samples(train_images, train_labels), _png_samples(val_images, val_labels),
                dataset.num_classes)
    source = _find_imagenette_source(args.reference_source)
    if source is None:
        summary["reference_skipped"] = ("reference run skipped: no imagenette2-160 folder or archive found "
                                        "(put imagenette2-160.tgz in the data folder or pass "
                                        "--reference-source)")
        return None
    splits = _imagenette_samples(source)
    val = splits["val"]
    if args.val_limit is not None and args.val_limit < len(val):
        val = [val[i] for i in seeded_subset(len(val), args.val_limit, seed=0).tolist()]
    summary["reference_source"] = str(source)
    return splits["train"], val, 10


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


