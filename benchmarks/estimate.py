"""``bench estimate``: how close the label-free accuracy estimators come to the true accuracy under shift.

Per dataset (digits and Imagenette; a dataset whose data or model is missing is skipped with a message):

- Reference: ``--reference-n`` clean images of the validation split's "reference" half (labels known); the
  shift bank (``zeal_core.shifts.build_shift_bank``) corrupts those same images with every ``--kinds`` kind
  at every severity. Estimators are fitted on the reference (and, when ``needs_bank``, on the bank).
- Scored on the other half ("sample", never seen by any fit): every kind x severity applied to the whole
  half, the estimate against the true accuracy. An estimator fitted on the bank is scored
  leave-one-corruption-out (``zeal_core.estimate.splits``): fitted without the corruption it is scored on.
  ``--new-kinds`` (default: every registered corruption outside ImageNet-C, e.g. geometry and capture
  kinds) are scored the same way but never enter any bank: held out by construction.
- Small samples: at each ``--sizes`` n, ``--trials`` random draws of n images per shift (the same draws
  for every estimator); error against the draw's own accuracy, share of draws within 5 points, and how
  often the interval holds the accuracy of the whole shifted half (the stream's accuracy).
- Clean held-out: the sample half without corruption.
- Speed: fit seconds and median estimate milliseconds at n = 100 and 1000 (bootstrap included).

Embeddings are cached (logits, labels, features as float16) under
``$ZEAL_STATE_DIR/bench_estimate/<model version>/``, so a rerun only re-scores. ``--save`` writes
``reports/bench/estimate_<dataset>.json`` / ``.md`` and the scatter ``docs/figures/estimation_<dataset>.png``.

Run: ``python -m benchmarks estimate --json`` (or ``python -m benchmarks.estimate``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import script_main
from zeal_core.progress import ProgressCallback, report

DATASETS = ("digits", "imagenette")
SEVERITIES = (1.0, 2.0, 3.0, 4.0, 5.0)
SIZES = (50, 100, 200)
WITHIN = 0.05  # "within 5 points"
# Sample-half shift i corrupts with seed * 7919 + offset + i, the bank's spec i with seed * 7919 + i: no
# shared noise (spec seeds must stay below ~9e6: corruptions multiply them by ~1e12 inside).
SAMPLE_SEED_OFFSET = 50_000


def _csv(kind: type) -> Any:
    def parse(text: str) -> tuple:
        return tuple(kind(part.strip()) for part in text.split(",") if part.strip())

    return parse


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``bench estimate``."""
    bench = actions.add_parser("estimate", parents=[parent], help="label-free accuracy estimators: error "
                               "against the true accuracy under every corruption",
                               description=__doc__.split("\n\n")[0])
    add_arguments(bench)
    bench.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by the ``bench`` action and ``python -m``)."""
    parser.add_argument("--datasets", type=_csv(str), default=DATASETS, help="comma-separated (default "
                        "digits,imagenette)")
    parser.add_argument("--model", action="append", default=[], metavar="DATASET=VERSION",
                        help="model version per dataset (default: the latest registered for it)")
    parser.add_argument("--estimators", type=_csv(str), default=None, help="comma-separated (default all)")
    parser.add_argument("--kinds", type=_csv(str), default=None,
                        help="kinds in the bank and the main grid (default: the 19 ImageNet-C corruptions)")
    parser.add_argument("--new-kinds", type=_csv(str), default=None,
                        help="kinds scored but never in a bank (default: registered kinds outside "
                        "ImageNet-C)")
    parser.add_argument("--severities", type=_csv(float), default=SEVERITIES, help="comma-separated")
    parser.add_argument("--reference-n", type=int, default=500, help="reference images (capped at the half)")
    parser.add_argument("--sample-n", type=int, default=None, help="sample-half images (default: all)")
    parser.add_argument("--sizes", type=_csv(int), default=SIZES,
                        help="small-sample sizes (default 50,100,200)")
    parser.add_argument("--trials", type=int, default=20, help="draws per shift and size (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--save", action="store_true", help="write reports/bench/estimate_<dataset>.json/.md "
                        "and docs/figures/estimation_<dataset>.png")
    parser.add_argument("--root", default=".", help="repository root for --save (default: here)")
    parser.add_argument("--under-load", action="store_true",
                        help="say in the report that other processes shared the cores")


# Views: what the model saw ----------------------------------------------------------------------------------


@dataclass
class Views:
    """Everything the scoring needs for one dataset: reference, bank and the shifted sample half."""

    reference: Any  # Embeddings of the clean reference images (labels known)
    bank: tuple  # ShiftedSet per bank spec (reference images under each --kinds kind x severity)
    samples: dict[str, Any]  # spec text ("clean" too) -> Embeddings of the sample half under that shift
    kinds: list[str]  # bank / main-grid kinds
    new_kinds: list[str]  # kinds held out of every bank
    info: dict[str, Any] = field(default_factory=dict)


def _cache_path(cache: Path, part: str, spec_text: str, n: int, seed: int) -> Path:
    safe = spec_text.replace(":", "-").replace("@", "_").replace("+", "_")
    return cache / f"{part}-{n}-{seed}-{safe}.npz"


def _embed_cached(path: Path, make: Any) -> Any:
    """Embeddings from the cache file, or ``make()`` saved there (logits, labels, float16 features)."""
    from zeal_core.embed import Embeddings
    from zeal_core.fileio import atomic_write_bytes

    if path.exists():
        with np.load(path) as data:
            logits = data["logits"].astype(np.float32)
            return _from_logits(logits, data["labels"], data["features"].astype(np.float32), Embeddings)
    embeddings = make()
    import io

    buffer = io.BytesIO()
    np.savez(buffer, logits=embeddings.logits, labels=embeddings.labels,
             features=embeddings.features.astype(np.float16))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return embeddings


def _from_logits(logits: np.ndarray, labels: np.ndarray, features: np.ndarray, cls: Any) -> Any:
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    return cls(features=features, probs=probs.astype(np.float32),
               preds=logits.argmax(axis=1).astype(np.int64),
               labels=np.asarray(labels, dtype=np.int64), indices=np.arange(len(logits)), logits=logits)


def build_views(dataset_name: str, version: str | None, kinds: Sequence[str] | None,
                new_kinds: Sequence[str] | None, severities: Sequence[float], reference_n: int,
                sample_n: int | None, seed: int, device: str, progress: ProgressCallback | None = None
                ) -> Views | str:
    """Embed reference, bank and shifted sample half (cached); a string says why the dataset is skipped."""
    import torch

    from zeal_core import paths
    from zeal_core.corruptions import IMAGENET_C_ORDER, DriftSpec, list_corruptions, list_drift_kinds
    from zeal_core.data import is_prepared, load_dataset
    from zeal_core.device import resolve_device
    from zeal_core.embed import compute_embeddings, draw_positions, part_positions
    from zeal_core.models.registry import ModelRegistry, label_map
    from zeal_core.shifts import ShiftedSet, bank_specs, replace_spec

    if dataset_name != "digits" and not is_prepared(dataset_name):
        return f"{dataset_name} is not prepared (run `python -m zeal_core data prepare {dataset_name}`)"
    registry = ModelRegistry()
    card = registry.card(version) if version else registry.latest(dataset_name)
    if card is None:
        return f"no {dataset_name} model is registered in {paths.models_dir()} (train or copy one)"
    torch_device = resolve_device(device)
    model, card = registry.load(card.version, device=torch_device)
    dataset = load_dataset(dataset_name)
    registered = list_corruptions()
    kinds = list(kinds) if kinds else [name for name in IMAGENET_C_ORDER if name in registered]
    new_kinds = (list(new_kinds) if new_kinds is not None  # geometry and capture kinds: never in a bank
                 else [name for name in list_drift_kinds()
                       if name not in IMAGENET_C_ORDER and name not in kinds])
    images, labels = dataset.split("val")
    mapping = label_map(card, dataset.class_names)
    model_labels = torch.from_numpy(mapping[labels.numpy()])
    keep = model_labels >= 0  # items of classes the model never saw cannot be scored
    half = len(part_positions(images.shape[0], "reference"))
    reference_positions = draw_positions(images.shape[0], min(reference_n, half), seed=seed, part="reference")
    sample_pool = part_positions(images.shape[0], "sample")
    sample_positions = (sample_pool if sample_n is None or sample_n >= len(sample_pool)
                        else draw_positions(images.shape[0], sample_n, seed=seed, part="sample"))
    reference_positions = reference_positions[keep[reference_positions].numpy()]
    sample_positions = sample_positions[keep[sample_positions].numpy()]
    cache = paths.state_dir() / "bench_estimate" / card.version
    config = card.model_config

    def embed(part: str, positions: np.ndarray, spec: DriftSpec, spec_seed: int) -> Any:
        def make() -> Any:
            batch = images[torch.from_numpy(positions)].to(torch_device)
            if not spec.is_clean:
                batch = spec.apply(batch, seed=spec_seed)
            return compute_embeddings(model, config, batch, torch_device, labels=model_labels[positions])

        return _embed_cached(_cache_path(cache, part, spec.text, len(positions), spec_seed), make)

    start = time.perf_counter()
    reference = embed("reference", reference_positions, DriftSpec.parse("clean"), seed)
    specs = bank_specs(kinds, severities)
    bank = []
    for index, spec in enumerate(specs):  # the same seeds as build_shift_bank(seed=seed)
        shifted = embed("reference", reference_positions, spec, seed * 7919 + index)
        bank.append(ShiftedSet(spec=spec, embeddings=replace_spec(shifted, spec)))
        report(progress, "bank", index + 1, len(specs), f"{dataset_name}: bank {spec.text}")
    bank_seconds = time.perf_counter() - start
    sample_seed = seed * 7919 + SAMPLE_SEED_OFFSET
    samples = {"clean": embed("sample", sample_positions, DriftSpec.parse("clean"), sample_seed)}
    sample_specs = bank_specs(kinds + new_kinds, severities)
    for index, spec in enumerate(sample_specs):
        samples[spec.text] = embed("sample", sample_positions, spec, sample_seed + index)
        report(progress, "sample", index + 1, len(sample_specs), f"{dataset_name}: sample {spec.text}")
    info = {"dataset": dataset_name, "version": card.version, "image_size": config.image_size,
            "classes": config.num_classes, "reference_n": len(reference_positions),
            "sample_n": len(sample_positions), "bank_shifts": len(bank),
            "reference_accuracy": reference.accuracy, "clean_sample_accuracy": samples["clean"].accuracy,
            "embed_seconds": round(time.perf_counter() - start, 1),
            "bank_embed_seconds": round(bank_seconds, 1)}
    return Views(reference=reference, bank=tuple(bank), samples=samples, kinds=kinds, new_kinds=new_kinds,
                 info=info)


# Scoring ----------------------------------------------------------------------------------------------------


def _family(spec_text: str) -> str:
    from zeal_core.corruptions import corruption_info

    return "clean" if spec_text == "clean" else corruption_info(spec_text.split(":")[0]).family


def _kind(spec_text: str) -> str:
    return spec_text.split(":")[0]


def fitted_estimators(views: Views, names: Sequence[str], seed: int) -> dict[str, dict[str, Any]]:
    """name -> {held-out kind or "*": fitted estimator}: one fit per leave-one-corruption-out fold for the
    estimators that need the bank ("*" = fitted on the whole bank, for clean data and new kinds)."""
    from zeal_core.estimate import create_estimator, estimator_info, leave_one_corruption_out

    fitted: dict[str, dict[str, Any]] = {}
    for name in names:
        if not estimator_info(name).needs_bank:
            fitted[name] = {"*": create_estimator(name, seed=seed).fit(views.reference)}
            continue
        folds = {fold.held_out: create_estimator(name, seed=seed).fit(views.reference, fold.fit)
                 for fold in leave_one_corruption_out(views.bank)}
        folds["*"] = create_estimator(name, seed=seed).fit(views.reference, views.bank)
        fitted[name] = folds
    return fitted


def _for_shift(fits: dict[str, Any], spec_text: str) -> Any:
    """The fit that never saw ``spec_text``'s kind."""
    return fits.get(_kind(spec_text), fits["*"])


