"""The embedded default dataset: scikit-learn's 1,797 real handwritten digits, as RGB 32 x 32 images.

It ships inside scikit-learn, so it works with no network at all.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from zeal_core.data.dataset import ImageDataset, content_fingerprint

DIGITS_SIZE = 32  # px; the 8 x 8 originals are upsampled bilinearly, 4x
DIGITS_VAL_FRACTION = 0.25  # share of each class held out for validation
DIGITS_SPLIT_SEED = 0  # fixed, so every run and every model sees the same split


def load_digits_dataset() -> ImageDataset:
    """Build the digits dataset (about 0.1 s, plus importing scikit-learn; deterministic)."""
    # scikit-learn is imported here, not at module level: it costs seconds, and every page of the app
    # imports this package (the app's first render waits for it).
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    pixels = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)  # N x 8 x 8, ink in [0, 1]
    upsampled = F.interpolate(pixels[:, None], size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear",
                              align_corners=False)
    # Dark ink on white paper, like a scanned page; grey replicated to three RGB channels.
    grey = ((1.0 - upsampled.clamp(0, 1)) * 255.0).round().to(torch.uint8)
    images = grey.expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    indices = np.arange(len(labels))
    _, val_indices = train_test_split(indices, test_size=DIGITS_VAL_FRACTION, stratify=bunch.target,
                                      random_state=DIGITS_SPLIT_SEED)
    is_val = torch.zeros(len(labels), dtype=torch.bool)
    is_val[torch.from_numpy(val_indices)] = True
    class_names = tuple(str(d) for d in range(10))
    return ImageDataset(
        name="digits",
        images=images,
        labels=labels,
        is_val=is_val,
        class_names=class_names,
        fingerprint=content_fingerprint(images, labels, is_val, class_names),
    )
