"""``python -m benchmarks adapt``: label-free adaptation on ImageNet-C streams, episodic, continual and mixed.

The literature's protocol (Wang et al. 2021 for tent; Niu et al. 2022 for EATA; Marsden et al. 2024 for
ROID), at this lab's scale: one model, the 15 ImageNet-C corruptions at one severity (5), ``--n`` validation
images per corruption (a seeded draw each), batches of ``--batch-size``, on the CPU. For each strategy:

- **continual**: one model adapts online through every corruption in turn, never reset by the benchmark
  (``zeal_core.retrain.continual.ContinualAdapter``, the monitor's continual mode); the accuracy of the
  predictions it served, per corruption. Afterwards its clean accuracy is measured on ``--n`` clean images
  with its served predictions (no learning).
- **episodic** (the Retrain button's protocol): per corruption, the strategy adapts the source on the first
  half of the stream and the result is saved as an eval-mode version (``zeal_core.retrain.adapt``'s strategy
  functions); the guard (``zeal_core.retrain.guard.judge``) compares it with the source on the clean images
  and by the label-free estimate on the adaptation half, never with labels of the drifted images. The
  accuracy served on the second half is the version's when the guard passed it, the source's otherwise.
- **mixed**: the corruptions interleaved batch by batch (batch i from corruption i mod 15), one model
  adapting online; per batch, the adapted accuracy against the source's on the same images, and the
  longest run of batches below the source.

``source`` is the model without adaptation. Streams are cached (``_adapt_streams``) under
``--cache DIR`` (the harness's option of every benchmark: ``DIR/bench_adapt``; default
``$ZEAL_STATE_DIR/bench_adapt``). Results go to stdout (``--json``) and, with
``--out PATH``, to a JSON file. Run under ``nice``: it is hours of CPU for Imagenette at the default
``--n``; a shorter stream reuses the first images of a longer cached one. On a shared machine run one
setting per process (``--settings``, ``--out``) and join the parts with ``python -m
benchmarks._adapt_join`` (targets over all settings, paired differences per batch).
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import script_main
from benchmarks._adapt_streams import Stream, batches, build_stream, interleave
from benchmarks._harness import listed, machine

log = logging.getLogger(__name__)

IMAGENET_C = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
              "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
              "jpeg_compression")  # the 15 corruptions of Hendrycks & Dietterich (2019), in their order
# "NAME/plain": the strategy as published, without the lab's shift gate, clean check and collapse reset.
STRATEGIES = ("source", "bn-adapt", "tent/plain", "tent", "roid")
SETTINGS = ("continual", "mixed", "episodic")
# The literature's table (ImageNet-C severity 5, ResNet-50, error %), for docs/retraining.md.
LITERATURE = {"source": 82.0, "bn-adapt": 68.6, "tent": 62.6, "eata": 58.0, "roid": 54.5, "tent mixed": 86.4}


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``adapt``."""
    bench = actions.add_parser("adapt", parents=[parent], help="label-free adaptation: episodic, continual "
                               "and mixed ImageNet-C streams", description=__doc__.split("\n\n")[0])
    add_arguments(bench)
    bench.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument("--dataset", default="imagenette", help="digits or imagenette")
    parser.add_argument("--model", default=None, help="model version (default: the latest for the dataset)")
    parser.add_argument("--models-dir", default=None, help="model registry folder (default ZEAL_MODELS_DIR)")
    parser.add_argument("--corruptions", type=listed(), default=IMAGENET_C,
                        help="comma-separated (default: 15)")
    parser.add_argument("--severity", type=float, default=5.0)
    parser.add_argument("--n", type=int, default=1024, help="validation images per corruption stream")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seeds", type=listed(int), default=(0,))
    parser.add_argument("--strategies", type=listed(), default=STRATEGIES,
                        help="comma-separated; 'source' is the model without adaptation")
    parser.add_argument("--settings", type=listed(), default=SETTINGS, help="continual, mixed, episodic")
    parser.add_argument("--max-clean-drop", type=float, default=0.02, help="the guard's clean margin (share)")
    parser.add_argument("--min-gain-z", type=float, default=None,
                        help="episodic guard: require a credible estimated gain at this z (1.645; default: "
                             "the guard's default, not worse suffices)")
    parser.add_argument("--no-gate", action="store_true",
                        help="continual runs without the shift gate and the clean check (an ablation)")
    parser.add_argument("--device", default="cpu")


