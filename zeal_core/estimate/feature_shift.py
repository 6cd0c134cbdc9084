"""How far a sample's features moved from the reference's: the covariate-shift gate of prior-matched ATC.

For each item, the mean Euclidean distance d_i from its penultimate-layer features to its k nearest reference
items, in log units and relative to what is usual for its predicted class on the reference:

    a_i = log d_i - log m_{yhat_i},   m_c = median over reference items predicted c of their own d

(reference items measure d leave-one-out). The sample's feature shift is r = mean_i a_i - mean_{i in R} a_i:
about 0 when the images look like the reference, also when only the class mix changed (each item is
compared with its own class), and positive when the images moved away (noise, fog, a rotation): r = 0.1
means the neighbours are ~10 % farther than usual.
"""

from __future__ import annotations

import numpy as np

from zeal_core.errors import ConfigError

NEIGHBOURS = 5  # k nearest reference items per item
MAX_REFERENCE = 1000  # reference items kept for the search (a seeded subset beyond): bounds estimate time
MIN_CLASS_ITEMS = 5  # a predicted class with fewer reference items is normalised by the overall median
CHUNK_ROWS = 1024  # sample rows per distance block (1024 x 1000 float32 = 4 MB)


class FeatureShift:
    """Reference features and per-class typical distances; scores items of any later sample."""

    def __init__(self, features: np.ndarray, preds: np.ndarray, num_classes: int, seed: int = 0) -> None:
        """Args:
        features: N x D reference features.
        preds: N predicted classes of the reference items.
        num_classes: C.
        seed: Picks the subset when N > ``MAX_REFERENCE``.

        Raises:
            ConfigError: Fewer than k + 1 reference items, or features with no columns.
        """
        features = np.asarray(features, dtype=np.float32)
        preds = np.asarray(preds, dtype=np.int64)
        if features.ndim != 2 or features.shape[1] < 1 or len(features) <= NEIGHBOURS:
            raise ConfigError(f"the feature shift needs more than {NEIGHBOURS} reference items with "
                              "features, "
                              f"got shape {features.shape}")
        if len(features) > MAX_REFERENCE:
            keep = np.sort(np.random.default_rng(seed).choice(len(features), MAX_REFERENCE, replace=False))
            features, preds = features[keep], preds[keep]
        self.features = features
        self.reference_preds = preds  # predicted classes of the kept reference items
        self.squared = (features.astype(np.float64) ** 2).sum(axis=1)
        own = np.log(self._distances(features, leave_one_out=True))
        overall = float(np.median(own))
        self.class_log_median = np.full(num_classes, overall)
        for c in range(num_classes):
            members = own[preds == c]
            if len(members) >= MIN_CLASS_ITEMS:
                self.class_log_median[c] = float(np.median(members))
        self.reference_items = own - self.class_log_median[preds]  # a_i of the reference items

    def _distances(self, features: np.ndarray, leave_one_out: bool = False) -> np.ndarray:
        """Mean distance to the k nearest reference items (excluding the item itself when leave_one_out)."""
        out = np.empty(len(features))
        skip = 1 if leave_one_out else 0
        for start in range(0, len(features), CHUNK_ROWS):
            block = np.asarray(features[start:start + CHUNK_ROWS], dtype=np.float32)
            squared = (block.astype(np.float64) ** 2).sum(axis=1)
            distance = squared[:, None] - 2.0 * (block @ self.features.T) + self.squared[None]
            nearest = np.partition(np.maximum(distance, 0.0), NEIGHBOURS + skip - 1, axis=1)
            nearest = np.sort(nearest[:, :NEIGHBOURS + skip], axis=1)[:, skip:]
            out[start:start + len(block)] = np.sqrt(nearest).mean(axis=1)
        return np.maximum(out, 1e-12)

    def item_scores(self, features: np.ndarray, preds: np.ndarray) -> np.ndarray:
        """a_i for every item of a sample (log-distance to the reference, relative to its class's usual)."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.features.shape[1]:
            raise ConfigError(f"the sample's features have shape {features.shape}, the reference's "
                              f"{self.features.shape[1]} columns: use the same model for both")
        return np.log(self._distances(features)) - self.class_log_median[np.asarray(preds, dtype=np.int64)]


def gate(shift: np.ndarray | float, low: float, high: float) -> np.ndarray:
    """0 below ``low``, 1 above ``high``, linear between: how sure we are the images themselves moved."""
    return np.clip((np.asarray(shift, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
