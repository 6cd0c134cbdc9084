"""Drift kinds, batched in torch, and drift specifications.

Pixel kinds change images: the 19 ImageNet-C corruptions (Hendrycks & Dietterich 2019; ``list_corruptions``)
plus geometric (rotation, zoom, translation, perspective) and capture-pipeline kinds (white balance, gamma,
exposure, vignetting, resize chains, chroma subsampling); ``list_drift_kinds(group)`` and
``drift_kind_groups()`` list them all. ``apply(images, name, severity, seed=0)`` changes a whole
N x 3 x H x W batch (uint8 in [0, 255] or float in [0, 1]) on its own device. Severity 0 is the identity,
1-5 are the kind's levels and values in between interpolate the kind's parameters (or blend neighbouring
levels where a parameter is a count or a mode). Spatial constants are scaled to the image size; see
docs/corruptions.md and docs/drift_kinds.md.

Class-mix kinds (``label_shift``, ``unseen_classes``; ``list_class_mix_kinds``) change which images a
sample holds: ``DriftSpec.draw_positions`` draws them.

New pixel kinds register with ``@register_corruption(family, description, group=...)`` (like timm's
``register_model``), class-mix kinds with ``@register_class_mix``.
"""

# importing registers the kinds (menus order groups by DRIFT_KIND_GROUPS, not by import order)
from zeal_core.corruptions import (  # noqa: F401
    blur,
    capture,
    digital,
    geometric,
    label_shift,
    noise,
    unseen,
    weather,
)
from zeal_core.corruptions.class_mix import (
    ClassMix,
    ClassMixInfo,
    class_mix_info,
    list_class_mix_kinds,
    register_class_mix,
    supports_unseen_classes,
)
from zeal_core.corruptions.registry import (
    DRIFT_KIND_GROUPS,
    IMAGENET_C_ORDER,
    MAX_SEVERITY,
    CorruptionInfo,
    apply,
    check_severity,
    corruption_info,
    drift_kind_groups,
    list_corruptions,
    list_drift_kinds,
    register_corruption,
)
from zeal_core.corruptions.spec import DriftSpec

__all__ = [
    "DRIFT_KIND_GROUPS",
    "IMAGENET_C_ORDER",
    "MAX_SEVERITY",
    "ClassMix",
    "ClassMixInfo",
    "CorruptionInfo",
    "DriftSpec",
    "apply",
    "check_severity",
    "class_mix_info",
    "corruption_info",
    "drift_kind_groups",
    "list_class_mix_kinds",
    "list_corruptions",
    "list_drift_kinds",
    "register_class_mix",
    "register_corruption",
    "supports_unseen_classes",
]