# ------------------------------------------------------------------------------------------------ runs


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


def _adapter(source: torch.nn.Module, model_config: Any, strategy: str, device: torch.device,
             reference: tuple[torch.Tensor, torch.Tensor] | None) -> Any:
    from zeal_core.retrain.continual import ContinualAdapter, ContinualConfig

    name, _, variant = strategy.partition("/")
    if reference is None or variant == "plain":  # as published: no gate, no clean check, no collapse reset
        plain = ContinualConfig(strategy=name, gate=False, clean_check_every=0, reset_on_collapse=False)
        return ContinualAdapter(source, model_config, plain, device)
    return ContinualAdapter(source, model_config, ContinualConfig(strategy=name), device,
                            reference_images=reference[0], reference_labels=reference[1])


def _source_logits(source: torch.nn.Module, model_config: Any, images: torch.Tensor,
                   device: torch.device) -> torch.Tensor:
    from zeal_core.evaluate import predict_logits

    return predict_logits(source, model_config, images, device, batch_size=256)


def run_stream(source: torch.nn.Module, model_config: Any, strategy: str,
               stream: list[tuple[str, torch.Tensor, torch.Tensor]], device: torch.device,
               reference: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, Any]:
    """One model adapting online over ``stream`` (corruption, images, labels per batch).

    Args:
        reference: Clean labelled images for the shift gate and the clean check (None: neither).

    Returns:
        Per batch: corruption, adapted and source accuracy, reset, gated; the adapter (None for ``source``).
    """
    adapter = None if strategy == "source" else _adapter(source, model_config, strategy, device, reference)
    records = []
    for corruption, images, labels in stream:
        if adapter is None:
            source_accuracy = _accuracy(_source_logits(source, model_config, images, device), labels)
            records.append({"corruption": corruption, "accuracy": source_accuracy, "source": source_accuracy,
                            "reset": False, "gated": False})
            continue
        step = adapter.step(images)
        records.append({"corruption": corruption, "accuracy": _accuracy(step.logits, labels),
                        "source": _accuracy(step.source_logits, labels), "reset": step.reset,
                        "gated": step.gated})
    return {"batches": records, "adapter": adapter}


def per_corruption(records: list[dict[str, Any]], key: str = "accuracy") -> dict[str, float]:
    """Mean of ``key`` over each corruption's batches (equal batch sizes: the image-level accuracy)."""
    groups: dict[str, list[float]] = {}
    for record in records:
        groups.setdefault(record["corruption"], []).append(record[key])
    return {name: sum(values) / len(values) for name, values in groups.items()}


def longest_run_below(records: list[dict[str, Any]]) -> int:
    """The longest run of consecutive batches whose adapted accuracy is below the source's."""
    longest = current = 0
    for record in records:
        current = current + 1 if record["accuracy"] < record["source"] - 1e-9 else 0
        longest = max(longest, current)
    return longest


def clean_accuracy(adapter: Any, source: torch.nn.Module, model_config: Any, clean: Stream, batch_size: int,
                   device: torch.device) -> float:
    """Accuracy of the adapter's served predictions on clean batches, without learning (source if None)."""
    correct = total = 0
    for images, labels in batches(clean, batch_size):
        logits = (_source_logits(source, model_config, images, device) if adapter is None
                  else adapter.predict(images))
        correct += int((logits.argmax(dim=1) == labels).sum())
        total += labels.numel()
    return correct / max(total, 1)


