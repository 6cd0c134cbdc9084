"""2-D projections: PCA and UMAP shapes, samples transformed into the reference's axes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from zeal_core.embed import Embeddings
from zeal_core.errors import ConfigError


@pytest.fixture(scope="module", autouse=True)
def persistent_numba_cache(request: pytest.FixtureRequest) -> None:
    """Keep numba's compiled UMAP code between test runs (in pytest's cache folder, not the project)."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        os.environ["NUMBA_CACHE_DIR"] = str(request.config.cache.mkdir("numba"))


def blobs(seed: int, n: int, offset: float = 0.0) -> np.ndarray:
    """Three well-separated Gaussian clusters in 24-D."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 6, (3, 24))
    labels = np.arange(n) % 3
    return (centres[labels] + rng.standard_normal((n, 24)) + offset).astype(np.float32)


def embeddings_for(features: np.ndarray, offset: int = 0) -> Embeddings:
    n = len(features)
    probs = np.full((n, 3), 1 / 3, dtype=np.float32)
    labels = np.arange(n) % 3
    return Embeddings(features=features, probs=probs, preds=(labels + (np.arange(n) % 5 == 0)) % 3,
                      labels=labels, indices=np.arange(offset, offset + n),
                      affected=np.arange(n) % 2 == 0)


def test_pca_projection_transforms_into_the_same_axes() -> None:
    from zeal_core.projection import fit_projection

    reference = blobs(0, 90)
    projector = fit_projection(reference, method="pca")
    assert projector.reference_xy.shape == (90, 2) and projector.method == "pca"
    # Transforming the reference reproduces its own coordinates: one set of axes.
    assert np.allclose(projector.transform(reference), projector.reference_xy, atol=1e-4)
    moved = projector.transform(blobs(1, 30, offset=3.0))
    assert moved.shape == (30, 2) and np.isfinite(moved).all()
    with pytest.raises(ConfigError, match="dims"):
        projector.transform(reference[:, :10])
    with pytest.raises(ConfigError, match="method"):
        fit_projection(reference, method="tsne")
    nan_features = reference.copy()
    nan_features[0, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        fit_projection(nan_features, method="pca")


@pytest.mark.slow
def test_umap_fit_transform_and_warm_up() -> None:
    """One UMAP fit (numba compiles on first use: tens of seconds cold, cached on disk after)."""
    from zeal_core import projection

    projection.warm_umap(background=False)
    assert projection.umap_ready() and projection.warm_status()["error"] is None
    reference = blobs(0, 150)
    projector = projection.fit_projection(reference, method="umap", seed=0)
    assert projector.reference_xy.shape == (150, 2) and projector.method == "umap"
    near = projector.transform(blobs(1, 30))
    assert near.shape == (30, 2) and np.isfinite(near).all()
    # Same axes: each new point lands closest to the reference cluster of its own class.
    centres = np.stack([projector.reference_xy[np.arange(150) % 3 == k].mean(0) for k in range(3)])
    nearest = np.linalg.norm(near[:, None, :] - centres[None], axis=2).argmin(1)
    assert (nearest == np.arange(30) % 3).mean() >= 0.9
    # The fast exact-distance path places new points where umap-learn's own (slow) path does. Distances
    # differ only by float rounding, which can swap near-tied neighbours and nudge a point within its cluster.
    fresh = blobs(2, 20)
    fast = projector.transform(fresh)
    projector.model._input_distance_func = __import__("umap").distances.euclidean
    slow = projector.transform(fresh)
    extent = float(np.ptp(projector.reference_xy, axis=0).max())
    assert (np.abs(fast - slow).max(1) <= 0.01 * extent).mean() >= 0.8
    # A swapped neighbour can move a point by a few units, but never into another cluster.
    def cluster(points: np.ndarray) -> np.ndarray:
        return np.linalg.norm(points[:, None, :] - centres[None], axis=2).argmin(1)

    assert (cluster(fast) == cluster(slow)).all()
