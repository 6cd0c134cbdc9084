r"""``roid``: certainty- and diversity-weighted self-training of all normalisation layers, tied to the source.

After ROID (Marsden, Döbler and Yang, "Universal test-time adaptation through weight ensembling, diversity
weighting, and prior correction", WACV 2024), written for this lab. Per batch of n unlabeled images with
softmax outputs :math:`p_i` over C classes:

- **Loss**: the soft likelihood ratio :math:`\ell_i = -\sum_c p_{ic} \log \frac{p_{ic}}{1 - p_{ic}}`
  (probabilities clipped to [1e-6, 0.99]). Unlike the entropy (tent), its gradient does not vanish for
  confident predictions, and the clipping stops it from pushing one class to certainty.
- **Weights**: certainty :math:`e^{-H(p_i)}` times diversity :math:`1 - \cos(p_i, \bar p)`, where
  :math:`\bar p` is a running average (momentum 0.9) of the batches' mean prediction. Images predicted like
  the recent majority learn little, so the model cannot drift towards one class (the trivial solution of
  entropy minimisation); uncertain images learn little, so wrong guesses do not reinforce themselves.
  Loss = :math:`\frac{1}{n}\sum_i w_i \ell_i`.
- **Parameters**: the scale and shift of every normalisation layer (BatchNorm, LayerNorm, GroupNorm), so
  ConvNeXts and ViTs adapt as well as ResNets; BatchNorm normalises each batch with its own statistics,
  optionally blended with the source's (``source_share``, ``zeal_core.retrain.norm``).
- **Weight ensembling**: after every step :math:`\theta \leftarrow \alpha\theta + (1-\alpha)\theta_0`
  (:math:`\alpha` = ``ensemble_momentum``, :math:`\theta_0` the source). The adapted model never strays far
  from the source and drifts back to it when the stream stops pulling: the way back after a drift ends.
- **Prior correction** of the served predictions: :math:`p_{ic} \propto p_{ic}(\hat\pi_c + \delta)` with
  :math:`\hat\pi` the batch's mean prediction and :math:`\delta = \max(1/n, 1/C)/\max_c \hat\pi_c`, a
  smoothing that makes the correction vanish for a balanced batch and small batches. It helps when a batch
  holds few classes (label shift) and is harmless otherwise.

The episodic form (``adapt``) passes the adaptation images through the online form once and saves an
eval-mode model whose BatchNorm statistics blend the source's with those of the adaptation images: by
default the most adapted blend whose accuracy on the clean labelled reference stays within
``clean_margin`` of the parent's (``zeal_core.retrain.saved``), so the saved version serves clean and
drifted inputs alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zeal_core.errors import ConfigError
from zeal_core.models.factory import ModelConfig
from zeal_core.retrain.base import ADAPT_SEED, AdaptContext, register_strategy
from zeal_core.retrain.batchnorm import adaptation_subset
from zeal_core.retrain.norm import norm_kinds, require_norm_layers, train_only_norm_affine
from zeal_core.retrain.online import OnlineAdapter, run_online
from zeal_core.retrain.saved import constrained_statistics

PROB_CLIP = (1e-6, 0.99)  # the soft likelihood ratio's clipping of each probability


@dataclass(frozen=True)
class RoidOptions:
    """Settings of ``roid``."""

    max_images: int = 4096  # adaptation images used at most (episodic form)
    batch_size: int = 64  # images per step (episodic form; the stream's batch in continual use)
    epochs: int = 1  # passes over the adaptation images (episodic form)
    lr: float = 1e-3  # Adam learning rate for the normalisation scale and shift
    ensemble_momentum: float = 0.99  # alpha: weights <- alpha * weights + (1 - alpha) * source, per step
    diversity_momentum: float = 0.9  # momentum of the running mean prediction the diversity weight uses
    prior_correction: bool = True  # reweight served predictions by the batch's estimated class prior
    source_share: float = 0.0  # BatchNorm statistics: share of the source's blended with the batch's
    # the saved (episodic) version's running statistics: the share of the source's blended with those of the
    # adaptation images; None: the most adapted blend that keeps clean accuracy within clean_margin
    saved_source_share: float | None = None
    clean_margin: float = 0.015  # share; below the guard's 2 points, so the full validation split agrees

    def __post_init__(self) -> None:
        for name in ("ensemble_momentum", "diversity_momentum", "source_share", "saved_source_share",
                     "clean_margin"):
            if getattr(self, name) is not None and not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"roid option {name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.lr <= 0 or self.batch_size < 2 or self.epochs < 1 or self.max_images < 2:
            raise ConfigError("roid options: lr > 0, batch_size >= 2, epochs >= 1, max_images >= 2")


def soft_likelihood_ratio(probs: torch.Tensor) -> torch.Tensor:
    """Per-row loss :math:`-\\sum_c p_c \\log(p_c / (1 - p_c))`, probabilities clipped to ``PROB_CLIP``."""
    clipped = probs.clamp(*PROB_CLIP)
    return -(probs * (clipped.log() - (1 - clipped).log())).sum(dim=1)


def prior_corrected(logits: torch.Tensor) -> torch.Tensor:
    """Logits whose softmax is the prior-corrected prediction (module docstring)."""
    probs = logits.softmax(dim=1)
    prior = probs.mean(dim=0)
    smoothing = max(1.0 / probs.shape[0], 1.0 / probs.shape[1]) / float(prior.max())
    return logits + (prior + smoothing).log().unsqueeze(0)


class RoidOnline(OnlineAdapter):
    """The online form of ``roid`` (module docstring)."""

    name = "roid"
    learns = True

    def __init__(self, model: nn.Module, model_config: ModelConfig, options: RoidOptions,
                 device: torch.device) -> None:
        super().__init__(model, model_config, options, device)
        layers = require_norm_layers(self.model, "roid")
        self.trainable = train_only_norm_affine(self.model, layers)
        self.anchors = [parameter.detach().clone() for parameter in self.trainable]
        self.num_classes = model_config.num_classes
        self.reset_state()

    def reset_state(self) -> None:
        """A fresh optimiser and a uniform running mean prediction."""
        self.optimizer = torch.optim.Adam(self.trainable, lr=self.options.lr)
        self.mean_prediction = torch.full((self.num_classes,), 1.0 / self.num_classes, device=self.device)

    @torch.no_grad()
    def _ensemble(self) -> None:
        """Weight ensembling with the source: weights <- alpha * weights + (1 - alpha) * source."""
        momentum = self.options.ensemble_momentum
        for parameter, anchor in zip(self.trainable, self.anchors, strict=True):
            parameter.mul_(momentum).add_(anchor, alpha=1.0 - momentum)

    def serve(self, logits: torch.Tensor) -> torch.Tensor:
        return prior_corrected(logits) if self.options.prior_correction else logits

    def idle(self) -> None:
        """A batch served by the source: the weights relax towards the source by one ensembling step."""
        self._ensemble()

    def learn(self, inputs: torch.Tensor, logits: torch.Tensor) -> None:
        probs = logits.softmax(dim=1)
        with torch.no_grad():
            entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)
            certainty = torch.exp(-entropy)
            diversity = 1.0 - F.cosine_similarity(probs, self.mean_prediction.unsqueeze(0), dim=1)
            weights = certainty * diversity
        loss = (weights * soft_likelihood_ratio(probs)).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._ensemble()
        with torch.no_grad():
            beta = self.options.diversity_momentum
            self.mean_prediction.mul_(beta).add_(probs.detach().mean(dim=0), alpha=1.0 - beta)
        self.last_loss = float(loss.detach())


@register_strategy("roid", "weighted self-training on every normalisation layer, tied to the source (no "
                           "labels; BatchNorm, LayerNorm, GroupNorm)", needs_labels=False,
                   options=RoidOptions, online=RoidOnline)
def roid(model: nn.Module, model_config: ModelConfig, context: AdaptContext,
         options: RoidOptions) -> tuple[nn.Module, dict[str, Any]]:
    """One pass of the online form over the adaptation images, then an eval-mode copy to save."""
    images = adaptation_subset(context.adapt_images, options.max_images, ADAPT_SEED)
    adapter = RoidOnline(model, model_config, options, context.device)
    entropies = run_online(adapter, images, options.batch_size, options.epochs, ADAPT_SEED, context.progress,
                           context.cancel)
    details: dict[str, Any] = {}
    if options.saved_source_share is not None or context.reference is None:
        share = 0.0 if options.saved_source_share is None else options.saved_source_share
        adapted = adapter.export(images, source_share=share, cancel=context.cancel)
        details["source_share"] = share
    else:  # the most adapted statistics that keep clean accuracy (zeal_core.retrain.saved)
        adapted, details = constrained_statistics(adapter.export(None), model, model_config, images,
                                                  context.reference, context.device, options.clean_margin,
                                                  cancel=context.cancel)
    return adapted, {**details, "adapt_images": int(images.shape[0]), "steps": adapter.steps,
                     "norm_layers": norm_kinds(model),
                     "entropy_first": entropies[0] if entropies else None,
                     "entropy_last": entropies[-1] if entropies else None}
