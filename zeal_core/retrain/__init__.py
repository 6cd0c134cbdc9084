"""Retraining strategies: from a drifted model back to accuracy, each saved as a new version with lineage.

Strategies register by name (``@register_strategy``, like timm's ``register_model``), one module each:

- ``bn-adapt`` (bn_adapt.py): recompute the BatchNorm running statistics on unlabeled drifted images
  (Schneider et al. 2020); no gradients, seconds.
- ``tent`` (tent.py): entropy minimisation on the BatchNorm affine parameters with batch statistics
  (Wang et al. 2021), then the running statistics are re-estimated for eval mode.
- ``roid`` (roid.py): certainty- and diversity-weighted soft-likelihood-ratio self-training of every
  normalisation layer's scale and shift (BatchNorm, LayerNorm, GroupNorm), weight-ensembled with the
  source, with prior-corrected predictions (after Marsden et al. 2024).
- ``finetune`` (finetune.py): a few low-learning-rate epochs from the parent on clean + corrupted labelled
  images, guarded by clean validation accuracy.
- ``retrain`` (scratch.py): the dataset recipe from random weights with corruption augmentation.

``adapt`` (adapt.py) is the one entry point; every result passes the guard (guard.py) before it may be
made active. The label-free strategies also have an online form (online.py) that adapts batch by batch;
``ContinualAdapter`` (continual.py) runs it over a stream with a way back to the source. See
``docs/retraining.md``.
"""

# Importing the strategy modules registers them, cheapest first (the order list_strategies() reports).
# isort: off
from zeal_core.retrain import bn_adapt as _bn_adapt  # noqa: F401
from zeal_core.retrain import tent as _tent  # noqa: F401
from zeal_core.retrain import roid as _roid  # noqa: F401
from zeal_core.retrain import finetune as _finetune  # noqa: F401
from zeal_core.retrain import scratch as _scratch  # noqa: F401
# isort: on
from zeal_core.retrain.adapt import adapt, load_model_for_dataset, recovered_share
from zeal_core.retrain.base import (
    ADAPT_SEED,
    EVAL_SEED,
    MAX_CLEAN_DROP,
    AdaptContext,
    StrategyInfo,
    continual_strategies,
    list_strategies,
    parse_options,
    register_strategy,
    strategy_info,
    unlabeled_strategies,
)
from zeal_core.retrain.batchnorm import batchnorm_layers, recompute_bn_statistics
from zeal_core.retrain.bn_adapt import BnAdaptOptions
from zeal_core.retrain.continual import ContinualAdapter, ContinualConfig, ContinualStep
from zeal_core.retrain.finetune import FinetuneOptions
from zeal_core.retrain.guard import GuardConfig, GuardVerdict, judge, verdict_of
from zeal_core.retrain.labelled import corruption_augment_text
from zeal_core.retrain.norm import batch_statistics, norm_layers
from zeal_core.retrain.online import OnlineAdapter, run_online
from zeal_core.retrain.roid import RoidOptions
from zeal_core.retrain.scratch import RetrainOptions
from zeal_core.retrain.tent import TentOptions

__all__ = [
    "ADAPT_SEED",
    "EVAL_SEED",
    "MAX_CLEAN_DROP",
    "AdaptContext",
    "BnAdaptOptions",
    "ContinualAdapter",
    "ContinualConfig",
    "ContinualStep",
    "FinetuneOptions",
    "GuardConfig",
    "GuardVerdict",
    "OnlineAdapter",
    "RetrainOptions",
    "RoidOptions",
    "StrategyInfo",
    "TentOptions",
    "adapt",
    "batch_statistics",
    "batchnorm_layers",
    "continual_strategies",
    "corruption_augment_text",
    "judge",
    "list_strategies",
    "load_model_for_dataset",
    "norm_layers",
    "parse_options",
    "recompute_bn_statistics",
    "recovered_share",
    "register_strategy",
    "run_online",
    "strategy_info",
    "unlabeled_strategies",
    "verdict_of",
]
