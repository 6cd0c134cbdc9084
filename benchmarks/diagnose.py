"""``bench diagnose``: does the drift diagnosis name the drift, its family and its severity?

For each dataset (digits, Imagenette; a dataset without a registered model or prepared data is skipped
with a message) the diagnoser is fitted on the *reference* half of the validation split (``--reference-n``
images and the shift bank built from them: every kind x severity) and scored on the disjoint *sample*
half: a pool of ``--pool-n`` sample images is embedded clean and under every kind x severity once, and
each trial draws a random subset of n pool images (so trials of one cell share images: at n close to the
pool size they are far from independent, and the standard errors below are then too small).

Per n and severity: top-1 / top-3 accuracy of naming the corruption and top-1 of its family (diagnosis
with ``drift_detected=True``, as after a detector fired), the mean absolute error of the true corruption's
estimated severity, the own gate's detection rate (``drift_detected=None``) and the share called "unknown
shift"; the confusion matrix (true corruption x top-1 cause). Clean subsets: share with the verdict "no
drift". Label shift: subsets drawn with Dirichlet(``--dirichlet``) class priors; L1 error of the estimated
class proportions against the subset's actual proportions, and the verdicts. Partial drifts: a share of
each subset's images corrupted (top-1, estimated share, AUC of the per-image scores for "this image was
corrupted"). Held-out corruptions: the
diagnoser is refitted without one corruption and scored on it (is it called "unknown", or at least put in
the right family?). Speed: fit time and median diagnose time at n = 100, 500, 1000.

Writes ``reports/bench/diagnose_<dataset>.json`` / ``.md`` / ``_confusion.png`` (``--out``); embeddings
are cached under the state folder (``--cache``) so reruns skip the embedding.

Run: ``python -m benchmarks diagnose --json`` (or ``python -m benchmarks.diagnose``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import script_main
from zeal_core.progress import ProgressCallback, report

SIZES = (50, 100, 200, 500)
SEVERITIES = (1.0, 2.0, 3.0, 4.0, 5.0)
DATASETS = ("digits", "imagenette")
LABEL_SIZES = (100, 200, 500)
HOLDOUT = ("gaussian_noise", "motion_blur", "fog", "pixelate")  # one per ImageNet-C family
TARGET_SIZE = 100  # the targets are at n = 100, severity >= 3
TARGET_MIN_SEVERITY = 3.0
SPEED_SIZES = (100, 500, 1000)
FRACTIONS = (0.3, 0.6)  # partial drifts scored at n = 100
FRACTION_SEVERITIES = (3.0, 5.0)
CACHE_FORMAT = 1


def _csv(kind: type) -> Any:
    def parse(text: str) -> tuple:
        return tuple(kind(part) for part in text.split(",") if part.strip())

    return parse


def register(actions: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add ``bench diagnose``."""
    bench = actions.add_parser("diagnose", parents=[parent], help="drift diagnosis: top-1/top-3 corruption, "
                               "family, severity error, label shift, clean 'no drift'",
                               description=__doc__.split("\n\n")[0])
    add_arguments(bench)
    bench.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by the ``bench`` action and ``python -m``)."""
    parser.add_argument("--datasets", type=_csv(str), default=DATASETS, help="comma-separated")
    parser.add_argument("--model", action="append", default=[], metavar="DATASET=VERSION",
                        help="model version per dataset (default: the latest registered for it)")
    parser.add_argument("--kinds", type=_csv(str), default=None,
                        help="candidate kinds, comma-separated (default: every registered corruption)")
    parser.add_argument("--severities", type=_csv(float), default=SEVERITIES)
    parser.add_argument("--sizes", type=_csv(int), default=SIZES,
                        help="sample sizes (those above the pool are skipped)")
    parser.add_argument("--reference-n", type=int, default=500, help="reference images (fit + bank)")
    parser.add_argument("--pool-n", type=int, default=1000, help="sample-half images embedded per shift")
    parser.add_argument("--trials", type=int, default=10, help="subsets per kind x severity x size")
    parser.add_argument("--clean-trials", type=int, default=200, help="clean subsets per size")
    parser.add_argument("--label-trials", type=int, default=100, help="label-shifted subsets per size")
    parser.add_argument("--label-sizes", type=_csv(int), default=LABEL_SIZES)
    parser.add_argument("--dirichlet", type=float, default=1.0, help="concentration of the random priors")
    parser.add_argument("--holdout", type=_csv(str), default=HOLDOUT,
                        help="corruptions to hold out of the bank one at a time ('' for none)")
    parser.add_argument("--holdout-trials", type=int, default=20, help="subsets per held-out severity")
    parser.add_argument("--fractions", type=_csv(float), default=FRACTIONS,
                        help="shares of corrupted images for the partial-drift table")
    parser.add_argument("--fraction-trials", type=int, default=4, help="subsets per kind x severity x share")
    parser.add_argument("--diagnoser", default="signature")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="diagnoser option (JSON value), e.g. components=24")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (embedding only)")
    parser.add_argument("--out", default="reports/bench", help="folder for the JSON/Markdown/PNG ('' = none)")
    parser.add_argument("--cache", default=None, help="embedding cache folder (default <state>/bench_cache)")


# Embeddings ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """One dataset's embedded reference, bank and sample pool."""

    reference: Any  # Embeddings of the clean reference images (with labels)
    bank: tuple  # ShiftedSets of the reference images (fit)
    pool: Any  # Embeddings of the clean sample-pool images (with labels, used only to score)
    pool_shifted: dict  # spec text -> Embeddings of the pool under that shift
    class_names: tuple[str, ...]  # the model's classes
    info: dict[str, Any]  # version, sizes, accuracies, embedding time


