"""ImageNet-C corruptions (Hendrycks & Dietterich 2019), batched in torch, and drift specifications.

``apply(images, name, severity, seed=0)`` corrupts a whole N x 3 x H x W batch (uint8 in [0, 255] or float
in [0, 1]) on its own device. Severity 0 is the identity, 1-5 are ImageNet-C's levels and values in between
interpolate the corruption's parameters (or blend neighbouring levels where a parameter is a count or a mode).
Spatial constants are scaled from 224 px to the image size; see docs/corruptions.md for the rules.

New corruptions register with ``@register_corruption(family, description)`` (like timm's ``register_model``).
"""

from zeal_core.corruptions import blur, digital, noise, weather  # noqa: F401 - importing registers them
from zeal_core.corruptions.drift import DriftSpec
from zeal_core.corruptions.registry import (
    IMAGENET_C_ORDER,
    MAX_SEVERITY,
    CorruptionInfo,
    apply,
    check_severity,
    corruption_info,
    list_corruptions,
    register_corruption,
)

__all__ = [
    "IMAGENET_C_ORDER",
    "MAX_SEVERITY",
    "CorruptionInfo",
    "DriftSpec",
    "apply",
    "check_severity",
    "corruption_info",
    "list_corruptions",
    "register_corruption",
]