def episodic_one(source: torch.nn.Module, model_config: Any, strategy: str, stream: Stream, clean: Stream,
                 clean_embeddings: Any, guard: Any, device: torch.device) -> dict[str, Any]:
    """Adapt on the first half of ``stream``, guard, serve the second half (module docstring)."""
    from zeal_core.embed import compute_embeddings
    from zeal_core.retrain import AdaptContext, judge, parse_options, strategy_info
    from zeal_core.retrain.guard import drifted_subset

    half = stream.images.shape[0] // 2
    adapt_images, held_images, held_labels = stream.images[:half], stream.images[half:], stream.labels[half:]
    source_held = _accuracy(_source_logits(source, model_config, held_images, device), held_labels)
    if strategy == "source":
        return {"source": source_held, "adapted": source_held, "served": source_held, "passed": None}
    context = AdaptContext(dataset=None, drift=None, device=device, parent_card=None,
                           parent_clean_accuracy=float(clean_embeddings.accuracy), adapt_images=adapt_images,
                           progress=None, cancel=None, reference=(clean.images, clean.labels))
    model, _ = strategy_info(strategy).run(copy.deepcopy(source), model_config, context,
                                           parse_options(strategy, None))
    guard_images = drifted_subset(adapt_images, guard.max_images)
    candidate_clean = compute_embeddings(model, model_config, clean.images, device, clean.labels)
    verdict = judge(clean_embeddings, candidate_clean,
                    compute_embeddings(source, model_config, guard_images, device),
                    compute_embeddings(model, model_config, guard_images, device), guard)
    adapted_held = _accuracy(_source_logits(model, model_config, held_images, device), held_labels)
    return {"source": source_held, "adapted": adapted_held,
            "served": adapted_held if verdict.passed else source_held, "passed": verdict.passed,
            "clean_after": verdict.clean_after, "estimated_before": verdict.estimated_before,
            "estimated_after": verdict.estimated_after, "reasons": list(verdict.reasons),
            "changed_predictions": verdict.changed_predictions, "gain_bound": verdict.gain_bound,
            "declined": verdict.declined}


# --------------------------------------------------------------------------------------------- one seed


def stream_entry(source: torch.nn.Module, model_config: Any, strategy: str,
                 order: list[tuple[str, torch.Tensor, torch.Tensor]], clean: Stream, batch_size: int,
                 device: torch.device, reference: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, Any]:
    """A continual or mixed run: accuracies per corruption, resets, runs below the source, clean after."""
    result = run_stream(source, model_config, strategy, order, device, reference)
    records, adapter = result["batches"], result["adapter"]
    return {"per_corruption": per_corruption(records), "resets": sum(r["reset"] for r in records),
            "gated": sum(r["gated"] for r in records),
            "longest_run_below_source": longest_run_below(records),
            "batches_below_source": sum(r["accuracy"] < r["source"] - 1e-9 for r in records),
            "batches": len(records),
            "clean_after": clean_accuracy(adapter, source, model_config, clean, batch_size, device),
            "batch_accuracy": [round(r["accuracy"], 4) for r in records],
            "batch_source_accuracy": [round(r["source"], 4) for r in records]}


def episodic_entry(source: torch.nn.Module, model_config: Any, strategy: str, streams: list[Stream],
                   clean: Stream, guard: Any, device: torch.device) -> dict[str, Any]:
    """The episodic runs of one strategy over every corruption, with the guard's verdicts."""
    from zeal_core.embed import compute_embeddings

    reference = compute_embeddings(source, model_config, clean.images, device, clean.labels)
    runs = {stream.corruption: episodic_one(source, model_config, strategy, stream, clean, reference, guard,
                                            device) for stream in streams}
    return {"per_corruption": {name: run["served"] for name, run in runs.items()},
            "unguarded": {name: run["adapted"] for name, run in runs.items()},
            "runs": runs, "clean_source": float(reference.accuracy)}