def prepare(dataset_name: str, version: str, kinds: Sequence[str], severities: Sequence[float],
            reference_n: int, pool_n: int, seed: int, device: str, cache: Path | None,
            progress: ProgressCallback | None = None) -> Prepared:
    """Embed the reference half (clean + bank) and a pool of the sample half (clean + every shift)."""
    import torch

    from zeal_core.data import load_dataset
    from zeal_core.device import resolve_device
    from zeal_core.embed import compute_embeddings, part_positions
    from zeal_core.models.registry import ModelRegistry, label_map
    from zeal_core.shifts import bank_specs, build_shift_bank

    registry = ModelRegistry()
    card = registry.card(version)
    dataset = load_dataset(dataset_name)
    images, labels = dataset.split("val")
    mapping = label_map(card, dataset.class_names)
    model_labels = torch.from_numpy(mapping[labels.numpy()])
    specs = bank_specs(kinds, severities)
    key = json.dumps([CACHE_FORMAT, version, dataset.fingerprint, [spec.text for spec in specs], reference_n,
                      pool_n, seed])
    path = cache / f"diagnose_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz" if cache else None
    if path is not None and path.exists():
        report(progress, "embed", 1, 1, f"embeddings from cache {path}")
        return _load_prepared(path, specs, card.class_names or dataset.class_names)
    start = time.perf_counter()
    torch_device = resolve_device(device)
    model, card = registry.load(version, device=torch_device)
    halves = {}
    for part, count, offset in (("reference", reference_n, 0), ("sample", pool_n, 1)):
        known = part_positions(len(images), part)
        known = known[model_labels[torch.from_numpy(known)].numpy() >= 0]  # drop classes the model never saw
        chosen = np.sort(np.random.default_rng(seed + offset).choice(known, min(count, len(known)),
                                                                      replace=False))
        halves[part] = chosen
    outputs = {}
    for part, offset in (("reference", 0), ("sample", 1)):
        rows = torch.from_numpy(halves[part])
        part_images, part_labels = images[rows], model_labels[rows]
        clean = compute_embeddings(model, card.model_config, part_images.to(torch_device), torch_device,
                                   labels=part_labels)
        shifted = build_shift_bank(model, card.model_config, part_images, part_labels, specs, torch_device,
                                   seed=seed * 2 + offset, progress=progress)
        outputs[part] = (clean, shifted)
    reference, bank = outputs["reference"]
    pool, pool_bank = outputs["sample"]
    info = {"version": version, "dataset": dataset_name, "reference_images": len(reference),
            "pool_images": len(pool), "embed_seconds": round(time.perf_counter() - start, 1),
            "clean_accuracy_reference": reference.accuracy, "clean_accuracy_pool": pool.accuracy}
    prepared = Prepared(reference=reference, bank=bank, pool=pool,
                        pool_shifted={shifted.spec.text: shifted.embeddings for shifted in pool_bank},
                        class_names=tuple(card.class_names or dataset.class_names), info=info)
    if path is not None:
        _save_prepared(path, prepared)
    return prepared


def _save_prepared(path: Path, prepared: Prepared) -> None:
    from zeal_core.fileio import atomic_write_bytes

    arrays: dict[str, np.ndarray] = {}

    def put(prefix: str, embedded: Any) -> None:
        arrays[f"{prefix}/features"] = embedded.features
        arrays[f"{prefix}/logits"] = embedded.logits
        arrays[f"{prefix}/labels"] = embedded.labels
    put("reference", prepared.reference)
    put("pool", prepared.pool)
    for shifted in prepared.bank:
        put(f"bank/{shifted.spec.text}", shifted.embeddings)
    for text, embedded in prepared.pool_shifted.items():
        put(f"pool/{text}", embedded)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(
        {"info": prepared.info, "class_names": list(prepared.class_names)}).encode())


