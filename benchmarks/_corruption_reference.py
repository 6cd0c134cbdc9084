"""The reference ImageNet-C implementation (bethgelab ``imagecorruptions``), patched to run on numpy 2.

For tests and benchmarks only: ``bench corruptions`` and ``tests/test_corruptions_reference.py`` import it,
nothing else in the lab does, and ``imagecorruptions`` itself is imported only when ``load_reference`` is
called (it is not a dependency of the lab). The leading underscore keeps ``python -m benchmarks``
from taking this module for a benchmark action (``benchmarks._actions``).

``imagecorruptions`` 1.1.2 was written for numpy 1 and scikit-image < 0.19; three things break on today's
stack, and each gets the smallest fix that leaves the algorithm untouched:

- ``plasma_fractal`` (fog) allocates with ``np.float_``, removed in numpy 2: the module gets a numpy proxy
  that adds ``float_ = float64``; numpy itself is not changed.
- ``gaussian(..., multichannel=True)`` (glass_blur, gaussian_blur) was removed from scikit-image: the module's
  ``gaussian`` is wrapped to pass ``channel_axis=-1`` instead.
- the package imports ``pkg_resources`` (deprecated; ``setuptools<81`` still ships it): its warning is
  silenced.

Use ``load_reference()``; it returns ``None`` when the package cannot be imported, so callers can skip
(``unavailable_reason()`` says why), or ``require_reference()``, which raises a ``ConfigError`` saying how to
install it.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from zeal_core.errors import ConfigError

# The reference and the pkg_resources it imports (setuptools 81 drops it).
INSTALL_HINT = "pip install imagecorruptions 'setuptools<81'"

_REFERENCE: Any = None
_IMPORT_ERROR: str | None = None  # why the last import attempt failed


class _NumpyWithFloat:
    """Forwards every attribute to numpy, adding the ``float_`` alias numpy 2 dropped."""

    float_ = np.float64

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


def _gaussian_with_channel_axis(gaussian: Callable) -> Callable:
    def patched(image: np.ndarray, *args: Any, multichannel: bool | None = None, **kwargs: Any) -> np.ndarray:
        if multichannel:
            kwargs.setdefault("channel_axis", -1)
        return gaussian(image, *args, **kwargs)

    return patched


def load_reference() -> types.ModuleType | None:
    """The patched ``imagecorruptions`` package, or ``None`` when it (or a dependency) cannot be imported."""
    global _REFERENCE, _IMPORT_ERROR
    if _REFERENCE is not None:
        return _REFERENCE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import imagecorruptions
            from imagecorruptions import corruptions
    except Exception as error:  # ImportError, or a dependency failing at import time
        _IMPORT_ERROR = f"{type(error).__name__}: {error}"
        return None
    if not isinstance(corruptions.np, _NumpyWithFloat):
        corruptions.np = _NumpyWithFloat()
        corruptions.gaussian = _gaussian_with_channel_axis(corruptions.gaussian)
    _REFERENCE = imagecorruptions
    return imagecorruptions


def unavailable_reason() -> str | None:
    """Why the reference cannot be used (None when it can), with the install command."""
    if load_reference() is not None:
        return None
    return (f"the reference package imagecorruptions cannot be imported ({_IMPORT_ERROR}); it is a "
            f"test/benchmark reference only: install it with {INSTALL_HINT}")


def require_reference() -> types.ModuleType:
    """The patched ``imagecorruptions`` package.

    Raises:
        ConfigError: It cannot be imported (the message says why and how to install it).
    """
    reference = load_reference()
    if reference is None:
        raise ConfigError(str(unavailable_reason()))
    return reference


def reference_corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Corrupt uint8 images (N x H x W x 3) one by one with the reference; numpy's global RNG is seeded.

    Args:
        images: uint8 array, N x H x W x 3.
        name: corruption name (same names as ``zeal_core.corruptions``).
        severity: integer level 1-5.
        seed: seed for numpy's global random state (the reference draws from it).

    Returns:
        uint8 array of the same shape.

    Raises:
        ConfigError: The reference cannot be imported.
    """
    reference = require_reference()
    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.stack([reference.corrupt(image, severity=severity, corruption_name=name)
                         for image in images])
