"""2-D maps of embeddings: UMAP (or PCA) fitted once on the reference, samples transformed into the same axes.

UMAP is compiled by numba on first use (10-30 s in a fresh process). ``warm_umap()`` does a tiny fit and
transform in a background thread so the first real fit is fast, and numba's compiled code is cached on disk
under ``state_dir()/numba_cache`` (``NUMBA_CACHE_DIR``, set before numba is imported; an existing setting is
kept). Pages show the PCA view until ``umap_ready()`` is True.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from zeal_core.errors import ConfigError
from zeal_core.paths import state_dir

METHODS = ("umap", "pca")

_WARM_LOCK = threading.Lock()
_WARM_DONE = threading.Event()
_WARM_THREAD: threading.Thread | None = None
_WARM_SECONDS: float | None = None  # how long the warm-up took (None until it finished)
_WARM_ERROR: str | None = None  # why the warm-up failed, if it did


def configure_numba_cache() -> str:
    """Point numba's on-disk cache at ``state_dir()/numba_cache`` (unless ``NUMBA_CACHE_DIR`` is set).

    Must run before numba is imported to take effect through the environment; if numba is already loaded,
    its config is updated in place so later compilations still use the folder. Returns the folder.
    """
    folder = os.environ.get("NUMBA_CACHE_DIR")
    if not folder:
        folder = str(state_dir() / "numba_cache")
        os.environ["NUMBA_CACHE_DIR"] = folder
    os.makedirs(folder, exist_ok=True)
    if "numba" in sys.modules:
        from numba.core import config as numba_config

        if not getattr(numba_config, "CACHE_DIR", ""):
            numba_config.CACHE_DIR = folder
    return folder


def _umap_class() -> Any:
    configure_numba_cache()
    import umap  # imported only after NUMBA_CACHE_DIR is set

    return umap.UMAP


def _check_features(features: Any, what: str, dims: int | None = None) -> np.ndarray:
    array = np.asarray(features, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] < 1:
        raise ConfigError(f"{what} must be a non-empty 2-D array (items x dims), got shape {array.shape}")
    if dims is not None and array.shape[1] != dims:
        raise ConfigError(f"{what} has {array.shape[1]} dims but the projection was fitted on {dims}: "
                          f"embed both with the same model")
    if not np.isfinite(array).all():
        raise ConfigError(f"{what} holds NaN or inf: fix or drop those items before projecting")
    return array


@dataclass
class Projector:
    """A fitted 2-D projection; ``transform`` puts new points into the reference's axes."""

    method: str  # "umap" or "pca"
    model: Any  # the fitted umap.UMAP or LinearProjection (PCA)
    reference_xy: np.ndarray  # float32, N_ref x 2: the reference's own coordinates
    dims: int  # feature dimension it was fitted on
    fit_seconds: float  # wall-clock time of the fit

    def transform(self, features: Any) -> np.ndarray:
        """N x D features -> N x 2 coordinates in the same axes as ``reference_xy``."""
        array = _check_features(features, "features", self.dims)
        return np.asarray(self.model.transform(array), dtype=np.float32)


