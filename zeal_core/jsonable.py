"""One way to turn results into plain JSON values (numpy and torch scalars and arrays, paths, tuples)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(value: Any, *, nan_to_none: bool = False) -> Any:
    """``value`` with every numpy/torch array or scalar, tuple and path turned into lists, numbers and text.

    Args:
        value: Nested dicts, lists and tuples of numbers, strings, arrays, tensors and paths.
        nan_to_none: Replace NaN and infinities by None (strict JSON has no NaN; SQLite and browsers
            reading ``json.loads`` output choke on them).

    Returns:
        The same structure made of dict, list, str, int, float, bool and None only (dict keys become str).
    """
    if isinstance(value, dict):
        return {str(key): to_jsonable(item, nan_to_none=nan_to_none) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item, nan_to_none=nan_to_none) for item in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), nan_to_none=nan_to_none)
    if hasattr(value, "detach") and hasattr(value, "tolist"):  # a torch tensor, without importing torch
        return to_jsonable(value.detach().cpu().tolist(), nan_to_none=nan_to_none)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if nan_to_none and isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_default(value: Any) -> Any:
    """A ``default=`` for ``json.dumps``: numpy/torch values as numbers or lists, anything else as text."""
    converted = to_jsonable(value)
    return converted if converted is not value else str(value)