def gate_reference(dataset: Any, size: int, seed: int, index: int, cache: Path | None,
                   n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean labelled images for the shift gate and the clean check: another seeded draw of clean
    validation images (as the monitor uses its clean reference half), at the model's size."""
    stream = build_stream(dataset, "clean", 0.0, n, seed, index, size, cache)
    return stream.images, stream.labels


def run_seed(source: torch.nn.Module, model_config: Any, dataset: Any, args: argparse.Namespace, seed: int,
             device: torch.device) -> dict[str, Any]:
    """Every setting x strategy for one seed's streams."""
    from zeal_core.retrain import GuardConfig

    cache = Path(args.cache) if args.cache else None
    size = model_config.image_size
    streams = [build_stream(dataset, name, args.severity, args.n, seed, index, size, cache)
               for index, name in enumerate(args.corruptions)]
    clean = build_stream(dataset, "clean", 0.0, args.n, seed, len(args.corruptions), size, cache)
    orders = {"continual": [(stream.corruption, *batch) for stream in streams
                            for batch in batches(stream, args.batch_size)],
              "mixed": interleave(streams, args.batch_size)}
    guard = GuardConfig(max_clean_drop=args.max_clean_drop, min_gain_z=args.min_gain_z)
    index = len(args.corruptions) + 1  # the clean stream took len(corruptions): another draw
    reference = None if args.no_gate else gate_reference(dataset, size, seed, index, cache)
    out: dict[str, Any] = {}
    for setting in args.settings:
        out[setting] = {}
        for strategy in args.strategies:
            if setting == "episodic" and "/" in strategy:  # a saved version has no gate: same as plain
                continue
            start = time.perf_counter()
            if setting == "episodic":
                entry = episodic_entry(source, model_config, strategy, streams, clean, guard, device)
            else:
                entry = stream_entry(source, model_config, strategy, orders[setting], clean, args.batch_size,
                                     device, reference)
            entry["seconds"] = time.perf_counter() - start
            out[setting][strategy] = entry
            log.info("seed %d %s %s: mean %.1f %% in %.0f s", seed, setting, strategy,
                     100 * _mean(entry["per_corruption"].values()), entry["seconds"])
    return out


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


# -------------------------------------------------------------------------------------------- summary


def summary_row(runs: list[dict[str, Any]], setting: str, strategy: str, args: argparse.Namespace
                ) -> dict[str, Any]:
    """One setting x strategy over seeds: mean accuracy, standard errors, per corruption, extras."""
    means = [_mean(run["per_corruption"].values()) for run in runs]
    mean = _mean(means)
    # Images behind the mean: n per corruption per seed (the episodic held-out halves: n / 2).
    images = len(runs) * len(args.corruptions) * (args.n // (2 if setting == "episodic" else 1))
    row = {"mean": mean, "se_images": math.sqrt(max(mean * (1 - mean), 0.0) / max(images, 1)),
           "se_seeds": (math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1) / len(means))
                        if len(means) > 1 else None),
           "per_corruption": {name: _mean(run["per_corruption"][name] for run in runs)
                              for name in runs[0]["per_corruption"]},
           "seconds": _mean(run["seconds"] for run in runs)}
    for key in ("clean_after", "resets", "gated", "batches_below_source", "batches", "clean_source"):
        if key in runs[0]:
            row[key] = _mean(run[key] for run in runs)
    if "longest_run_below_source" in runs[0]:
        row["longest_run_below_source"] = max(run["longest_run_below_source"] for run in runs)
    if setting == "episodic" and strategy != "source":
        verdicts = [entry for run in runs for entry in run["runs"].values()]
        row["guard_refused"] = sum(not entry["passed"] for entry in verdicts)
        row["guard_declined"] = sum(bool(entry.get("declined")) for entry in verdicts)  # no credible gain
        row["unguarded_mean"] = _mean(_mean(run["unguarded"].values()) for run in runs)
        row["clean_after_min"] = min(entry["clean_after"] for entry in verdicts)
        row["clean_after_passed_min"] = min((entry["clean_after"] for entry in verdicts if entry["passed"]),
                                            default=None)
    return row


