"""``evaluate``: accuracy, per-class accuracy and confusion matrix of a registered model."""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` command."""
    evaluate = subparsers.add_parser("evaluate", parents=[parent], help="evaluate a registered model",
                                     description="Top-1, per-class accuracy and confusion matrix of a model "
                                                 "version on a dataset split.")
    evaluate.add_argument("--model", default="active",
                          help="version id, 'active' (default) or 'latest'")
    evaluate.add_argument("--dataset", help="dataset name (default: the one the model was trained on)")
    evaluate.add_argument("--split", choices=("val", "train"), default="val", help="which split")
    evaluate.add_argument("--drift", default=None,
                          help="drift-spec text applied to the images first, e.g. gaussian_noise:3@0.5")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    evaluate.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> dict:
    from zeal_core.device import resolve_device
    from zeal_core.evaluate import evaluate
    from zeal_core.models.registry import ModelRegistry
    from zeal_core.retrain import load_model_for_dataset

    start = time.perf_counter()
    device = resolve_device(args.device)
    # The dataset in the model's label space (a class-subset model is scored on its own classes).
    _, model, card, dataset = load_model_for_dataset(ModelRegistry(), args.model, args.dataset, device)
    images, labels = dataset.split(args.split)
    if args.drift:
        from zeal_core.corruptions import DriftSpec

        images = DriftSpec.parse(args.drift).apply(images, seed=0)
    result = evaluate(model, card.model_config, images, labels, device, dataset.class_names)
    output = {"version": card.version, "dataset": dataset.name, "split": args.split,
              "drift": args.drift or "clean", **result.to_dict()}
    if dataset.fingerprint != card.dataset_fingerprint:
        output["warning"] = (f"dataset {dataset.name} differs from the data the model was trained on "
                             f"({card.dataset}); accuracy may not be comparable")
    output["seconds"] = round(time.perf_counter() - start, 3)
    return output
