"""Per-image drift scores: how unlike the reference each tested image looks to the model.

For every reference image, the distance from its features to its k-th nearest *other* reference image is
the reference's own spread at that point. A tested image's score is the share of those reference distances
that its own k-th nearest reference distance exceeds: 0.5 is a typical reference image, 0.99 is further from
the reference than 99 % of the reference itself is. Unlike a classifier two-sample test, the score needs no
second sample to train on, so it works for a batch of 2 images as well as 1,000, and it never uses labels.
"""

from __future__ import annotations

import numpy as np
import torch

from zeal_core.errors import ConfigError

NEIGHBOURS = 5  # k: the k-th nearest reference neighbour sets the distance (robust to one near-duplicate)


def reference_knn_distances(reference: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """Sorted leave-one-out k-th nearest-neighbour distances of the reference rows (float64, M)."""
    if reference.shape[0] <= k:
        raise ConfigError(f"drift scores need more than {k} reference items, got {reference.shape[0]}")
    ref = torch.from_numpy(np.array(reference, dtype=np.float32))
    distances = torch.cdist(ref, ref)
    distances.fill_diagonal_(float("inf"))  # leave each item out of its own neighbours
    kth = distances.kthvalue(k, dim=1).values
    return np.sort(kth.double().numpy())


def drift_scores(reference: np.ndarray, sorted_reference_distances: np.ndarray, sample: np.ndarray,
                 k: int = NEIGHBOURS) -> np.ndarray:
    """Score in [0, 1] per sample row: the share of reference k-NN distances below its own (see module)."""
    if sample.shape[0] == 0:
        return np.zeros(0)
    ref = torch.from_numpy(np.array(reference, dtype=np.float32))
    rows = torch.from_numpy(np.array(sample, dtype=np.float32))
    kth = torch.cdist(rows, ref).kthvalue(k, dim=1).values.double().numpy()
    return np.searchsorted(sorted_reference_distances, kth, side="left") / len(sorted_reference_distances)
