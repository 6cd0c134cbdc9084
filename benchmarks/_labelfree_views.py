"""What ``bench estimate`` and ``bench diagnose`` score on: a model's view of reference, bank and sample pool.

- Reference: clean images of the validation split's *reference* half (labels known); the shift bank
  corrupts those same images with every bank kind (ImageNet-C by default) at every severity, with the seeds
  ``zeal_core.shifts.build_shift_bank(seed=seed)`` uses, so it is the bank a check would build.
- Pool: images of the disjoint *sample* half, clean and under every shift that is scored:
  ``bank`` kinds (scored leave-one-family-out), ``new`` kinds (registered kinds outside the bank: geometry,
  capture), ``external`` shifts (``benchmarks._external_shifts``: an independent PIL/numpy implementation,
  never fitted) and ``compound`` shifts (two corruptions at once).

Embeddings are cached per shift in the benchmarks' embedding cache (``benchmarks._embedding_cache``: keyed by
weights, data, image positions, shift and seed; features rounded to float16, probabilities recomputed from
the logits), so a rerun only re-scores, and a new shift only embeds itself.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._embedding_cache import EmbeddingCache
from benchmarks._external_shifts import EXTERNAL_SHIFTS, apply_external, external_text, parse_external
from zeal_core.progress import ProgressCallback, report

SEVERITIES = (1.0, 2.0, 3.0, 4.0, 5.0)
EXTERNAL_SEVERITIES = (1.0, 3.0, 5.0)
# Two corruptions at once (not in any bank as such; their parts are): what a real camera change often is.
COMPOUNDS = ("gaussian_noise:3+fog:3", "contrast:3+jpeg_compression:4", "motion_blur:3+brightness:4",
             "defocus_blur:2+shot_noise:2", "frost:2+pixelate:3", "zoom:2+gaussian_noise:2")
# A pool shift corrupts with seed * 7919 + offset + crc32(text) mod 1e6 (stable when shifts are added), the
# bank's spec i with seed * 7919 + i: no shared noise (corruption seeds must stay below ~9e6).
SAMPLE_SEED_OFFSET = 50_000
SPEC_SEED_STRIDE = 7919  # as zeal_core.shifts


@dataclass
class LabelFreeViews:
    """One dataset's embedded reference, bank and shifted sample pool (see the module docstring)."""

    reference: Any  # Embeddings of the clean reference images (labels known)
    bank: tuple  # ShiftedSet per bank spec (the reference images under each bank kind x severity)
    pool: Any  # Embeddings of the clean sample-pool images (labels used only to score)
    shifted: dict[str, Any]  # shift text -> Embeddings of the pool under it
    groups: dict[str, str]  # shift text -> "bank", "new", "external" or "compound"
    class_names: tuple[str, ...] = ()  # the model's outputs
    info: dict[str, Any] = field(default_factory=dict)  # version, sizes, accuracies, seconds

    def texts(self, *groups: str) -> list[str]:
        """Shift texts of the given groups (all when none is given), in embedding order."""
        return [text for text, group in self.groups.items() if not groups or group in groups]

    @property
    def bank_kinds(self) -> list[str]:
        """The bank's kinds, in order."""
        return list(dict.fromkeys(shifted.corruption for shifted in self.bank))


def shift_kind(text: str) -> str:
    """The kind a shift text names: ``fog`` for ``fog:3``, ``ext/rain`` for ``ext/rain:3``, the joined
    kinds for a compound (``gaussian_noise+fog``)."""
    return "+".join(part.rsplit(":", 1)[0] for part in text.split("+"))


def shift_severity(text: str) -> float:
    """The (first) severity of a shift text."""
    return float(text.split("+")[0].rsplit(":", 1)[1])


def shift_family(text: str) -> str:
    """The registry family of a zeal_core kind, ``external`` for this benchmark's own, ``compound`` for
    two at once, ``clean`` for none."""
    from zeal_core.corruptions import corruption_info

    if text == "clean":
        return "clean"
    if "+" in text:
        return "compound"
    if parse_external(text):
        return "external"
    return corruption_info(shift_kind(text)).family


def right_families(text: str) -> tuple[str, ...]:
    """Families a diagnosis may name for a shift (beyond "unknown shift", which is always right for a
    shift the bank does not hold)."""
    external = parse_external(text)
    if external:
        return EXTERNAL_SHIFTS[external[0]].families
    if "+" in text:
        return tuple(shift_family(part) for part in text.split("+"))
    return (shift_family(text),)