def _load_prepared(path: Path, specs: Sequence[Any], class_names: Sequence[str]) -> Prepared:
    from zeal_core.shifts import ShiftedSet, replace_spec

    data = np.load(path)
    meta = json.loads(path.with_suffix(".json").read_text())

    def get(prefix: str) -> Any:
        return _embeddings(data[f"{prefix}/features"], data[f"{prefix}/logits"], data[f"{prefix}/labels"])

    bank = tuple(ShiftedSet(spec, replace_spec(get(f"bank/{spec.text}"), spec)) for spec in specs)
    return Prepared(reference=get("reference"), bank=bank, pool=get("pool"),
                    pool_shifted={spec.text: get(f"pool/{spec.text}") for spec in specs},
                    class_names=tuple(meta.get("class_names") or class_names),
                    info={**meta["info"], "embeddings_cached": str(path)})


def _embeddings(features: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> Any:
    from zeal_core.embed import Embeddings

    shifted = logits - logits.max(1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(1, keepdims=True)
    return Embeddings(features=features, probs=probs.astype(np.float32), preds=logits.argmax(1),
                      labels=labels, indices=np.arange(len(features)), logits=logits)


# Sampling ---------------------------------------------------------------------------------------------------


def draw_label_shifted(pool_labels: np.ndarray, n: int, prior: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    """Positions of a sample of n pool images whose class counts are Multinomial(n, prior).

    Within a class images are drawn without replacement while the class has enough, else with replacement
    (a repeated image is an exact duplicate). Stand-in until the label-shift drift kind
    (``DriftSpec.draw_positions``) is on main; it will then be replaced by it.
    """
    counts = rng.multinomial(n, prior)
    parts = []
    for label, count in enumerate(counts):
        members = np.flatnonzero(pool_labels == label)
        if count and len(members):
            parts.append(rng.choice(members, count, replace=count > len(members)))
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def _rate(hits: int, trials: int) -> dict[str, float]:
    share = hits / trials if trials else float("nan")
    return {"rate": share, "se": float(np.sqrt(share * (1 - share) / trials)) if trials else float("nan"),
            "trials": trials}


def _mean(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray([value for value in values if value is not None and np.isfinite(value)], float)
    if not len(array):
        return {"mean": float("nan"), "se": float("nan"), "trials": 0}
    se = float(array.std(ddof=1) / np.sqrt(len(array))) if len(array) > 1 else float("nan")
    return {"mean": float(array.mean()), "se": se, "trials": len(array)}


# The grid ---------------------------------------------------------------------------------------------------


def score_corruptions(diagnoser: Any, prepared: Prepared, kinds: Sequence[str], severities: Sequence[float],
                      sizes: Sequence[int], trials: int, rng: np.random.Generator,
                      progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Top-1/top-3/family/severity/detection per (n, severity) and confusion counts per n."""
    from zeal_core.corruptions import DriftSpec, corruption_info

    cells: dict[str, dict[str, Any]] = {}
    confusion: dict[str, dict[str, dict[str, int]]] = {}
    pool_size = len(prepared.pool)
    for step, n in enumerate(sizes):
        confusion[str(n)] = {}
        for severity in severities:
            counts = Counter()
            severity_errors, top_errors, per_kind = [], [], {}
            for kind in kinds:
                text = DriftSpec(steps=((kind, float(severity)),)).text
                embedded = prepared.pool_shifted[text]
                family = corruption_info(kind).family
                kind_hits = 0
                for _ in range(trials):
                    rows = np.sort(rng.choice(pool_size, n, replace=False))
                    sample = embedded.subset(rows)
                    forced = diagnoser.diagnose(sample, drift_detected=True)
                    own = diagnoser.diagnose(sample)
                    ranked = [cause.kind for cause in forced.causes if cause.kind != "unknown"]
                    top = forced.causes[0]
                    counts["top1"] += top.kind == kind
                    kind_hits += top.kind == kind
                    counts["top3"] += kind in [cause.kind for cause in forced.causes[:3]]
                    counts["top3_known"] += kind in ranked[:3]
                    counts["family"] += top.family == family
                    counts["unknown"] += forced.verdict == "unknown shift"
                    counts["detected"] += own.verdict != "no drift"
                    counts["trials"] += 1
                    true_cause = forced.cause(kind)
                    if true_cause is not None and true_cause.severity is not None:
                        severity_errors.append(abs(true_cause.severity - severity))
                        if top.kind == kind:
                            top_errors.append(abs(true_cause.severity - severity))
                    row = confusion[str(n)].setdefault(f"{kind}:{severity:g}", {})
                    row[top.kind] = row.get(top.kind, 0) + 1
                per_kind[kind] = kind_hits / trials
            total = counts["trials"]
            cells[f"{n}|{severity:g}"] = {
                "n": n, "severity": severity,
                "top1": _rate(counts["top1"], total), "top3": _rate(counts["top3"], total),
                "top3_known": _rate(counts["top3_known"], total),
                "family_top1": _rate(counts["family"], total), "unknown": _rate(counts["unknown"], total),
                "detected_own_gate": _rate(counts["detected"], total),
                "severity_mae": _mean(severity_errors), "severity_mae_when_top1": _mean(top_errors),
                "top1_by_kind": per_kind}
        report(progress, "diagnose-grid", step + 1, len(sizes), f"n = {n} scored")
    return {"cells": cells, "confusion": confusion}


def mix_rows(clean: Any, shifted: Any, rows: np.ndarray, affected: np.ndarray) -> Any:
    """The pool images at ``rows``, shifted where ``affected`` and clean elsewhere (what ``spec@f`` gives)."""
    from zeal_core.embed import Embeddings

    def pick(name: str) -> np.ndarray:
        chosen, other = getattr(shifted, name)[rows], getattr(clean, name)[rows]
        mask = affected.reshape(-1, *([1] * (chosen.ndim - 1)))
        return np.where(mask, chosen, other)

    return Embeddings(features=pick("features"), probs=pick("probs"), preds=pick("preds"),
                      labels=pick("labels"), indices=np.asarray(rows), logits=pick("logits"),
                      affected=np.asarray(affected, dtype=bool))


def score_fractions(diagnoser: Any, prepared: Prepared, kinds: Sequence[str], severities: Sequence[float],
                    fractions: Sequence[float], n: int, trials: int,
                    rng: np.random.Generator) -> dict[str, Any]:
    """Partial drifts (``kind:severity@fraction``): top-1, 'unknown', fraction error, per-image score AUC."""
    from zeal_core.corruptions import DriftSpec, corruption_info

    results = {}
    for fraction in fractions:
        counts, fraction_errors, aucs = Counter(), [], []
        for kind in kinds:
            for severity in severities:
                spec = DriftSpec(steps=((kind, float(severity)),), fraction=float(fraction))
                shifted = prepared.pool_shifted[DriftSpec(steps=spec.steps).text]
                for _ in range(trials):
                    rows = np.sort(rng.choice(len(prepared.pool), n, replace=False))
                    affected = spec.affected_mask(n, seed=int(rng.integers(1 << 30))).numpy()
                    diagnosis = diagnoser.diagnose(mix_rows(prepared.pool, shifted, rows, affected),
                                                   drift_detected=True)
                    counts["top1"] += diagnosis.best.kind == kind
                    counts["family"] += diagnosis.best.family == corruption_info(kind).family
                    counts["unknown"] += diagnosis.verdict == "unknown shift"
                    counts["trials"] += 1
                    named = diagnosis.cause(kind)
                    if named is not None and "fraction" in named.details:
                        fraction_errors.append(abs(named.details["fraction"] - spec.affected_count(n) / n))
                    scores = diagnosis.details.get("image_scores")
                    if scores is not None and 0 < affected.sum() < n:
                        scores = np.asarray(scores)
                        aucs.append(float((scores[affected][:, None] > scores[~affected][None, :]).mean()))
        total = counts["trials"]
        results[f"{fraction:g}"] = {"n": n, "fraction": fraction, "severities": list(severities),
                                    "top1": _rate(counts["top1"], total),
                                    "family_top1": _rate(counts["family"], total),
                                    "unknown": _rate(counts["unknown"], total),
                                    "fraction_mae": _mean(fraction_errors), "image_score_auc": _mean(aucs)}
    return results


def score_clean(diagnoser: Any, pool: Any, sizes: Sequence[int], trials: int,
                rng: np.random.Generator) -> dict[str, Any]:
    """Share of clean sample subsets with the verdict "no drift" (own gate), per n."""
    results = {}
    for n in sizes:
        verdicts = Counter()
        for _ in range(trials):
            rows = np.sort(rng.choice(len(pool), n, replace=False))
            verdicts[diagnoser.diagnose(pool.subset(rows)).verdict] += 1
        results[str(n)] = {"no_drift": _rate(verdicts["no drift"], trials), "verdicts": dict(verdicts)}
    return results


def score_label_shift(diagnoser: Any, pool: Any, sizes: Sequence[int], trials: int, concentration: float,
                      rng: np.random.Generator) -> dict[str, Any]:
    """BBSE's L1 error and the verdicts on clean subsets with random Dirichlet class priors, per n."""
    labels = np.asarray(pool.labels)
    classes = pool.probs.shape[1]
    present = np.flatnonzero(np.bincount(labels, minlength=classes) > 0)
    results = {}
    for n in sizes:
        l1_actual, l1_prior, verdicts, named_forced = [], [], Counter(), 0
        for _ in range(trials):
            prior = np.zeros(classes)
            prior[present] = rng.dirichlet(np.full(len(present), concentration))
            rows = draw_label_shifted(labels, n, prior, rng)
            sample = pool.subset(rows)
            own = diagnoser.diagnose(sample)
            forced = diagnoser.diagnose(sample, drift_detected=True)
            verdicts[own.verdict] += 1
            named_forced += forced.causes[0].kind == "label_shift"
            estimate = np.array([(own.estimated_class_proportions or {}).get(j, 0.0) for j in range(classes)])
            actual = np.bincount(labels[rows], minlength=classes) / len(rows)
            l1_actual.append(float(np.abs(estimate - actual).sum()))
            l1_prior.append(float(np.abs(estimate - prior).sum()))
        results[str(n)] = {"l1_vs_sample": _mean(l1_actual), "l1_vs_prior": _mean(l1_prior),
                           "label_shift_verdict": _rate(verdicts["label shift"], trials),
                           "label_shift_top1_forced": _rate(named_forced, trials), "verdicts": dict(verdicts)}
    return results


def score_holdout(name: str, options: dict[str, Any], prepared: Prepared, held_out: Sequence[str],
                  severities: Sequence[float], n: int, trials: int, seed: int,
                  rng: np.random.Generator) -> dict[str, Any]:
    """Refit without each held-out corruption and diagnose samples of it: "unknown" and family rates."""
    from zeal_core.corruptions import DriftSpec, corruption_info
    from zeal_core.diagnose import create_diagnoser

    results = {}
    for kind in held_out:
        bank = [shifted for shifted in prepared.bank if shifted.corruption != kind]
        if len(bank) == len(prepared.bank) or n > len(prepared.pool):
            continue
        diagnoser = create_diagnoser(name, **options).fit(prepared.reference, bank, seed=seed)
        family = corruption_info(kind).family
        unknown = family_hits = total = detected = 0
        nearest = Counter()
        for severity in severities:
            embedded = prepared.pool_shifted[DriftSpec(steps=((kind, float(severity)),)).text]
            for _ in range(trials):
                rows = np.sort(rng.choice(len(prepared.pool), n, replace=False))
                diagnosis = diagnoser.diagnose(embedded.subset(rows), drift_detected=True)
                known = next(cause for cause in diagnosis.causes if cause.kind != "unknown")
                unknown += diagnosis.verdict == "unknown shift"
                family_hits += known.family == family
                detected += diagnoser.diagnose(embedded.subset(rows)).verdict != "no drift"
                nearest[known.kind] += 1
                total += 1
        results[kind] = {"n": n, "severities": list(severities), "unknown": _rate(unknown, total),
                         "nearest_known_same_family": _rate(family_hits, total),
                         "detected_own_gate": _rate(detected, total), "nearest": dict(nearest.most_common(4))}
    return results


def speed(diagnoser: Any, pool: Any, sizes: Sequence[int], rng: np.random.Generator,
          repeats: int = 15) -> dict[str, float]:
    """Median seconds of one ``diagnose`` call per n (rows drawn with replacement beyond the pool)."""
    timings = {}
    for n in sizes:
        rows = np.sort(rng.choice(len(pool), n, replace=n > len(pool)))
        sample = pool.subset(rows)
        diagnoser.diagnose(sample)  # warm-up
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            diagnoser.diagnose(sample)
            runs.append(time.perf_counter() - start)
        timings[str(n)] = float(np.median(runs))
    return timings


# Tables and figure ------------------------------------------------------------------------------------------


def _pct(cell: dict[str, float]) -> str:
    return f"{100 * cell['rate']:.0f} ± {100 * cell['se']:.0f}" if cell["trials"] else "-"


def _num(cell: dict[str, float]) -> str:
    return f"{cell['mean']:.2f} ± {cell['se']:.2f}" if cell["trials"] else "-"


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets: n = 100, severity >= 3 pooled; label shift at the largest size <= 500."""
    cells = [cell for cell in result["corruptions"]["cells"].values()
             if cell["n"] == TARGET_SIZE and cell["severity"] >= TARGET_MIN_SEVERITY]
    out: dict[str, Any] = {}
    if cells:
        for key in ("top1", "top3", "family_top1", "unknown", "detected_own_gate"):
            hits = sum(cell[key]["rate"] * cell[key]["trials"] for cell in cells)
            out[key] = _rate(round(hits), sum(cell[key]["trials"] for cell in cells))
        weights = [cell["severity_mae"]["trials"] for cell in cells]
        means = [cell["severity_mae"]["mean"] for cell in cells]
        ses = [cell["severity_mae"]["se"] for cell in cells]
        total = sum(weights)
        out["severity_mae"] = {"mean": float(np.dot(weights, means) / total),
                               "se": float(np.sqrt(np.dot(np.square(weights), np.square(ses))) / total),
                               "trials": total}
    clean = result["clean"].get(str(TARGET_SIZE))
    if clean:
        out["clean_no_drift"] = clean["no_drift"]
    label_sizes = sorted(int(size) for size in result["label_shift"])
    if label_sizes:
        size = max([s for s in label_sizes if s <= 500] or label_sizes)
        out["label_shift_l1"] = {**result["label_shift"][str(size)]["l1_vs_sample"], "n": size}
    return out


def markdown(result: dict[str, Any]) -> str:
    """The dataset's tables as Markdown."""
    info, machine = result["info"], result["machine"]
    lines = [f"### {info['dataset']} ({info['version']})", "",
             f"Machine: {machine['description']}. Reference {info['reference_images']} images (fit, bank of "
             f"{result['bank_sets']} shifts), sample pool {info['pool_images']} disjoint images; "
             f"fit {result['fit_seconds']:.0f} s; diagnose median "
             + ", ".join(f"{1000 * value:.0f} ms at n = {n}" for n, value in result["speed_s"].items())
             + ". Rates in % ± one standard error; trials per cell in the last column.", ""]
    goal = result["targets"]
    if goal:
        lines += ["Targets (n = 100, severity >= 3):", "",
                  "| measure | value | target |", "|---|---|---|"]
        for key, label, aim in (("top1", "top-1 corruption", ">= 80 %"),
                                ("top3", "top-3 corruption", ">= 95 %"),
                                ("family_top1", "top-1 family", ">= 90 %"),
                                ("clean_no_drift", "clean -> no drift (n = 100)", ">= 95 %")):
            if key in goal:
                lines.append(f"| {label} | {_pct(goal[key])} | {aim} |")
        if "severity_mae" in goal:
            lines.append(f"| severity MAE (levels) | {_num(goal['severity_mae'])} | <= 0.75 |")
        if "label_shift_l1" in goal:
            shift = goal["label_shift_l1"]
            lines.append(f"| label shift L1 (n = {shift['n']}) | {_num(shift)} | <= 0.15 |")
        lines.append("")
    lines += ["| n | severity | top-1 | top-3 | family top-1 | severity MAE | own gate detects | unknown "
              "| trials |",
              "|---|---|---|---|---|---|---|---|---|"]
    for cell in result["corruptions"]["cells"].values():
        lines.append(f"| {cell['n']} | {cell['severity']:g} | {_pct(cell['top1'])} | {_pct(cell['top3'])} | "
                     f"{_pct(cell['family_top1'])} | {_num(cell['severity_mae'])} | "
                     f"{_pct(cell['detected_own_gate'])} | {_pct(cell['unknown'])} | "
                     f"{cell['top1']['trials']} |")
    lines += ["", "| n | clean -> no drift | trials |", "|---|---|---|"]
    for n, cell in result["clean"].items():
        lines.append(f"| {n} | {_pct(cell['no_drift'])} | {cell['no_drift']['trials']} |")
    lines += ["", "| n | label shift L1 (vs sample) | L1 (vs prior) | verdict 'label shift' | "
              "top-1 when forced | trials |", "|---|---|---|---|---|---|"]
    for n, cell in result["label_shift"].items():
        lines.append(f"| {n} | {_num(cell['l1_vs_sample'])} | {_num(cell['l1_vs_prior'])} | "
                     f"{_pct(cell['label_shift_verdict'])} | {_pct(cell['label_shift_top1_forced'])} | "
                     f"{cell['l1_vs_sample']['trials']} |")
    if result.get("fractions"):
        lines += ["", "Partial drifts (a share of the images corrupted, severities "
                  f"{', '.join(f'{s:g}' for s in FRACTION_SEVERITIES)}, n = "
                  f"{next(iter(result['fractions'].values()))['n']}):", "",
                  "| share | top-1 | family top-1 | unknown | share error | per-image score AUC | trials |",
                  "|---|---|---|---|---|---|---|"]
        for cell in result["fractions"].values():
            lines.append(f"| {cell['fraction']:g} | {_pct(cell['top1'])} | {_pct(cell['family_top1'])} | "
                         f"{_pct(cell['unknown'])} | {_num(cell['fraction_mae'])} | "
                         f"{_num(cell['image_score_auc'])} | {cell['top1']['trials']} |")
    if result["holdout"]:
        lines += ["", "Held-out corruptions (refitted without them), n = "
                  f"{next(iter(result['holdout'].values()))['n']}:", "",
                  "| held out | 'unknown shift' | nearest known in its family | own gate detects | nearest |",
                  "|---|---|---|---|---|"]
        for kind, cell in result["holdout"].items():
            nearest = ", ".join(f"{name} {count}" for name, count in cell["nearest"].items())
            lines.append(f"| {kind} | {_pct(cell['unknown'])} | {_pct(cell['nearest_known_same_family'])} | "
                         f"{_pct(cell['detected_own_gate'])} | {nearest} |")
    lines += ["", "Most frequent confusions (n = 100, severity >= 3; true -> top-1, share of its trials):",
              ""]
    lines += [f"- {item}" for item in top_confusions(result)] or ["- none"]
    return "\n".join(lines) + "\n"


def pooled_confusion(result: dict[str, Any], n: int = TARGET_SIZE,
                     min_severity: float = TARGET_MIN_SEVERITY) -> tuple[list[str], list[str], np.ndarray]:
    """True corruption x top-1 cause counts at ``n``, pooled over severities >= ``min_severity``."""
    rows = result["corruptions"]["confusion"].get(str(n), {})
    kinds = list(dict.fromkeys(key.rsplit(":", 1)[0] for key in rows))
    columns = kinds + sorted({name for row in rows.values() for name in row} - set(kinds))
    matrix = np.zeros((len(kinds), len(columns)), dtype=np.int64)
    for key, row in rows.items():
        kind, severity = key.rsplit(":", 1)
        if float(severity) >= min_severity:
            for name, count in row.items():
                matrix[kinds.index(kind), columns.index(name)] += count
    return kinds, columns, matrix


def top_confusions(result: dict[str, Any], limit: int = 8) -> list[str]:
    """'true -> predicted: share' for the largest off-diagonal cells of the pooled confusion matrix."""
    kinds, columns, matrix = pooled_confusion(result)
    items = []
    for i, kind in enumerate(kinds):
        total = matrix[i].sum()
        for j, name in enumerate(columns):
            if name != kind and matrix[i, j]:
                items.append((matrix[i, j] / total, f"{kind} -> {name}: {100 * matrix[i, j] / total:.0f} %"))
    return [text for _, text in sorted(items, reverse=True)[:limit]]


def confusion_figure(result: dict[str, Any]) -> bytes:
    """PNG of the pooled confusion matrix (rows: true corruption, columns: top-1 cause), row-normalised."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in tests
    import matplotlib.pyplot as plt

    kinds, columns, matrix = pooled_confusion(result)
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(0.42 * len(columns) + 3, 0.38 * len(kinds) + 2.2))
    image = axes.imshow(shares, cmap="viridis", vmin=0, vmax=1)
    axes.set_xticks(range(len(columns)), columns, rotation=90, fontsize=8)
    axes.set_yticks(range(len(kinds)), kinds, fontsize=8)
    axes.set_xlabel("top-1 cause")
    axes.set_ylabel("true corruption")
    axes.set_title(f"{result['info']['dataset']}: diagnosis at n = {TARGET_SIZE}, severity >= "
                   f"{TARGET_MIN_SEVERITY:g}", fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.03, label="share of trials")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


# Entry points -----------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU, threads, accelerator and load: what every table states."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    cores = os.cpu_count() or 1
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    busy = load[0] > 0.75 * cores
    description = (f"{cores} CPU cores {platform.machine()}, {'GPU ' + gpu if gpu else 'no GPU'}, torch "
                   f"{torch.get_num_threads()} threads" + (f", under load (load average {load[0]:.1f})"
                                                           if busy else ""))
    return {"cpu_count": cores, "arch": platform.machine(), "gpu": gpu,
            "torch_threads": torch.get_num_threads(), "load_average": list(load), "under_load": busy,
            "description": description}


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    from zeal_core.config import parse_pairs

    return parse_pairs(pairs, "--option", "components=24")


def _model_versions(pairs: Sequence[str]) -> dict[str, str]:
    from zeal_core.errors import ConfigError

    versions = {}
    for pair in pairs:
        dataset, equals, version = pair.partition("=")
        if not equals:
            raise ConfigError(f"--model {pair!r}: use DATASET=VERSION")
        versions[dataset.strip()] = version.strip()
    return versions


def _skip_reason(dataset: str, versions: dict[str, str]) -> tuple[str | None, str | None]:
    """(version, None) when the dataset can run, else (None, why not)."""
    from zeal_core.data import is_prepared
    from zeal_core.errors import ZealError
    from zeal_core.models.registry import ModelRegistry

    try:
        if not is_prepared(dataset):
            return None, f"{dataset} is not prepared (python -m zeal_core data prepare {dataset})"
    except ZealError as error:
        return None, str(error)
    if dataset in versions:
        return versions[dataset], None
    card = ModelRegistry().latest(dataset)
    if card is None:
        return None, (f"no {dataset} model registered in the models folder: train one or copy one from "
                      "/work/zeal_shared/models (and set ZEAL_MODELS_DIR)")
    return card.version, None


def bench_dataset(dataset: str, version: str, args: argparse.Namespace,
                  progress: ProgressCallback | None = None) -> dict[str, Any]:
    """The whole benchmark on one dataset; returns a JSON-ready dict (see the module docstring)."""
    from zeal_core.corruptions import list_corruptions
    from zeal_core.diagnose import create_diagnoser
    from zeal_core.jsonable import to_jsonable
    from zeal_core.paths import state_dir

    kinds = list(args.kinds or list_corruptions())
    cache = Path(args.cache) if args.cache else state_dir() / "bench_cache"
    prepared = prepare(dataset, version, kinds, args.severities, args.reference_n, args.pool_n, args.seed,
                       args.device, cache, progress)
    options = _options(args.option)
    start = time.perf_counter()
    diagnoser = create_diagnoser(args.diagnoser, **options).fit(prepared.reference, prepared.bank,
                                                                 seed=args.seed)
    fit_seconds = time.perf_counter() - start
    report(progress, "diagnose-fit", 1, 1, f"{dataset}: fitted in {fit_seconds:.0f} s")
    rng = np.random.default_rng(args.seed + 1)
    pool = len(prepared.pool)
    sizes = [n for n in args.sizes if n <= pool]
    skipped = [n for n in args.sizes if n > pool]
    result: dict[str, Any] = {"info": prepared.info, "machine": machine(), "kinds": kinds,
                              "severities": list(args.severities), "sizes": sizes, "sizes_skipped": skipped,
                              "bank_sets": len(prepared.bank), "trials": args.trials,
                              "diagnoser": args.diagnoser, "options": options, "fit_seconds": fit_seconds,
                              "fit_report": getattr(diagnoser, "fit_report", {})}
    result["corruptions"] = score_corruptions(diagnoser, prepared, kinds, args.severities, sizes, args.trials,
                                              rng, progress)
    result["clean"] = score_clean(diagnoser, prepared.pool, sizes, args.clean_trials, rng)
    label_sizes = [n for n in args.label_sizes if n <= pool]
    result["label_shift"] = score_label_shift(diagnoser, prepared.pool, label_sizes, args.label_trials,
                                              args.dirichlet, rng)
    held = [kind for kind in args.holdout if kind in kinds]
    result["holdout"] = score_holdout(args.diagnoser, options, prepared, held,
                                      [s for s in args.severities if s >= TARGET_MIN_SEVERITY],
                                      min(TARGET_SIZE, pool), args.holdout_trials, args.seed, rng)
    result["fractions"] = score_fractions(diagnoser, prepared, kinds, FRACTION_SEVERITIES, args.fractions,
                                          min(TARGET_SIZE, pool), args.fraction_trials, rng)
    result["speed_s"] = speed(diagnoser, prepared.pool, SPEED_SIZES, rng)
    result["targets"] = targets(result)
    result["machine_after"] = machine()
    result = to_jsonable(result, nan_to_none=True)
    result["markdown"] = markdown(result)
    return result


def bench_diagnose(args: argparse.Namespace, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Run the benchmark on every dataset that can run; write the reports when ``--out`` is set."""
    from zeal_core.fileio import atomic_write_bytes, atomic_write_text

    start = time.perf_counter()
    versions = _model_versions(args.model)
    output: dict[str, Any] = {"datasets": {}, "skipped": {}}
    for dataset in args.datasets:
        version, reason = _skip_reason(dataset, versions)
        if version is None:
            print(f"bench diagnose: skipping {dataset}: {reason}", file=sys.stderr)
            output["skipped"][dataset] = reason
            continue
        result = bench_dataset(dataset, version, args, progress)
        output["datasets"][dataset] = result
        if args.out:
            folder = Path(args.out)
            atomic_write_text(folder / f"diagnose_{dataset}.json", json.dumps(result, indent=1) + "\n")
            atomic_write_text(folder / f"diagnose_{dataset}.md", result["markdown"])
            atomic_write_bytes(folder / f"diagnose_{dataset}_confusion.png", confusion_figure(result))
    output["seconds"] = round(time.perf_counter() - start, 1)
    return output


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Handler of ``python -m benchmarks diagnose``."""
    from zeal_core.cli import stderr_progress

    return bench_diagnose(args, progress=stderr_progress)


def _show(result: dict[str, Any]) -> None:
    for dataset in result["datasets"].values():
        print(dataset["markdown"])
    for dataset, reason in result["skipped"].items():
        print(f"skipped {dataset}: {reason}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.diagnose [options]``."""
    return script_main(__doc__, add_arguments, run, _show, argv, prog="python -m benchmarks.diagnose")


if __name__ == "__main__":
    sys.exit(main())