def summarise(seeds: dict[int, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Means over seeds, per setting x strategy (``summary_row``)."""
    first = next(iter(seeds.values()))
    return {setting: {strategy: summary_row([seeds[seed][setting][strategy] for seed in seeds], setting,
                                            strategy, args) for strategy in strategies}
            for setting, strategies in first.items()}


def targets(table: dict[str, Any], new: str = "roid", margin: float = 0.02) -> dict[str, Any]:
    """The issue's targets, each with its number and whether it is met (None: not measured)."""
    out: dict[str, Any] = {}
    continual = table.get("continual", {})
    for tent in ("tent/plain", "tent"):  # the literature's TENT, and TENT inside the lab's continual frame
        if new in continual and tent in continual:
            gain = continual[new]["mean"] - continual[tent]["mean"]
            out[f"continual_mean_vs_{tent.replace('/', '_')}_plus_3"] = {"value": gain, "met": gain >= 0.03}
    for setting in ("continual", "episodic"):
        rows = table.get(setting, {})
        if new in rows and "source" in rows:
            below = {name: rows[new]["per_corruption"][name] - value
                     for name, value in rows["source"]["per_corruption"].items()
                     if rows[new]["per_corruption"][name] < value - 1e-9}
            out[f"{setting}_never_below_source"] = {"value": below, "met": not below}
    for setting in ("continual", "mixed"):
        rows = table.get(setting, {})
        if new in rows and "source" in rows:
            drop = rows["source"]["clean_after"] - rows[new]["clean_after"]
            out[f"{setting}_clean_within_2"] = {"value": drop, "met": drop <= margin + 1e-9}
    episodic = table.get("episodic", {})
    if new in episodic:
        worst = episodic[new]["clean_after_passed_min"]
        source_clean = episodic[new]["clean_source"]
        drop = None if worst is None else source_clean - worst
        out["episodic_clean_within_2"] = {"value": drop, "met": drop is None or drop <= margin + 1e-9}
    mixed = table.get("mixed", {})
    if new in mixed:
        run = mixed[new]["longest_run_below_source"]
        out["mixed_no_collapse"] = {"value": run, "met": run <= 1}
    return out


# ------------------------------------------------------------------------------------------------ run


def load_source(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, Any, Any]:
    """(source model, its card, its dataset in the model's label space)."""
    from zeal_core.errors import ModelError
    from zeal_core.models.registry import ModelRegistry
    from zeal_core.retrain import load_model_for_dataset

    registry = ModelRegistry(args.models_dir) if args.models_dir else ModelRegistry()
    version = args.model
    if version is None:
        cards = [card for card in registry.list() if card.dataset == args.dataset and not card.parent]
        if not cards:
            raise ModelError(f"no {args.dataset} model in {registry.root}: train one, or pass --model and "
                             "--models-dir")
        version = cards[0].version
    _, model, card, dataset = load_model_for_dataset(registry, version, args.dataset, device)
    return model, card, dataset


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-ready result."""
    from zeal_core import paths
    from zeal_core.device import resolve_device

    unknown = set(args.settings) - set(SETTINGS)
    if unknown:
        from zeal_core.errors import ConfigError

        raise ConfigError(f"unknown settings {sorted(unknown)}: use {list(SETTINGS)}")
    args.cache = str((Path(args.cache) if args.cache else paths.state_dir()) / "bench_adapt")
    device = resolve_device(args.device)
    source, card, dataset = load_source(args, device)
    start = time.perf_counter()
    seeds = {seed: run_seed(source, card.model_config, dataset, args, seed, device) for seed in args.seeds}
    table = summarise(seeds, args)
    result = {
        "machine": machine() | {"device": str(device)},
        "model": {"version": card.version, "arch": card.model_config.arch,
                  "image_size": card.model_config.image_size, "dataset": card.dataset},
        "protocol": {"corruptions": list(args.corruptions), "severity": args.severity, "n": args.n,
                     "batch_size": args.batch_size, "seeds": list(args.seeds),
                     "strategies": list(args.strategies), "settings": list(args.settings),
                     "max_clean_drop": args.max_clean_drop, "min_gain_z": args.min_gain_z,
                     "gate": not args.no_gate},
        "table": table,
        "targets": targets(table, margin=args.max_clean_drop),
        "literature_error_percent": LITERATURE,
        "seconds": time.perf_counter() - start,
        "per_seed": {str(seed): _strip(result) for seed, result in seeds.items()},
    }
    return result



def _strip(seed_result: dict[str, Any]) -> dict[str, Any]:
    """A seed's result without the live adapter objects (JSON-ready)."""
    return {setting: {strategy: {key: value for key, value in entry.items() if key != "adapter"}
                      for strategy, entry in strategies.items()}
            for setting, strategies in seed_result.items()}


def show(result: dict[str, Any]) -> None:
    """The tables for people: mean accuracy per setting and strategy, per corruption, and the targets."""
    protocol = result["protocol"]
    print(f"{result['model']['version']} ({result['model']['arch']}, {result['model']['image_size']} px), "
          f"severity {protocol['severity']:g}, {protocol['n']} images per corruption, batch "
          f"{protocol['batch_size']}, seeds {protocol['seeds']}, load {result['machine']['load_average']}")
    for setting, rows in result["table"].items():
        names = list(next(iter(rows.values()))["per_corruption"])
        print(f"\n{setting}: accuracy % (mean ± SE) | " + " ".join(name[:6] for name in names))
        for strategy, row in rows.items():
            keys = ("clean_after", "resets", "guard_refused", "guard_declined", "longest_run_below_source")
            extra = "".join(f" {key}={row[key]:.3g}" for key in keys if key in row)
            print(f"  {strategy:9s} {100 * row['mean']:5.1f} ± {100 * row['se_images']:.1f} | "
                  + " ".join(f"{100 * row['per_corruption'][name]:6.1f}" for name in names) + extra)
    print("\ntargets:")
    for name, target in result["targets"].items():
        print(f"  {name}: {'met' if target['met'] else 'MISSED'} ({target['value']})")


def main() -> int:
    """``python -m benchmarks.adapt``."""
    return script_main(__doc__.split("\n\n")[0], add_arguments, run, show, prog="python -m benchmarks.adapt")


if __name__ == "__main__":
    raise SystemExit(main())
