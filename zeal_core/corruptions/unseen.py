"""``unseen_classes``: part of the sample comes from classes the model was never trained on (open set).

A model knows its classes through ``ModelCard.class_names`` (``zeal_core.models.registry.label_map`` gives
-1 for the others). Only a model trained on a subset of the dataset's classes can meet unseen ones: train
one with ``python -m zeal_core train --dataset digits --classes 0,1,2,3,4,5`` (or
``train_and_register(..., classes=[...])``).

At severity ``s`` a share ``s / 10`` of the sample (10 % per level, half at level 5) is drawn from the
unseen classes, at the pool's own mix among them; the rest from the known classes, at the pool's mix among
those. ``unseen_classes[from=A/B]:s`` takes the unseen share from the named unseen classes only.
"""

from __future__ import annotations

import numpy as np

from zeal_core.corruptions.class_mix import MixContext, register_class_mix
from zeal_core.errors import ConfigError

SHARE_PER_LEVEL = 0.1  # share of the sample from unseen classes per severity level


def unseen_share(severity: float) -> float:
    """Share of the sample drawn from unseen classes at ``severity``."""
    return SHARE_PER_LEVEL * severity


def _no_unseen_classes_error(context: MixContext) -> ConfigError:
    return ConfigError(
        f"unseen_classes needs a model trained on a subset of the dataset's classes, and this model predicts "
        f"all {len(context.class_names)} of them. Models whose card lists fewer classes (ModelCard."
        "class_names) support it: train one with `zeal train --dataset NAME --classes "
        f"{','.join(map(str, context.class_names[:max(2, len(context.class_names) // 2)]))}`")


@register_class_mix("classes the model was not trained on make up part of the sample",
                    default="a share severity/10 of the sample from every unseen class (pool's mix)",
                    modes=(("from", "the unseen share from the named unseen classes only"),), unseen=True)
def unseen_classes(context: MixContext) -> np.ndarray:
    unseen = ~context.known
    if not unseen.any():
        raise _no_unseen_classes_error(context)
    if context.mode == "from":
        named = np.zeros(len(unseen), dtype=bool)
        named[context.chosen] = True
        if (named & context.known).any():
            known = [context.class_names[index] for index in np.flatnonzero(named & context.known)]
            raise ConfigError(f"unseen_classes[from=...]: the model was trained on {known}; name classes "
                              "it does not know")
        unseen = named
    unseen_pool = np.where(unseen, context.pool_shares, 0.0)
    known_pool = np.where(context.known, context.pool_shares, 0.0)
    if unseen_pool.sum() <= 0:
        raise ConfigError("unseen_classes: the pool holds no image of the unseen classes to draw from")
    share = unseen_share(context.severity)
    return known_pool / known_pool.sum() * (1.0 - share) + unseen_pool / unseen_pool.sum() * share
