"""``bench drift-kinds``: how much accuracy each pixel drift kind costs, beside ImageNet-C's levels.

For a registered model (default: the latest for the dataset) and ``n`` seeded validation images, the top-1
accuracy under every geometric and capture kind at severities 1-5 and under all 19 ImageNet-C corruptions at
the same severities; the drop is the clean accuracy minus that, with a paired standard error (the same
images are scored clean and drifted, so SE = std of the per-image change in correctness / sqrt(n)).

The calibration rule the level tables follow: a kind's **level-3 drop is comparable to ImageNet-C's** when
it lies between the median and the mean of the 19 ImageNet-C corruptions' level-3 drops (the typical
corruption and the average one, which a few severe corruptions such as fog and contrast pull far above the
median). Looser verdicts: ``in IQR`` (between their 25th and 75th percentiles), ``in range`` (between their
minimum and maximum), else ``weaker`` / ``stronger``. The table marks every kind.

Run: ``python -m benchmarks drift-kinds --dataset imagenette --n 1000 --out
reports/bench/drift_kinds_imagenette.json`` (also writes the ``.md`` beside it), or ``python -m
benchmarks.drift_kinds``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks import script_main
from benchmarks._harness import Table, caption, listed, machine, tables
from zeal_core.progress import ProgressCallback, report

SEVERITIES = (1.0, 2.0, 3.0, 4.0, 5.0)
CALIBRATION_LEVEL = 3.0  # the level whose drop is matched to ImageNet-C's


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``bench drift-kinds``."""
    bench = actions.add_parser("drift-kinds", parents=[parent], help="accuracy under each drift kind at "
                               "levels 1-5 beside ImageNet-C (severity calibration)",
                               description=__doc__.split("\n\n")[0])
    add_arguments(bench)
    bench.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by the ``bench`` action and ``python -m``)."""
    parser.add_argument("--dataset", default="digits", help="digits, imagenette or folder:PATH")
    parser.add_argument("--model", default=None, help="model version (default: latest for the dataset)")
    parser.add_argument("--n", type=int, default=1000,
                        help="validation images (all when the split is smaller)")
    parser.add_argument("--kinds", type=listed(str), default=None,
                        help="comma-separated pixel kinds (default: every geometric and capture kind)")
    parser.add_argument("--severities", type=listed(float), default=SEVERITIES, help="comma-separated")
    parser.add_argument("--no-imagenet-c", action="store_true", help="skip the ImageNet-C reference rows")
    parser.add_argument("--seed", type=int, default=0, help="seeds the image draw and the corruptions")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=250, help="images per forward pass")


def _correct(model: Any, card: Any, images: Any, labels: np.ndarray, device: Any,
             batch_size: int) -> np.ndarray:
    from zeal_core.evaluate import predict_logits

    logits = predict_logits(model, card.model_config, images, device, batch_size)
    return logits.argmax(1).numpy() == labels


def _cell(correct: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """Accuracy with its SE, and the paired drop from clean with its SE (percentage points)."""
    n = correct.size
    accuracy = float(correct.mean())
    change = clean.astype(np.float64) - correct.astype(np.float64)
    return {"accuracy": round(100 * accuracy, 2),
            "accuracy_se": round(100 * float(np.sqrt(accuracy * (1 - accuracy) / n)), 2),
            "drop": round(100 * float(change.mean()), 2),
            "drop_se": round(100 * float(change.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0, 2)}


def bench_drift_kinds(args: argparse.Namespace, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Run the benchmark described in the module docstring; returns a JSON-ready dict."""
    import torch

    from zeal_core.corruptions import apply, corruption_info, list_corruptions, list_drift_kinds
    from zeal_core.data import load_dataset
    from zeal_core.device import resolve_device
    from zeal_core.errors import ConfigError
    from zeal_core.models.registry import ModelRegistry, label_map

    start = time.perf_counter()
    device = resolve_device(args.device)
    from zeal_core.device import describe_device

    # Taken before the work: the load average it started under.
    machine_start = machine() | {"device": describe_device(device)}
    registry = ModelRegistry()
    card = registry.card(args.model) if args.model else registry.latest(args.dataset)
    if card is None:
        raise ConfigError(f"no {args.dataset} model is registered: train one with "
                          f"`python -m zeal_core train --dataset {args.dataset}` or pass --model")
    model, card = registry.load(card.version, device=device)
    dataset = load_dataset(args.dataset)
    images, labels = dataset.split("val")
    mapping = label_map(card, dataset.class_names)
    n = min(int(args.n), images.shape[0])
    pick = np.sort(np.random.default_rng(args.seed).choice(images.shape[0], size=n, replace=False))
    chosen = images[torch.from_numpy(pick)]
    targets = mapping[labels.numpy()[pick]]  # -1 for a class the model never saw: always wrong
    kinds = list(args.kinds) if args.kinds else [name for name in list_drift_kinds()
                                                  if corruption_info(name).group != "imagenet-c"]
    references = [] if args.no_imagenet_c else list_corruptions()
    clean = _correct(model, card, chosen, targets, device, args.batch_size)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    work = [(name, severity) for name in [*kinds, *references] for severity in args.severities]
    for index, (name, severity) in enumerate(work):
        drifted = torch.cat([apply(chosen[i:i + 500].to(device), name, severity, seed=args.seed).cpu()
                             for i in range(0, n, 500)])
        cell = _cell(_correct(model, card, drifted, targets, device, args.batch_size), clean)
        rows.setdefault(name, {})[f"{severity:g}"] = cell
        report(progress, "evaluate", index + 1, len(work),
               f"{name}:{severity:g} accuracy {cell['accuracy']:.1f} %")
    result: dict[str, Any] = {
        "dataset": args.dataset, "model": card.version, "model_image_size": card.model_config.image_size,
        "image_size": int(images.shape[-1]), "n": n, "seed": args.seed, "severities": list(args.severities),
        "clean_accuracy": round(100 * float(clean.mean()), 2), "machine": machine_start,
        "kinds": {name: rows[name] for name in kinds},
        "imagenet_c": {name: rows[name] for name in references},
    }
    if references:
        result["imagenet_c_summary"] = _reference_summary(result)
        result["calibration"] = _calibration(result)
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["machine_after"] = machine()
    result["markdown"] = markdown(result)
    return result


