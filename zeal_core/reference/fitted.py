"""The fitted reference: fitted once per (model version, dataset, reference size, seed), checked many times.

``FittedReference`` holds the clean reference as the model sees it (features, logits, labels), every drift
detector fitted on it, and lazily the projection (UMAP/PCA), the per-image drift scores' reference
distances, and what the label-free estimators and the diagnosis need. ``check`` takes a simulated drift (a
``DriftSpec`` drawn from the held-out sample half), real images (a uint8 tensor) or ready embeddings and
returns one ``CheckReport``. Nothing in ``check`` changes the reference: every fitted object is read-only
after fitting, so one fitted reference serves every session of the app at once.

Built by ``fit_reference`` (``zeal_core.reference.fit``) from a registered model, which also keeps what it
fitted on disk (``zeal_core.reference.persist``) and restores it in the next process, or by
``FittedReference.from_embeddings`` for benchmarks that test precomputed embeddings.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zeal_core.corruptions import DriftSpec
from zeal_core.drift import DriftDetector, DriftResult, create_detector, list_detectors
from zeal_core.embed import Embeddings, compute_embeddings
from zeal_core.errors import ConfigError
from zeal_core.progress import CancelToken, ProgressCallback
from zeal_core.projection import Projector, fit_projection, umap_ready
from zeal_core.reference.config import PROJECTIONS, ReferenceConfig, check_parts
from zeal_core.reference.decision import bonferroni
from zeal_core.reference.labelfree import DEFAULT_ESTIMATORS, LabelFreeParts, preferred_order
from zeal_core.reference.report import CheckReport, TypicalImage
from zeal_core.reference.source import ModelSource
from zeal_core.reference.typical import drift_scores, reference_knn_distances
from zeal_core.scheduling import check_gate

THUMB_SIDE = 64  # px: a report keeps the tested images at most this large, for thumbnails
TYPICAL_COUNT = 12  # most drift-typical images listed per report
SPEC_CACHE_SIZE = 24  # simulated checks kept per reference (each holds n thumbnails: <= 12 MB at n = 1000)


@dataclass(frozen=True)
class SimulatedBatch:
    """Held-out images under a drift spec, as a simulated check or stream batch uses them."""

    images: torch.Tensor  # uint8 n x 3 x H x W, drifted, on the model's device
    labels: np.ndarray  # int64 n, in the model's output space (-1: a class the model never saw)
    positions: np.ndarray  # int64 n, positions in the split
    affected: np.ndarray  # bool n, True where the pixel steps changed the image


class FittedReference:
    """A clean reference with everything fitted on it; ``check`` tests a sample against it."""

    def __init__(self, reference: Embeddings, config: ReferenceConfig, *, dataset_name: str,
                 version: str | None = None, source: ModelSource | None = None,
                 bank_folder: Path | None = None, bank_positions: np.ndarray | None = None,
                 restored: dict[str, Any] | None = None, warm_store: Any = None,
                 settings: dict[str, Any] | None = None) -> None:
        """Fit every detector on ``reference`` (use ``fit_reference`` or ``from_embeddings``, not this).

        Args:
            reference: The clean reference embeddings (labels in the model's output space).
            config: What was fitted and how checks decide.
            dataset_name: The dataset it comes from (for reports).
            version: The model version, if any.
            source: The model and dataset, when checks of images and drift specs are to work.
            bank_folder: Where built shift banks are kept between processes (None: rebuilt each time).
            bank_positions: Split positions of the images the shift bank is made of (with ``source``; drawn
                independently of the reference size, so one warm-up serves every reference size).
            restored: What ``fitted_state()`` returned in an earlier process (knn distances, projections,
                bank-free estimators), used instead of refitting them.
            warm_store: Loads, keeps and locks the label-free warm-up (``LabelFreeParts``), or None.
            settings: The check settings to name in every report (default: from ``config``).
        """
        self.reference = reference
        self.config = config
        self.dataset_name = dataset_name
        self.version = version
        self.source = source
        names = list(config.detectors) or list_detectors()
        self.detectors: dict[str, DriftDetector] = {}
        for name in names:
            detector = create_detector(name, alpha=config.alpha, **{"seed": config.seed,
                                                                     **config.detector_options.get(name, {})})
            self.detectors[name] = detector.fit(_detector_input(reference, detector))
        self._lock = threading.Lock()
        restored = restored or {}
        self._projectors: dict[str, Projector] = dict(restored.get("projectors") or {})
        self._knn: np.ndarray | None = restored.get("knn")
        self._checks: OrderedDict[tuple, CheckReport] = OrderedDict()
        self._computing: dict[tuple, threading.Lock] = {}  # simulated checks being computed, by key
        self.bank_folder = bank_folder
        self.settings = dict(settings) if settings is not None else config.describe()
        self.label_free = self._label_free_parts(bank_positions, restored.get("estimators"), warm_store)

    def _label_free_parts(self, bank_positions: np.ndarray | None, estimators: dict[str, Any] | None,
                          warm_store: Any) -> LabelFreeParts:
        """The estimators and the diagnosis; a bank needs a model and labelled reference images."""
        labelled = self.reference.labels is not None
        bank_reference = None
        if self.source is not None and labelled and bank_positions is not None and len(bank_positions) >= 20:
            bank_reference = self.source.split_clean.subset(bank_positions)  # rows are split positions
        return LabelFreeParts(
            self.reference if labelled else None, bank_reference,
            None if bank_reference is None else self._build_bank,
            estimators=self.config.estimators or DEFAULT_ESTIMATORS, seed=self.config.seed,
            fitted=estimators, warm_store=warm_store if bank_reference is not None else None)

    def fitted_state(self) -> dict[str, Any]:
        """What a later process needs besides the embeddings to check without refitting: the per-image
        scores' reference distances, the PCA map and every bank-free estimator (fitted now if not yet)."""
        self.label_free.fit_bank_free()
        return {"knn": self._reference_knn(), "projectors": {"pca": self.projector("pca")},
                "estimators": self.label_free.bank_free_estimators()}

    @classmethod
    def from_embeddings(cls, reference: Embeddings, config: ReferenceConfig | None = None, *,
                        dataset_name: str = "embeddings", version: str | None = None) -> FittedReference:
        """A reference over precomputed embeddings (benchmarks, tests, the monitor after a retrain): its
        ``check`` takes Embeddings; ``version`` names the model that computed them, for reports."""
        return cls(reference, config or ReferenceConfig(), dataset_name=dataset_name, version=version)

    # ------------------------------------------------------------------------------------------------ info

    @property
    def reference_n(self) -> int:
        """Images in the reference."""
        return len(self.reference)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the model's outputs (the dataset's classes, or the model's own subset)."""
        if self.source is None:
            return tuple(str(index) for index in range(self.reference.probs.shape[1]))
        card_names = self.source.card.class_names
        return tuple(card_names) if card_names is not None else self.source.class_names

    @property
    def image_size(self) -> int:
        """Working size (px) real images are decoded to before the check: the dataset's."""
        if self.source is None:
            raise ConfigError("this reference was built from embeddings: check embeddings, not images")
        return int(self.source.image_size)

    @property
    def sample_pool_size(self) -> int:
        """Images in the held-out half simulated samples are drawn from."""
        return 0 if self.source is None else len(self.source.pool)

    # --------------------------------------------------------------------------------------------- checks

    def check(self, sample: DriftSpec | torch.Tensor | Embeddings | str, *, n: int | None = None,
              seed: int = 0, labels: torch.Tensor | np.ndarray | None = None,
              file_names: Sequence[str] | None = None, parts: Sequence[str] | None = None,
              projection: str = "auto", source: str | None = None, skipped: Sequence[tuple[str, str]] = (),
              timings: dict[str, float] | None = None,
              detectors: Sequence[str] | None = None) -> CheckReport:
        """Test a sample against the reference and report everything about it.

        Args:
            sample: A ``DriftSpec`` (or its text) to simulate on ``n`` images of the held-out sample half;
                uint8 N x 3 x H x W real images; or ``Embeddings`` computed by the same model.
            n: Images to draw for a drift spec (default: as many as the reference holds, capped by the pool).
            seed: Seeds the draw and the corruption of a drift spec.
            labels: True labels of real images, in the model's output space, when known.
            file_names: One name per real image (reports list the most drifted by name).
            parts: What to compute (``reference.config.PARTS``; default all).
            projection: "auto" (UMAP once warm, else PCA), "umap" or "pca".
            source: What the sample is, for the report (default: from the input).
            skipped: (file, reason) of real images that could not be read, carried into the report.
            timings: Seconds already spent by the caller (e.g. ``{"decode": 0.4}``), carried into the report.
            detectors: Test only these fitted detectors (the decision is then over them); default all.

        Raises:
            ConfigError: A bad spec, n, part or projection, or images for a reference without a model.
        """
        wanted = check_parts(parts)
        chosen = self._chosen(detectors)
        if projection not in PROJECTIONS:
            raise ConfigError(f"unknown projection {projection!r}: choose from {', '.join(PROJECTIONS)}")
        if isinstance(sample, str):
            sample = DriftSpec.parse(sample)
        if isinstance(sample, DriftSpec):
            return self._check_spec(sample, n, seed, wanted, projection, chosen)
        spent = dict(timings or {})
        with check_gate().slot(spent):
            start = time.perf_counter()
            if isinstance(sample, Embeddings):
                embedded, images = sample, None
            else:
                embedded, images = self._embed_images(sample, labels), _thumbnails(sample)
                spent["embed"] = time.perf_counter() - start
            names = tuple(file_names) if file_names is not None else None
            if names is not None and len(names) != len(embedded):
                raise ConfigError(f"{len(names)} file names for {len(embedded)} images")
            return self._assemble(embedded, wanted, projection, spent, chosen,
                                  source=source or _source_of(names), images=images, file_names=names,
                                  skipped=tuple(skipped))

    def _check_spec(self, spec: DriftSpec, n: int | None, seed: int, parts: tuple[str, ...],
                    projection: str, detectors: tuple[str, ...]) -> CheckReport:
        """A simulated sample: drawn from the held-out half, drifted, checked; the last few are cached."""
        self._require_source()
        count = self._sample_size(n)
        method = self._projection_method(projection) if "projection" in parts else None
        key = (spec.text, count, int(seed), parts, method, detectors)
        with self._lock:
            cached = self._cached_check(key)
            if cached is not None:
                return cached
            computing = self._computing.setdefault(key, threading.Lock())
        with computing:  # one computation per question: a second session asking it waits for the first's
            try:
                with self._lock:
                    cached = self._cached_check(key)
                if cached is not None:
                    return cached
                timings: dict[str, float] = {}
                with check_gate().slot(timings):
                    report = self._simulate_and_check(spec, count, seed, parts, method, detectors, timings)
                with self._lock:
                    self._checks[key] = report
                    while len(self._checks) > SPEC_CACHE_SIZE:
                        self._checks.popitem(last=False)
                return report
            finally:
                with self._lock:
                    self._computing.pop(key, None)

    def _cached_check(self, key: tuple) -> CheckReport | None:
        """A cached simulated check still current (one made before the diagnosis was warm is redone)."""
        cached = self._checks.get(key)
        if cached is None or (cached.pending and self.label_free.ready):
            return None
        self._checks.move_to_end(key)
        return cached

    def _simulate_and_check(self, spec: DriftSpec, count: int, seed: int, parts: tuple[str, ...],
                            method: str | None, detectors: tuple[str, ...],
                            timings: dict[str, float]) -> CheckReport:
        """Draw, drift and embed a simulated sample, then check it (``timings`` may hold the queue wait)."""
        source = self._require_source()
        start = time.perf_counter()
        batch = self.simulate_batch(spec, count, seed)
        embedded = self._embed_simulated(batch, spec)
        clean_preds = np.asarray(source.split_clean.preds)[batch.positions]
        timings["embed"] = time.perf_counter() - start
        return self._assemble(embedded, parts, method or "pca", timings, detectors,
                              source=f"drift spec {spec.text}", images=_thumbnails(batch.images), spec=spec,
                              clean_accuracy=float(np.mean(clean_preds == batch.labels)))

    def _embed_simulated(self, batch: SimulatedBatch, spec: DriftSpec) -> Embeddings:
        """The batch as the model sees it. Images the spec left untouched are exactly the clean split's, whose
        embeddings the reference holds: only the changed ones go through the model (none for a pure class
        mix, half at ``@0.5``)."""
        source = self._require_source()
        clean = source.split_clean.subset(batch.positions)
        values = {name: getattr(clean, name) for name in ("features", "probs", "preds", "logits")}
        changed = np.flatnonzero(batch.affected)
        if len(changed):
            rows = torch.from_numpy(changed)
            fresh = compute_embeddings(source.model, source.card.model_config, batch.images[rows.to(
                batch.images.device)], source.device, labels=batch.labels[changed],
                batch_size=self.config.batch_size)
            for name, array in values.items():
                if array is not None:
                    merged = np.array(array)
                    merged[changed] = getattr(fresh, name)
                    values[name] = merged
        return Embeddings(**values, labels=batch.labels, indices=batch.positions, spec=spec.text,
                          affected=batch.affected)

    def _assemble(self, embedded: Embeddings, parts: tuple[str, ...], projection: str,
                  timings: dict[str, float], detectors: tuple[str, ...], *, source: str,
                  images: torch.Tensor | None,
                  file_names: tuple[str, ...] | None = None, skipped: tuple[tuple[str, str], ...] = (),
                  spec: DriftSpec | None = None, clean_accuracy: float | None = None) -> CheckReport:
        """Run the asked-for parts on embedded images and put the report together."""
        start = time.perf_counter()
        results, decision = (), None
        if "detectors" in parts:
            results = self.test(embedded, detectors)
            decision = bonferroni(results, self.config.alpha)
            timings["detectors"] = time.perf_counter() - start
        coords = reference_coords = method = None
        if "projection" in parts:
            mark = time.perf_counter()
            projector = self.projector(self._projection_method(projection))
            coords, reference_coords, method = projector.transform(embedded.features), \
                projector.reference_xy, projector.method
            timings["projection"] = time.perf_counter() - mark
        scores, typical = None, ()
        if "typical" in parts and len(embedded):
            mark = time.perf_counter()
            scores = drift_scores(self.reference.features, self._reference_knn(), embedded.features)
            typical = _most_typical(scores, embedded, file_names)
            timings["typical"] = time.perf_counter() - mark
        estimates, diagnosis, pending = self._label_free(embedded, parts, decision, timings)
        # compute seconds; the wait for a check slot ("queued") is kept apart
        timings["total"] = sum(value for key, value in timings.items() if key not in ("total", "queued"))
        return CheckReport(
            source=source, version=self.version, dataset=self.dataset_name, n=len(embedded),
            reference_n=self.reference_n, spec=spec, results=results, decision=decision, sample=embedded,
            coords=coords, reference_coords=reference_coords, projection=method, drift_scores=scores,
            typical=typical, accuracy=embedded.accuracy if embedded.labels is not None else None,
            clean_accuracy=clean_accuracy, images=images, file_names=file_names, skipped=skipped,
            estimates=estimates, diagnosis=diagnosis, pending=pending, timings=timings,
            class_names=self.class_names, settings=self.settings)

    def _label_free(self, embedded: Embeddings, parts: tuple[str, ...], decision: Any,
                    timings: dict[str, float]) -> tuple[tuple, Any, tuple[str, ...]]:
        """The estimates and the diagnosis of a check, and the parts still waiting for the warm-up."""
        estimates, diagnosis, pending = (), None, []
        if "estimates" in parts and len(embedded) >= 2:
            mark = time.perf_counter()
            estimates, waiting = self.label_free.estimates(embedded)
            pending += ["estimates"] if waiting else []
            timings["estimates"] = time.perf_counter() - mark
        if "diagnosis" in parts and len(embedded) >= 2 and self.label_free.can_warm:
            mark = time.perf_counter()
            diagnosis = self.label_free.diagnose(embedded, None if decision is None else decision.drift)
            pending += ["diagnosis"] if diagnosis is None else []
            timings["diagnosis"] = time.perf_counter() - mark
        return preferred_order(estimates, diagnosis), diagnosis, tuple(pending)

    def _chosen(self, detectors: Sequence[str] | None) -> tuple[str, ...]:
        """The fitted detectors a check runs (all by default), in fitted order."""
        if detectors is None:
            return tuple(self.detectors)
        unknown = [name for name in detectors if name not in self.detectors]
        if unknown or not detectors:
            raise ConfigError(f"detector(s) {unknown or '(none)'} not fitted on this reference: choose from "
                              f"{', '.join(self.detectors)}")
        return tuple(name for name in self.detectors if name in detectors)

    def test(self, sample: Embeddings, detectors: Sequence[str] | None = None) -> tuple[DriftResult, ...]:
        """The fitted detectors' results on ``sample`` (all, or ``detectors``; in the order they were fitted).

        A detector that ranks the sample's most drift-typical rows (c2st) also gets those rows' positions in
        their split, ``details["most_drifted_indices"]``.
        """
        results = []
        for name in self._chosen(detectors):
            detector = self.detectors[name]
            result = detector.test(_detector_input(sample, detector))
            if "most_drifted" in result.details:
                rows = np.asarray(result.details["most_drifted"], dtype=np.int64)
                result.details["most_drifted_indices"] = np.asarray(sample.indices)[rows].tolist()
            results.append(result)
        return tuple(results)

    # ------------------------------------------------------------------------------------ lazily fitted

    def projector(self, method: str) -> Projector:
        """The 2-D projection of the reference (fitted on first use, then shared)."""
        with self._lock:
            if method not in self._projectors:
                self._projectors[method] = fit_projection(self.reference.features, method=method,
                                                          seed=self.config.seed)
            return self._projectors[method]

    def _projection_method(self, projection: str) -> str:
        if projection != "auto":
            return projection
        return "umap" if umap_ready() or "umap" in self._projectors else "pca"

    def _reference_knn(self) -> np.ndarray:
        with self._lock:
            if self._knn is None:
                self._knn = reference_knn_distances(self.reference.features)
            return self._knn

    def warm_label_free(self, *, background: bool = False, progress: ProgressCallback | None = None,
                        cancel: CancelToken | None = None) -> Any:
        """Build (or load) the shift bank and fit the diagnosis on it; see ``LabelFreeParts.warm``."""
        return self.label_free.warm(background=background, progress=progress, cancel=cancel)

    def _build_bank(self, progress: ProgressCallback | None, cancel: CancelToken | None) -> tuple:
        """The shift bank of the bank rows: read from ``bank_folder`` when built before, else built."""
        from zeal_core.reference.bank import bank_key, load_bank, save_bank
        from zeal_core.shifts import bank_specs, build_shift_bank

        source = self._require_source()
        bank_reference = self.label_free.bank_reference
        positions = np.asarray(bank_reference.indices, dtype=np.int64)
        specs = bank_specs()
        path = None
        if self.bank_folder is not None:
            key = bank_key(source.card.weights_sha256 or str(self.version), source.fingerprint,
                           positions, specs, self.config.seed)
            path = Path(self.bank_folder) / f"bank-{key}.npz"
            stored = load_bank(path)
            if stored is not None and len(stored) == len(specs):
                return stored
        images = source.split_images[torch.from_numpy(positions.copy())]
        labels = torch.from_numpy(np.array(bank_reference.labels))  # a writable copy
        bank = build_shift_bank(source.model, source.card.model_config, images, labels, specs, source.device,
                                seed=self.config.seed, batch_size=self.config.batch_size, progress=progress,
                                cancel=cancel)
        if path is not None:
            save_bank(path, bank)
        return bank

    # -------------------------------------------------------------------------------------------- inputs

    def _require_source(self) -> ModelSource:
        if self.source is None:
            raise ConfigError("this reference was built from embeddings: check embeddings, not images or "
                              "drift specs")
        return self.source

    def _sample_size(self, n: int | None) -> int:
        pool = self.sample_pool_size
        count = min(self.reference_n, pool) if n is None else int(n)
        if not 2 <= count <= pool:
            raise ConfigError(f"n = {count} images asked for, but the held-out sample half of "
                              f"{self.dataset_name} has {pool}: use 2 <= n <= {pool}")
        return count

    def simulate_batch(self, spec: DriftSpec, n: int, seed: int) -> SimulatedBatch:
        """``n`` held-out images drawn and drifted by ``spec`` (the sample a simulated check tests).

        The draw follows the spec's class mix (if any) over the held-out half; its pixel steps corrupt a
        seeded share ``spec.fraction`` of the images; the same (spec, n, seed) always gives the same batch.
        """
        source = self._require_source()
        positions = self._draw(spec, n, seed)
        clean = source.split_images[torch.from_numpy(positions)].to(source.device)
        drifted = spec.apply(clean, seed=int(seed)) if spec.steps else clean
        affected = (spec.affected_mask(n, seed=int(seed)).numpy() if spec.steps else np.zeros(n, dtype=bool))
        return SimulatedBatch(images=drifted, labels=source.model_labels(positions), positions=positions,
                              affected=affected)

    def _draw(self, spec: DriftSpec, n: int, seed: int) -> np.ndarray:
        """Split positions of a seeded sample of ``n`` held-out images under ``spec``'s class mix."""
        source = self._require_source()
        rows = spec.draw_positions(source.split_labels[source.pool], n, int(seed),
                                   class_names=source.class_names,
                                   known_classes=source.card.class_names)
        return source.pool[np.asarray(rows, dtype=np.int64)]

    def _embed_images(self, images: torch.Tensor, labels: torch.Tensor | np.ndarray | None) -> Embeddings:
        source = self._require_source()
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            raise ConfigError("images to check must be a uint8 N x 3 x H x W tensor (decode files with "
                              "zeal_core.data.decode_paths or decode_images first)")
        if images.shape[0] < 2:
            raise ConfigError(f"a check needs at least 2 images, got {images.shape[0]}")
        return compute_embeddings(source.model, source.card.model_config, images.to(source.device),
                                  source.device, labels=labels, batch_size=self.config.batch_size)


def _detector_input(embeddings: Embeddings, detector: DriftDetector) -> np.ndarray:
    return embeddings.probs if detector.input_kind == "probs" else embeddings.features


def _thumbnails(images: torch.Tensor) -> torch.Tensor:
    """The images on the CPU at most ``THUMB_SIDE`` px a side (what pages show on hover or in a grid)."""
    from zeal_core.augment import resize_uint8

    side = min(int(images.shape[-1]), THUMB_SIDE)
    return resize_uint8(images, side).cpu() if images.shape[-1] != side else images.cpu().clone()


def _most_typical(scores: np.ndarray, embedded: Embeddings,
                  file_names: tuple[str, ...] | None) -> tuple[TypicalImage, ...]:
    order = np.argsort(-scores, kind="stable")[:TYPICAL_COUNT]
    return tuple(TypicalImage(row=int(row), index=int(embedded.indices[row]), score=float(scores[row]),
                              name=file_names[row] if file_names else "") for row in order)


def _source_of(file_names: tuple[str, ...] | None) -> str:
    if not file_names:
        return "images"
    shown = ", ".join(file_names[:3])
    return f"{shown} (+{len(file_names) - 3} more)" if len(file_names) > 3 else shown
