"""``train``: train a model on a dataset and register it as a new version.

Runs on one device, or on several processes started by ``torchrun`` (e.g.
``torchrun --nproc_per_node 2 -m zeal_core train --dataset digits``): each process joins the group,
rank 0 alone writes the model and prints the result.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from zeal_core.errors import ConfigError

if TYPE_CHECKING:
    from zeal_core.models.registry import ModelCard
    from zeal_core.train import TrainConfig


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add the ``train`` command."""
    train = subparsers.add_parser("train", parents=[parent], help="train a model and register it",
                                  description="Train a timm model on a dataset and save it as a new version.")
    train.add_argument("--dataset", default="digits", help="digits, imagenette or folder:PATH")
    train.add_argument("--recipe", choices=("default", "reference"), default="default",
                       help="default: the fast per-dataset recipe; reference: the original project's "
                            "AdamW 224 px recipe")
    train.add_argument("--epochs", type=int, help="passes over the training split")
    train.add_argument("--image-size", type=int, help="model input side in px")
    train.add_argument("--batch-size", type=int, help="images per step (per process)")
    train.add_argument("--lr", type=float, help="peak learning rate")
    train.add_argument("--optimizer",
                       help="sgd (Nesterov, one-cycle) or adamw (lr 1e-3, weight decay 0.01 unless --lr)")
    train.add_argument("--arch", help="timm model name (default resnet18)")
    train.add_argument("--pretrained", action="store_true",
                       help="start from timm hub ImageNet weights (where the hub cannot be reached, e.g. "
                            "offline, it says so and trains from scratch)")
    train.add_argument("--init", metavar="PATH",
                       help="fine-tune from a local checkpoint (.safetensors or a .pth/.pt/.bin state dict, "
                            "read as `models import` reads it; a classifier of another size is replaced)")
    train.add_argument("--seed", type=int, help="random seed")
    train.add_argument("--max-seconds", type=float, help="stop after this much training time")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    train.add_argument("--activate", action="store_true",
                       help="make the new version the active one (done anyway when none is active)")
    train.add_argument("--classes", help="train on these classes only: comma-separated class names or "
                       "indices (the others become unseen classes for the model: the unseen_classes drift)")
    train.set_defaults(handler=_train)


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    from zeal_core.train import OPTIMIZERS, default_config, reference_config

    if args.optimizer is not None and args.optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer {args.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
    config = reference_config() if args.recipe == "reference" else default_config(args.dataset)
    if args.optimizer == "adamw" and config.optimizer != "adamw":
        config = replace(config, optimizer="adamw", lr=1e-3, weight_decay=0.01)
    elif args.optimizer == "sgd" and config.optimizer != "sgd":
        base = default_config(args.dataset)
        config = replace(config, optimizer="sgd", lr=base.lr, weight_decay=base.weight_decay,
                         schedule=base.schedule)
    overrides = {"epochs": args.epochs, "image_size": args.image_size, "batch_size": args.batch_size,
                 "lr": args.lr, "arch": args.arch, "seed": args.seed, "max_seconds": args.max_seconds}
    config = replace(config, **{name: value for name, value in overrides.items() if value is not None})
    if args.pretrained:
        config = replace(config, pretrained=True)
    return config


def _chosen_classes(dataset: str, text: str | None) -> tuple[str, ...] | None:
    """The dataset's class names that ``--classes`` refers to (names or indices), in the order given."""
    if text is None:
        return None
    from zeal_core.corruptions.class_mix import resolve_class_list
    from zeal_core.data import load_dataset

    return resolve_class_list(text.split(","), load_dataset(dataset).class_names)


def _train(args: argparse.Namespace) -> dict:
    from zeal_core import distributed
    from zeal_core.cli import stderr_progress
    from zeal_core.models.registry import ModelRegistry
    from zeal_core.train import train_and_register

    config = _config_from_args(args)
    config.validate()
    distributed.init_from_env()
    main = distributed.is_main_process()
    if not main:
        # Only rank 0 prints; the other ranks' results are the same card.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until the process ends
    registry = ModelRegistry()
    try:
        card = train_and_register(args.dataset, config, device=args.device,
                                  progress=stderr_progress if main else None, registry=registry,
                                  classes=_chosen_classes(args.dataset, args.classes), **_init_options(args))
    finally:
        distributed.cleanup()
    activated = False
    if main and (args.activate or not registry.active_is_set()):  # never over a damaged active version
        registry.set_active(card.version)
        activated = True
    return {
        "version": card.version,
        "dataset": card.dataset,
        "val_accuracy": card.metrics.get("val_accuracy"),
        "seconds": round(float(card.metrics.get("seconds", 0.0)), 3),
        "train_seconds": round(float(card.metrics.get("train_seconds", 0.0)), 3),
        "images_per_s": round(float(card.metrics.get("images_per_s", 0.0)), 1),
        "epochs": card.metrics.get("epochs_run"),
        "device": card.metrics.get("device"),
        "world_size": card.metrics.get("world_size"),
        "active": activated,
        **_start_summary(config, card),
        "notes": card.notes,
    }


def _init_options(args: argparse.Namespace) -> dict:
    """``train_and_register`` options for ``--init``: the checkpoint, and the card's strategy."""
    return {"init_checkpoint": args.init, "strategy": "finetune"} if args.init else {}


def _start_summary(config: TrainConfig, card: ModelCard) -> dict:
    """What the network started from, said plainly (``--pretrained`` may have fallen back to scratch)."""
    if "init" in card.recipe:
        return {"start": f"checkpoint {card.recipe['init']['file']}"}
    if not config.pretrained:
        return {"start": "random weights"}
    if card.metrics.get("pretrained_loaded"):
        return {"start": f"pretrained: timm hub ImageNet weights for {config.arch}", "pretrained": True}
    # train_and_register appends the fallback message (factory.pretrained_fallback_message) to the notes.
    start = card.notes.find("pretrained weights for")
    warning = card.notes[start:] if start >= 0 else "pretrained weights could not be loaded"
    from zeal_core import distributed

    if distributed.is_main_process():
        print(f"warning: {warning}", file=sys.stderr)
    return {"start": "random weights (pretrained weights could not be loaded)", "pretrained": False,
            "warning": warning}