def embeddings_from_logits(logits: np.ndarray, labels: np.ndarray, features: np.ndarray) -> Any:
    """Embeddings with probabilities and predictions recomputed from float32 logits."""
    from zeal_core.embed import Embeddings

    logits = np.asarray(logits, dtype=np.float32)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    return Embeddings(features=np.asarray(features, dtype=np.float32), probs=probs.astype(np.float32),
                      preds=logits.argmax(axis=1).astype(np.int64), labels=np.asarray(labels, np.int64),
                      indices=np.arange(len(logits)), logits=logits)


def rounded(embeddings: Any) -> Any:
    """``embeddings`` as the views keep them: float16-rounded features, probabilities from the logits (a
    first run and a cached rerun score exactly the same numbers)."""
    features = embeddings.features.astype(np.float16)
    return embeddings_from_logits(embeddings.logits, embeddings.labels, features)


def pool_shifts(bank_kinds: Sequence[str], new_kinds: Sequence[str], severities: Sequence[float],
                external: Sequence[str], compounds: Sequence[str]) -> dict[str, str]:
    """Shift text -> group for every shift the pool is embedded under."""
    groups = {f"{kind}:{severity:g}": "bank" for kind in bank_kinds for severity in severities}
    groups |= {f"{kind}:{severity:g}": "new" for kind in new_kinds for severity in severities}
    groups |= {external_text(name, severity): "external" for name in external
               for severity in EXTERNAL_SEVERITIES}
    groups |= {text: "compound" for text in compounds}
    return groups


def build_views(dataset_name: str, version: str | None, *, bank_kinds: Sequence[str] | None = None,
                new_kinds: Sequence[str] | None = None, external: Sequence[str] | None = None,
                compounds: Sequence[str] = COMPOUNDS, severities: Sequence[float] = SEVERITIES,
                pool_severities: Sequence[float] | None = None, reference_n: int = 500, pool_n: int = 1000,
                seed: int = 0, device: str = "auto", with_pool: bool = True,
                progress: ProgressCallback | None = None, cache: Path | None = None) -> LabelFreeViews | str:
    """Embed reference, bank and shifted pool (cached); a string says why the dataset is skipped.

    ``with_pool=False`` embeds the reference and the bank only (the pool is then the clean pool alone);
    ``pool_severities`` (default: ``severities``) are the levels the pool is scored at; ``cache`` is the
    ``--cache`` folder of ``benchmarks._embedding_cache`` (default: the state folder).
    """
    import time

    import torch

    from zeal_core import paths
    from zeal_core.corruptions import IMAGENET_C_ORDER, DriftSpec, list_corruptions, list_drift_kinds
    from zeal_core.data import is_prepared, load_dataset
    from zeal_core.device import resolve_device
    from zeal_core.embed import compute_embeddings, draw_positions
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
    kinds = list(bank_kinds) if bank_kinds else [name for name in IMAGENET_C_ORDER if name in registered]
    new = (list(new_kinds) if new_kinds is not None
           else [name for name in list_drift_kinds() if name not in IMAGENET_C_ORDER and name not in kinds])
    images, labels = dataset.split("val")
    model_labels = torch.from_numpy(label_map(card, dataset.class_names)[labels.numpy()])
    keep = (model_labels >= 0).numpy()  # items of classes the model never saw cannot be scored
    half = int(np.ceil(len(images) / 2))
    reference_rows = draw_positions(len(images), min(reference_n, half), seed=seed, part="reference")
    pool_rows = draw_positions(len(images), min(pool_n, len(images) - half), seed=seed, part="sample")
    reference_rows, pool_rows = reference_rows[keep[reference_rows]], pool_rows[keep[pool_rows]]
    store = EmbeddingCache.for_model(card, dataset, torch_device, cache)

    def embed(part: str, rows: np.ndarray, text: str, spec_seed: int) -> Any:
        def make() -> Any:
            batch = images[torch.from_numpy(rows)].to(torch_device)
            named = parse_external(text)
            if named:
                batch = apply_external(batch, named[0], named[1], seed=spec_seed)
            elif text != "clean":
                batch = DriftSpec.parse(text).apply(batch, seed=spec_seed)
            return rounded(compute_embeddings(model, card.model_config, batch, torch_device,
                                              labels=model_labels[rows]))

        return store.one(rows, text, spec_seed, make)

    start = time.perf_counter()
    reference = embed("reference", reference_rows, "clean", seed)
    bank = []
    specs = bank_specs(kinds, severities)
    for index, spec in enumerate(specs):
        shifted = embed("reference", reference_rows, spec.text, seed * SPEC_SEED_STRIDE + index)
        bank.append(ShiftedSet(spec=spec, embeddings=replace_spec(shifted, spec)))
        report(progress, "bank", index + 1, len(specs), f"{dataset_name}: bank {spec.text}")
    externals = list(external if external is not None else EXTERNAL_SHIFTS)
    groups = pool_shifts(kinds, new, pool_severities or severities, externals, compounds) if with_pool else {}
    pool_seed = seed * SPEC_SEED_STRIDE + SAMPLE_SEED_OFFSET
    pool = embed("sample", pool_rows, "clean", pool_seed)
    shifted_pool = {}
    for index, text in enumerate(groups):
        text_seed = pool_seed + zlib.crc32(text.encode()) % 1_000_000
        shifted_pool[text] = embed("sample", pool_rows, text, text_seed)
        report(progress, "pool", index + 1, len(groups), f"{dataset_name}: pool {text}")
    info = {"dataset": dataset_name, "version": card.version, "image_size": card.model_config.image_size,
            "classes": card.model_config.num_classes, "reference_n": len(reference_rows),
            "pool_n": len(pool_rows), "bank_shifts": len(bank), "reference_accuracy": reference.accuracy,
            "clean_pool_accuracy": pool.accuracy, "embed_seconds": round(time.perf_counter() - start, 1),
            "embedding_cache": store.summary()}
    return LabelFreeViews(reference=reference, bank=tuple(bank), pool=pool, shifted=shifted_pool,
                          groups=groups, class_names=tuple(card.class_names or dataset.class_names),
                          info=info)