def _reference_summary(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per severity: ImageNet-C's mean accuracy and the spread of its 19 drops."""
    summary = {}
    for level in (f"{severity:g}" for severity in result["severities"]):
        accuracies = [cells[level]["accuracy"] for cells in result["imagenet_c"].values()]
        drops = np.array([cells[level]["drop"] for cells in result["imagenet_c"].values()])
        summary[level] = {"mean_accuracy": round(float(np.mean(accuracies)), 2),
                          "mean_drop": round(float(drops.mean()), 2),
                          "min_drop": round(float(drops.min()), 2),
                          "q25_drop": round(float(np.percentile(drops, 25)), 2),
                          "median_drop": round(float(np.median(drops)), 2),
                          "q75_drop": round(float(np.percentile(drops, 75)), 2),
                          "max_drop": round(float(drops.max()), 2)}
    return summary


def _calibration(result: dict[str, Any]) -> dict[str, str]:
    """Each kind's level-3 drop against ImageNet-C's: "comparable", "in IQR", "in range", weaker/stronger."""
    level = f"{CALIBRATION_LEVEL:g}"
    if level not in result["imagenet_c_summary"]:
        return {}
    spread = result["imagenet_c_summary"][level]
    verdicts = {}
    for name, cells in result["kinds"].items():
        if level not in cells:
            continue
        drop = cells[level]["drop"]
        low, high = sorted((spread["median_drop"], spread["mean_drop"]))
        if low <= drop <= high:
            verdicts[name] = "comparable"
        elif spread["q25_drop"] <= drop <= spread["q75_drop"]:
            verdicts[name] = "in IQR"
        elif spread["min_drop"] <= drop <= spread["max_drop"]:
            verdicts[name] = "in range"
        else:
            verdicts[name] = "weaker" if drop < spread["min_drop"] else "stronger"
    return verdicts


def _cell_text(cell: dict[str, float]) -> str:
    """``71.2 (-4.3 ± 1.1)``: accuracy, change from clean and its SE (0.0 - drop keeps "-0.0" away)."""
    return f"{cell['accuracy']:.1f} ({0.0 - cell['drop']:+.1f} ± {cell['drop_se']:.1f})"


def markdown(result: dict[str, Any]) -> str:
    """The accuracy table (percent, SE in brackets) with the calibration verdicts."""
    levels = [f"{severity:g}" for severity in result["severities"]]
    after = result.get("machine_after") or {}
    verdicts = result.get("calibration", {})
    rows = [(name, *(_cell_text(cells[level]) if level in cells else "" for level in levels),
             verdicts.get(name, "")) for name, cells in result["kinds"].items()]
    summary = result.get("imagenet_c_summary")
    if summary:
        rows.append(("**ImageNet-C mean (19)**", *(f"**{summary[level]['mean_accuracy']:.1f}** "
                                                   f"({0.0 - summary[level]['mean_drop']:+.1f})"
                                                   for level in levels), ""))
        rows.append(("ImageNet-C drop: min / q25 / median / q75 / max", *(
            f"{summary[level]['min_drop']:.1f} / {summary[level]['q25_drop']:.1f} / "
            f"{summary[level]['median_drop']:.1f} / {summary[level]['q75_drop']:.1f} / "
            f"{summary[level]['max_drop']:.1f}" for level in levels), ""))
    load_end = (after.get("load_average") or [0.0])[0]
    head = caption(
        f"Accuracy (%) of `{result['model']}` ({result['dataset']} val, {result['image_size']} px images, "
        f"model input {result['model_image_size']} px; clean {result['clean_accuracy']:.1f} %) under each "
        f"drift kind, {result['machine']['device']}, 1-min load average {load_end:.1f} at the end; "
        f"{result['seconds']:.0f} s. Cells: accuracy (change from clean ± SE of the paired change), "
        "percentage points", n=f"{result['n']} seeded images",
        trials="each image once, clean and drifted (paired)", machine_record=result["machine"])
    blocks: list[Table | str] = [Table(("kind", *(f"level {level}" for level in levels), "level-3 verdict"),
                                       rows, head)]
    if summary:
        blocks.append(Table(("corruption", *(f"level {level}" for level in levels)),
                            [(name, *(f"{cells[level]['accuracy']:.1f}" for level in levels))
                             for name, cells in result["imagenet_c"].items()],
                            "ImageNet-C corruptions, accuracy (%):"))
        blocks.append("Verdict: **comparable** = level-3 drop between the median and the mean of "
                      "ImageNet-C's 19 level-3 drops; **in IQR** = between their 25th and 75th percentiles; "
                      "**in range** = between their minimum and maximum; weaker / stronger otherwise.")
    return tables(*blocks) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Handler of ``python -m benchmarks drift-kinds``."""
    from zeal_core.cli import stderr_progress

    return bench_drift_kinds(args, progress=stderr_progress)


def _show(result: dict[str, Any]) -> None:
    print(result["markdown"])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.drift_kinds [options]``: the markdown table (``--json``: the dict)."""
    return script_main(__doc__, add_arguments, run, _show, argv, prog="python -m benchmarks.drift_kinds")


if __name__ == "__main__":
    sys.exit(main())
