"""Checks of values users and callers pass in (sample arrays, levels, counts): each returns the value in
the form wanted or raises ``ConfigError`` naming the value and the fix. Detectors, estimators, the
diagnosis and the reference all validate with these.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zeal_core.errors import ConfigError


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` as a float if it lies in (0, 1), else raise ConfigError."""
    return check_open_unit(alpha, "alpha", "0.05")


def check_open_unit(value: Any, what: str, example: str) -> float:
    """``value`` as a float strictly between 0 and 1, else ConfigError naming ``what`` and an example."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < number < 1.0:
        raise ConfigError(f"{what} must be in (0, 1), got {value!r}: use e.g. {example}")
    return number


def as_matrix(data: Any, what: str, min_rows: int = 2) -> np.ndarray:
    """Check a detector input and return it as a float64 2-D array (always a copy; never the caller's array).

    Args:
        data: Array-like, one row per item (a torch tensor works too).
        what: Name used in error messages, e.g. "reference" or "sample".
        min_rows: Fewest rows allowed (two-sample tests need at least 2).

    Raises:
        ConfigError: The input is not 2-D, has too few rows or no columns, or holds NaN/inf.
    """
    if hasattr(data, "detach"):  # a torch tensor, possibly on a GPU
        data = data.detach().cpu().numpy()
    try:
        array = np.array(data, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{what} must be a numeric 2-D array (items x dims): {error}") from None
    if array.ndim != 2:
        raise ConfigError(
            f"{what} must be 2-D (items x dims), got shape {array.shape}: reshape a single feature "
            f"vector to (N, 1) or stack items as rows"
        )
    if array.shape[0] < min_rows:
        raise ConfigError(f"{what} has {array.shape[0]} item(s); a two-sample test needs at least {min_rows}")
    if array.shape[1] < 1:
        raise ConfigError(f"{what} has no columns (shape {array.shape})")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise ConfigError(
            f"{what} holds NaN or inf in {bad} of {array.shape[0]} rows: drop or fix those items"
        )
    return array


def check_int(value: Any, what: str, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int in [low, high], else raise ConfigError naming ``what``."""
    whole_float = isinstance(value, float) and value.is_integer()
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer))) and not whole_float:
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    number = int(value)
    if number < low or (high is not None and number > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"{what} must be {bound}, got {value!r}")
    return number