def score_full(views: Views, fitted: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per shift of the sample half: true accuracy and every estimator's estimate and interval."""
    rows = []
    for spec_text, sample in views.samples.items():
        row: dict[str, Any] = {"shift": spec_text, "kind": _kind(spec_text), "family": _family(spec_text),
                               "new_kind": _kind(spec_text) in views.new_kinds, "n": len(sample),
                               "true": sample.accuracy, "estimates": {}}
        for name, fits in fitted.items():
            result = _for_shift(fits, spec_text).estimate(sample)
            row["estimates"][name] = {"accuracy": result.accuracy, "low": result.low, "high": result.high}
        rows.append(row)
    return rows


def score_draws(views: Views, fitted: dict[str, dict[str, Any]], sizes: Sequence[int], trials: int,
                seed: int, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Errors of every estimator on ``trials`` random draws of each size from every shifted sample half."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for step, size in enumerate(sizes):
        errors: dict[str, list[float]] = {name: [] for name in fitted}
        covered: dict[str, list[bool]] = {name: [] for name in fitted}
        groups: dict[str, list[str]] = {name: [] for name in fitted}
        shifts = [(text, sample) for text, sample in views.samples.items() if len(sample) >= size]
        for spec_text, sample in shifts:
            population = sample.accuracy
            for _ in range(trials):
                draw = sample.subset(np.sort(rng.choice(len(sample), size=size, replace=False)))
                for name, fits in fitted.items():
                    result = _for_shift(fits, spec_text).estimate(draw)
                    errors[name].append(result.accuracy - draw.accuracy)
                    covered[name].append(result.low <= population <= result.high)
                    groups[name].append("new" if _kind(spec_text) in views.new_kinds else
                                        "clean" if spec_text == "clean" else "bank")
        out[str(size)] = {name: _draw_summary(errors[name], covered[name], groups[name]) for name in fitted}
        out[str(size)]["trials"] = trials
        out[str(size)]["shifts"] = len(shifts)
        report(progress, "draws", step + 1, len(sizes), f"n = {size} done")
    return out


def _draw_summary(errors: list[float], covered: list[bool], groups: list[str]) -> dict[str, Any]:
    errors_array = np.abs(np.asarray(errors))
    covered_array, group_array = np.asarray(covered), np.asarray(groups)
    summary = {}
    for group in ("bank", "new", "clean"):
        mask = group_array == group
        if mask.any():
            summary[group] = {"mae": float(errors_array[mask].mean()),
                              "within_5": float((errors_array[mask] <= WITHIN).mean()),
                              "coverage": float(covered_array[mask].mean()), "draws": int(mask.sum())}
    return summary


def summarise(rows: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """MAE (with standard error over shifts) per estimator: bank kinds, per family, new kinds, clean."""
    summary: dict[str, Any] = {}
    for name in names:
        def errors(select: Any, name: str = name) -> np.ndarray:
            return np.array([abs(row["estimates"][name]["accuracy"] - row["true"])
                             for row in rows if select(row)])

        entry: dict[str, Any] = {}
        for label, select in (("bank_kinds", lambda r: not r["new_kind"] and r["shift"] != "clean"),
                              ("new_kinds", lambda r: r["new_kind"])):
            values = errors(select)
            if len(values):
                entry[label] = {"mae": float(values.mean()), "se": _se(values), "max": float(values.max()),
                                "within_5": float((values <= WITHIN).mean()), "shifts": len(values)}
        entry["families"] = {}
        for family in sorted({row["family"] for row in rows if row["shift"] != "clean"}):
            values = errors(lambda r, f=family: r["family"] == f and r["shift"] != "clean")
            entry["families"][family] = {"mae": float(values.mean()), "se": _se(values),
                                         "shifts": len(values)}
        clean = [row for row in rows if row["shift"] == "clean"]
        if clean:
            estimate = clean[0]["estimates"][name]
            entry["clean"] = {"true": clean[0]["true"], "estimate": estimate["accuracy"],
                              "error": estimate["accuracy"] - clean[0]["true"],
                              "low": estimate["low"], "high": estimate["high"]}
        summary[name] = entry
    return summary


def _se(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def speed(views: Views, names: Sequence[str], seed: int, repeats: int = 5) -> dict[str, Any]:
    """Fit seconds (on the reference and the whole bank) and median estimate ms at n = 100 and 1000."""
    from zeal_core.estimate import create_estimator, estimator_info

    clean = views.samples["clean"]
    rows = np.random.default_rng(seed).integers(0, len(clean), 1000)
    large = clean.subset(rows)
    out = {}
    for name in names:
        start = time.perf_counter()
        bank = views.bank if estimator_info(name).needs_bank else None
        estimator = create_estimator(name, seed=seed).fit(views.reference, bank)
        fit_seconds = time.perf_counter() - start
        timings = {}
        for n in (100, 1000):
            sample = large.subset(np.arange(n))
            estimator.estimate(sample)  # warm-up
            times = []
            for _ in range(repeats):
                begin = time.perf_counter()
                estimator.estimate(sample)
                times.append(time.perf_counter() - begin)
            timings[f"estimate_ms_n{n}"] = round(1000 * float(np.median(times)), 1)
        out[name] = {"fit_seconds": round(fit_seconds, 3), "bootstrap": estimator.bootstrap, **timings}
    return out


# The own estimator's parts, and its assumption ------------------------------------------------------------

ABLATION = {  # pm-atc variants: what each part adds (options of create_estimator("pm-atc", ...))
    "atc-mc (no matching)": None,
    "matching, no gate": {"gate_low": -1e9, "gate_high": -1e9 + 1},
    "matching + gate (pm-atc)": {},
    "strength 0.5": {"strength": 0.5},
    "strength 2": {"strength": 2.0},
}


def ablation(views: Views, seed: int, trials: int = 5, size: int = 100) -> dict[str, Any]:
    """MAE of pm-atc's variants on the main-grid shifts (whole half, and ``trials`` draws of ``size``)."""
    from zeal_core.estimate import create_estimator

    rng = np.random.default_rng(seed)
    shifts = [(text, sample) for text, sample in views.samples.items()
              if text != "clean" and _kind(text) not in views.new_kinds]
    draws = [(sample, np.sort(rng.choice(len(sample), size=min(size, len(sample)), replace=False)))
             for _, sample in shifts for _ in range(trials)]
    out = {}
    for label, options in ABLATION.items():
        estimator = (create_estimator("atc-mc", seed=seed, bootstrap=1) if options is None
                     else create_estimator("pm-atc", seed=seed, bootstrap=1, **options))
        estimator.fit(views.reference)
        full = [abs(estimator.estimate(sample).accuracy - sample.accuracy) for _, sample in shifts]
        small = [abs(estimator.estimate(sample.subset(rows)).accuracy - sample.subset(rows).accuracy)
                 for sample, rows in draws]
        new = [abs(estimator.estimate(sample).accuracy - sample.accuracy)
               for text, sample in views.samples.items() if _kind(text) in views.new_kinds]
        out[label] = {"mae": float(np.mean(full)), f"mae_n{size}": float(np.mean(small)),
                      "mae_new_kinds": float(np.mean(new)) if new else None}
    return {"variants": out, "trials": trials, "size": size, "shifts": len(shifts)}


def clean_resplits(views: Views, names: Sequence[str], seed: int, splits: int = 20) -> dict[str, Any]:
    """Clean error over random re-splits of the clean images (reference + sample half) into a reference of
    the same size and a sample of the rest: how much of a single split's clean error is luck.

    Bank-fitted estimators keep the bank of the original reference images (only the clean reference moves).
    """
    from zeal_core.estimate import create_estimator, estimator_info

    reference, sample = views.reference, views.samples["clean"]
    pool = _concatenate(reference, sample)
    rng = np.random.default_rng(seed)
    errors: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(splits):
        order = rng.permutation(len(pool))
        fit_rows, test_rows = np.sort(order[:len(reference)]), np.sort(order[len(reference):])
        fit_part, test_part = pool.subset(fit_rows), pool.subset(test_rows)
        for name in names:
            needs_bank = estimator_info(name).needs_bank
            options = {"folds": 0} if needs_bank else {}
            estimator = create_estimator(name, seed=seed, bootstrap=1, **options)
            estimator.fit(fit_part, views.bank if needs_bank else None)
            errors[name].append(estimator.estimate(test_part).accuracy - test_part.accuracy)
    summary = {}
    for name, values in errors.items():
        absolute = np.abs(values)
        summary[name] = {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)),
                         "mean_abs": float(absolute.mean()), "within_2": float((absolute <= 0.02).mean())}
    return {"splits": splits, "errors": summary}


def _concatenate(first: Any, second: Any) -> Any:
    from zeal_core.embed import Embeddings

    return Embeddings(features=np.vstack([first.features, second.features]),
                      probs=np.vstack([first.probs, second.probs]),
                      preds=np.concatenate([first.preds, second.preds]),
                      labels=np.concatenate([first.labels, second.labels]),
                      indices=np.arange(len(first) + len(second)),
                      logits=np.vstack([first.logits, second.logits]))


def label_shift(views: Views, fitted: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Estimates on clean and on the strongest shift of each family when the sample holds only some classes
    (label shift: the assumption of prior matching broken on purpose)."""
    rows = []
    cases = [("clean", (0, 1, 2)), ("clean", (0,))]
    for family in ("noise", "weather"):
        worst = [text for text in views.samples if _family(text) == family and text.endswith(":5")]
        if worst:
            cases.append((worst[0], (0, 1, 2)))
    for spec_text, classes in cases:
        sample = views.samples[spec_text]
        keep = np.flatnonzero(np.isin(sample.labels, classes))
        if len(keep) < 10:
            continue
        subset = sample.subset(keep)
        rows.append({"shift": spec_text, "classes": list(classes), "n": len(subset), "true": subset.accuracy,
                     "estimates": {name: _for_shift(fits, spec_text).estimate(subset).accuracy
                                   for name, fits in fitted.items()}})
    return rows


# Report -----------------------------------------------------------------------------------------------------


def _points(value: float | None, digits: int = 1) -> str:
    """A share as points of accuracy (0.123 -> "12.3"); "-" for a missing value."""
    if value is None or not np.isfinite(value):
        return "-"
    return f"{100 * value:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    """The dataset's result as Markdown tables."""
    info, summary, draws = result["info"], result["summary"], result["draws"]
    names = list(summary)
    bank_n = sum(1 for row in result["rows"] if not row["new_kind"] and row["shift"] != "clean")
    lines = [f"### {info['dataset']}: model {info['version']} ({info['image_size']} px), {result['machine']}",
             "",
             f"Reference: {info['reference_n']} clean images of the validation split's reference half "
             f"(accuracy {info['reference_accuracy']:.3f}); bank: {info['bank_shifts']} shifts of those "
             f"images. Scored on the sample half ({info['sample_n']} images, clean accuracy "
             f"{info['clean_sample_accuracy']:.3f}) under {bank_n} shifts (every kind x severity); "
             "bank-fitted estimators leave the scored corruption out. Errors in points of accuracy; SE = "
             "standard error over shifts.", ""]
    sizes = [key for key in draws if key.isdigit()]
    lines += ["| estimator | MAE, all shifts (SE) | max | within 5 | "
              + " | ".join(f"n={size}: MAE / within 5" for size in sizes) + " | clean: est. vs true |",
              "|---" * (5 + len(sizes)) + "|"]
    for name in names:
        bank = summary[name].get("bank_kinds", {})
        cells = [f"{_points(bank.get('mae'))} ({_points(bank.get('se'))})", _points(bank.get("max")),
                 f"{_points(bank.get('within_5'), 0)} %"]
        for size in sizes:
            cell = draws[size][name].get("bank", {})
            cells.append(f"{_points(cell.get('mae'))} / {_points(cell.get('within_5'), 0)} %")
        clean = summary[name].get("clean", {})
        cells.append(f"{_points(clean.get('estimate'))} vs {_points(clean.get('true'))}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if sizes:
        first = draws[sizes[0]]
        lines += ["", f"Draws: {first['trials']} per shift and size ({first['shifts']} shifts, the same "
                  "draws for every estimator); error against each draw's own accuracy."]
    families = sorted({family for name in names for family in summary[name]["families"]})
    lines += ["", "MAE per corruption family (points):", "",
              "| estimator | " + " | ".join(families) + " |", "|---" * (len(families) + 1) + "|"]
    for name in names:
        fams = summary[name]["families"]
        cells = [_points(fams.get(family, {}).get("mae")) for family in families]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    at = "100" if "100" in draws else (sizes[0] if sizes else None)
    if at:
        held = ", ".join(f"{name} {_points(draws[at][name]['bank']['coverage'], 0)} %"
                         for name in names if "bank" in draws[at][name])
        lines += ["", f"Interval ({int(100 * result['level'])} %) holds the stream's accuracy (the whole "
                  f"shifted half), n = {at}: {held}."]
    new_rows = [row for row in result["rows"] if row["new_kind"]]
    if new_rows:
        lines += ["", "New kinds, never in any bank (MAE, points): " + ", ".join(
            f"{name} {_points(summary[name]['new_kinds']['mae'])}" for name in names) + ".", "",
            "| shift | true | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
        for row in new_rows:
            lines.append(f"| {row['shift']} | {_points(row['true'])} | " + " | ".join(
                _points(row["estimates"][name]["accuracy"]) for name in names) + " |")
    elif result.get("new_kinds_note"):
        lines += ["", result["new_kinds_note"]]
    resplits = result.get("clean_resplits")
    if resplits:
        cells = [f"{name} {_points(value['mean'])} ({_points(value['sd'])}), "
                 f"{_points(value['within_2'], 0)} %" for name, value in resplits["errors"].items()]
        lines += ["", f"Clean held-out over {resplits['splits']} random re-splits of the clean images "
                  "(reference of the same size, sample the rest): estimate minus truth, mean (SD), points; "
                  "share within 2 points: " + ", ".join(cells) + "."]
    lines += _ablation_lines(result.get("ablation"))
    lines += _label_shift_lines(result.get("label_shift"), names)
    calibration = result["calibration"]
    lines += ["", f"Temperature scaling on the reference: T = {calibration['temperature']:.3f}, ECE "
              f"{_points(calibration['ece_before'])} -> {_points(calibration['ece_after'])} points "
              "(15 bins)."]
    lines += ["", "Speed (CPU): " + ", ".join(
        f"{name} fit {value['fit_seconds']:.2f} s, estimate {value['estimate_ms_n100']:.0f} / "
        f"{value['estimate_ms_n1000']:.0f} ms at n = 100 / 1000 (B = {value['bootstrap']})"
        for name, value in result["speed"].items()) + "."]
    return "\n".join(lines)


def _ablation_lines(ablate: dict[str, Any] | None) -> list[str]:
    if not ablate:
        return []
    size = ablate["size"]
    lines = ["", f"What each part of pm-atc adds (MAE in points; whole half over {ablate['shifts']} shifts, "
             f"and {ablate['trials']} draws of n = {size} per shift; new kinds: whole half):", "",
             f"| variant | MAE | MAE n={size} | MAE new kinds |", "|---|---|---|---|"]
    for label, value in ablate["variants"].items():
        lines.append(f"| {label} | {_points(value['mae'])} | {_points(value[f'mae_n{size}'])} | "
                     f"{_points(value['mae_new_kinds'])} |")
    return lines


def _label_shift_lines(rows: list[dict[str, Any]] | None, names: list[str]) -> list[str]:
    if not rows:
        return []
    lines = ["", "Label shift (only the listed classes kept; true vs estimated accuracy, points):", "",
             "| shift | classes | n | true | " + " | ".join(names) + " |", "|---" * (len(names) + 4) + "|"]
    for row in rows:
        lines.append(f"| {row['shift']} | {','.join(map(str, row['classes']))} | {row['n']} | "
                     f"{_points(row['true'])} | "
                     + " | ".join(_points(row["estimates"][name]) for name in names) + " |")
    return lines


def scatter(result: dict[str, Any], path: Path) -> Path:
    """Estimated vs true accuracy, one panel per estimator (PNG via matplotlib's Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["summary"])
    rows = result["rows"]
    families = sorted({row["family"] for row in rows})
    colours = {family: plt.get_cmap("tab10")(index % 10) for index, family in enumerate(families)}
    columns = min(3, len(names))
    lines = -(-len(names) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(3.4 * columns, 3.3 * lines), sharex=True,
                                sharey=True, squeeze=False)
    axes = axes.ravel()
    for axis in axes[len(names):]:
        axis.set_visible(False)
    for axis, name in zip(axes, names, strict=False):
        for family in families:
            chosen = [row for row in rows if row["family"] == family]
            axis.scatter([100 * row["true"] for row in chosen],
                         [100 * row["estimates"][name]["accuracy"] for row in chosen], s=12,
                         color=colours[family], marker="^" if chosen and chosen[0]["new_kind"] else "o",
                         label=family, alpha=0.8)
        axis.plot([0, 100], [0, 100], color="grey", linewidth=0.8)
        mae = result["summary"][name].get("bank_kinds", {}).get("mae", float("nan"))
        axis.set_title(f"{name}\nMAE {100 * mae:.1f}", fontsize=9)
        axis.set_xlabel("true accuracy (%)")
        axis.tick_params(labelbottom=True)
        axis.set_xlim(-2, 102)
        axis.set_ylim(-2, 102)
    for axis in axes[::columns]:
        axis.set_ylabel("estimated accuracy (%)")
    axes[len(names) - 1].legend(fontsize=6, loc="lower right")
    figure.suptitle(f"{result['info']['dataset']}: estimated vs true accuracy, {len(rows)} shifts of the "
                    "sample half", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def machine(under_load: bool) -> str:
    """The machine line every table states."""
    import os

    import torch

    cores = os.cpu_count() or 1
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = ", under load (other processes shared the cores)" if under_load else ""
    return f"{cores} CPU cores {platform.machine()}, {gpu}, torch threads {torch.get_num_threads()}{load}"


# Entry points -----------------------------------------------------------------------------------------------


def bench_dataset(dataset_name: str, args: argparse.Namespace, progress: ProgressCallback | None = None
                  ) -> dict[str, Any]:
    """The whole benchmark for one dataset (``{"skipped": reason}`` when its data or model is missing)."""
    from zeal_core.estimate import list_estimators

    versions = dict(item.split("=", 1) for item in args.model)
    views = build_views(dataset_name, versions.get(dataset_name), args.kinds, args.new_kinds, args.severities,
                        args.reference_n, args.sample_n, args.seed, args.device, progress)
    if isinstance(views, str):
        print(f"bench estimate: skipping {dataset_name}: {views}", file=sys.stderr)
        return {"skipped": views}
    names = list(args.estimators or list_estimators())
    start = time.perf_counter()
    fitted = fitted_estimators(views, names, args.seed)
    rows = score_full(views, fitted)
    draws = score_draws(views, fitted, args.sizes, args.trials, args.seed, progress)
    first = next(iter(fitted[names[0]].values()))
    result = {"info": views.info, "machine": machine(args.under_load), "kinds": views.kinds,
              "new_kinds": views.new_kinds, "level": first.level, "rows": rows,
              "summary": summarise(rows, names), "draws": draws, "speed": speed(views, names, args.seed),
              "label_shift": label_shift(views, fitted),
              "clean_resplits": clean_resplits(views, names, args.seed),
              "ablation": ablation(views, args.seed) if "pm-atc" in names else None,
              "calibration": {key: first.fit_details[key]
                              for key in ("temperature", "ece_before", "ece_after")},
              "score_seconds": round(time.perf_counter() - start, 1)}
    if not views.new_kinds:
        result["new_kinds_note"] = ("No kinds outside ImageNet-C are registered yet (geometry and capture "
                                    "kinds come with the drift-kinds work): rerun with them to score new "
                                    "kinds.")
    result["table"] = markdown(result)
    if args.save:
        root = Path(args.root)
        from zeal_core.fileio import atomic_write_text
        from zeal_core.jsonable import to_jsonable

        figure = scatter(result, root / "docs" / "figures" / f"estimation_{dataset_name}.png")
        result["figure"] = str(figure.relative_to(root))
        reports = root / "reports" / "bench"
        atomic_write_text(reports / f"estimate_{dataset_name}.md", result["table"] + "\n")
        atomic_write_text(reports / f"estimate_{dataset_name}.json",
                          json.dumps(to_jsonable(result, nan_to_none=True), indent=1) + "\n")
    return result


def bench_estimate(args: argparse.Namespace, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Run the benchmark described in the module docstring; returns a JSON-ready dict."""
    from zeal_core.jsonable import to_jsonable

    start = time.perf_counter()
    output = {name: bench_dataset(name, args, progress) for name in args.datasets}
    seconds = round(time.perf_counter() - start, 1)
    return to_jsonable({"datasets": output, "seconds": seconds}, nan_to_none=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Handler of ``python -m benchmarks estimate``."""
    from zeal_core.cli import stderr_progress

    return bench_estimate(args, progress=stderr_progress)


def _show(result: dict[str, Any]) -> None:
    for name, value in result["datasets"].items():
        print(value.get("table", f"{name}: skipped: {value.get('skipped')}"), file=sys.stderr)
    print(json.dumps(result, default=str, indent=1))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.estimate [options]``: prints the Markdown tables, then the JSON."""
    return script_main(__doc__, add_arguments, run, _show, argv, prog="python -m benchmarks.estimate")


if __name__ == "__main__":
    sys.exit(main())