def fit_projection(reference_features: Any, method: str = "umap", seed: int = 0, n_neighbors: int = 15,
                   min_dist: float = 0.1) -> Projector:
    """Fit a 2-D projection on the reference features.

    Args:
        reference_features: N x D features of the reference set.
        method: "umap" or "pca".
        seed: Random state (UMAP with a seed runs single-threaded, which keeps maps reproducible).
        n_neighbors: UMAP neighbourhood size (capped at N - 1).
        min_dist: UMAP minimum distance between embedded points.

    Raises:
        ConfigError: Unknown method, too few points, or bad values.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown projection method {method!r}: use one of {', '.join(METHODS)}")
    array = _check_features(reference_features, "reference features")
    start = time.perf_counter()
    if method == "pca":
        if array.shape[0] < 2:
            raise ConfigError("PCA needs at least 2 reference points")
        model = LinearProjection.fit_pca(array)
        xy = model.transform(array)
    else:
        if array.shape[0] < 4:
            raise ConfigError(f"UMAP needs at least 4 reference points, got {array.shape[0]}: use 'pca'")
        umap_class = _umap_class()
        model = umap_class(n_components=2, n_neighbors=max(2, min(n_neighbors, array.shape[0] - 1)),
                           min_dist=min_dist, random_state=seed, transform_seed=seed,
                           n_jobs=1)  # a seed forces one thread anyway; saying so silences the warning
        xy = model.fit_transform(array)
        _use_fast_exact_distances(model)
    return Projector(method=method, model=model, reference_xy=np.asarray(xy, dtype=np.float32),
                     dims=array.shape[1], fit_seconds=time.perf_counter() - start)


def _use_fast_exact_distances(model: Any) -> None:
    """Make ``transform`` of a small-data UMAP compute its exact distances with sklearn's fast euclidean.

    Below 4,096 reference points umap-learn finds the neighbours of new points exactly, by calling
    ``sklearn.metrics.pairwise_distances`` with its numba distance function as a Python callable: one
    Python call per pair, ~7 s for 1,000 x 1,000 points. Passing the metric name instead gives the same
    distances through one BLAS product (~0.05 s). The other route, forcing the NN-descent index, compiles
    a new numba search function for every fitted index (~20 s on a busy CPU), so it is not used.
    """
    if getattr(model, "_small_data", False) and not getattr(model, "_sparse_data", True) \
            and model.metric == "euclidean" and not model._metric_kwds:
        model._input_distance_func = "euclidean"


class LinearProjection:
    """x -> (x - mean) @ components.T, padded to two columns: a fitted PCA held as two arrays.

    Fitted with numpy's exact SVD (the reference is at most a few thousand rows), so it needs no sklearn
    import and is stored with the reference as plain arrays (``zeal_core.reference.persist``).
    """

    def __init__(self, mean: np.ndarray, components: np.ndarray) -> None:
        """Args:
        mean: float64, D: the reference's mean.
        components: float64, k x D (k <= 2): unit principal axes, largest variance first.
        """
        self.mean = mean
        self.components = components

    @classmethod
    def fit_pca(cls, array: np.ndarray) -> LinearProjection:
        """The top two principal axes of ``array`` (each axis's sign fixed by its largest loading)."""
        data = np.asarray(array, dtype=np.float64)
        mean = data.mean(axis=0)
        _, _, vt = np.linalg.svd(data - mean, full_matrices=False)
        components = vt[:min(2, vt.shape[0])]
        signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
        return cls(mean, components * np.where(signs == 0, 1.0, signs)[:, None])

    def transform(self, array: np.ndarray) -> np.ndarray:
        """N x D -> N x 2 (a zero second column when the features have one dimension)."""
        xy = (np.asarray(array, dtype=np.float64) - self.mean) @ self.components.T
        return xy if xy.shape[1] == 2 else np.c_[xy, np.zeros(len(xy))]


QUIET_BEFORE_WARM_S = 3.0  # s without any check before the background compile starts


def _warm_in_background() -> None:
    """The warm-up in a lull, at a lower priority than the sessions' checks: its numba compile takes 15-60
    CPU seconds and holds the GIL for much of them, so it waits until no check has run for a few seconds
    (PCA is shown meanwhile) instead of slowing every person's check on a busy server."""
    from zeal_core.scheduling import check_gate, yield_to_checks

    check_gate().wait_until_quiet(QUIET_BEFORE_WARM_S)
    yield_to_checks()
    _warm()


def _warm() -> None:
    global _WARM_SECONDS, _WARM_ERROR
    start = time.perf_counter()
    try:
        rng = np.random.default_rng(0)
        # Two blobs, 16-D: enough to run every numba kernel fit and transform use.
        points = np.r_[rng.normal(0, 1, (60, 16)), rng.normal(3, 1, (60, 16))].astype(np.float32)
        projector = fit_projection(points[:100], method="umap", n_neighbors=10)
        projector.transform(points[100:])
        _WARM_SECONDS = time.perf_counter() - start
    except Exception as error:  # reported by warm_status(); pages fall back to PCA
        _WARM_ERROR = f"{type(error).__name__}: {error}"
    finally:
        _WARM_DONE.set()


def warm_umap(background: bool = True) -> threading.Thread | None:
    """Compile UMAP's numba code with a tiny fit + transform, once per process.

    Args:
        background: Run in a daemon thread and return it at once; False blocks until done.

    Returns:
        The warm-up thread (None when run in the foreground or when already warm).
    """
    global _WARM_THREAD
    with _WARM_LOCK:
        if _WARM_DONE.is_set():
            return None
        if _WARM_THREAD is None:
            configure_numba_cache()
            _WARM_THREAD = threading.Thread(target=_warm_in_background, name="umap-warmup", daemon=True)
            _WARM_THREAD.start()
        thread = _WARM_THREAD
    if not background:
        thread.join()
        return None
    return thread


def umap_ready() -> bool:
    """True once the warm-up finished without error (UMAP fits then take about a second)."""
    return _WARM_DONE.is_set() and _WARM_ERROR is None


def warm_status() -> dict[str, Any]:
    """Warm-up state for a status line: started, ready, seconds, error, numba cache folder."""
    return {"started": _WARM_THREAD is not None, "ready": umap_ready(), "seconds": _WARM_SECONDS,
            "error": _WARM_ERROR, "numba_cache": os.environ.get("NUMBA_CACHE_DIR")}