DATASETS = ("digits", "imagenette")


def add_view_arguments(parser: Any) -> None:
    """The options of ``bench estimate`` and ``bench diagnose`` that choose the model, bank and pool."""
    from benchmarks._harness import listed

    parser.add_argument("--datasets", type=listed(str), default=DATASETS,
                        help="comma-separated (default digits,imagenette)")
    parser.add_argument("--model", action="append", default=[], metavar="DATASET=VERSION",
                        help="model version per dataset (default: the latest registered for it)")
    parser.add_argument("--kinds", type=listed(str), default=None,
                        help="bank kinds, comma-separated (default: the ImageNet-C corruptions)")
    parser.add_argument("--new-kinds", type=listed(str), default=None,
                        help="registered kinds never in a bank (default: those outside ImageNet-C)")
    parser.add_argument("--external", type=listed(str), default=None,
                        help="independent-implementation shifts (default: all of _external_shifts)")
    parser.add_argument("--compounds", type=listed(str), default=COMPOUNDS, help="two-kind specs")
    parser.add_argument("--severities", type=listed(float), default=SEVERITIES, help="comma-separated")
    parser.add_argument("--pool-severities", type=listed(float), default=None,
                        help="levels the pool is scored at (default: --severities)")
    parser.add_argument("--reference-n", type=int, default=500,
                        help="reference images: fit and bank (capped at the half)")
    parser.add_argument("--pool-n", type=int, default=1000,
                        help="sample-pool images embedded per shift (capped at the half)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (embedding)")


def views_for(dataset_name: str, args: Any, progress: ProgressCallback | None = None,
              **overrides: Any) -> LabelFreeViews | str:
    """``build_views`` with the options of ``add_view_arguments`` (and ``--cache``); ``overrides`` replace
    some (e.g. ``pool_n``, ``with_pool``)."""
    versions = dict(item.split("=", 1) for item in args.model)
    options = {"bank_kinds": args.kinds, "new_kinds": args.new_kinds, "external": args.external,
               "compounds": args.compounds, "severities": args.severities,
               "pool_severities": args.pool_severities, "reference_n": args.reference_n,
               "pool_n": args.pool_n, "seed": args.seed, "device": args.device, "progress": progress,
               "cache": getattr(args, "cache", None)}
    return build_views(dataset_name, versions.get(dataset_name), **(options | overrides))
