"""``roid``: label-free adaptation of any normalisation layer (BatchNorm, LayerNorm, GroupNorm).

ConvNeXt and ViT come from timm with tiny configs and random weights (no download); the ResNet parent is the
shared tiny digits model of ``tests.test_retrain``.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch

from tests.test_retrain import tiny_parent
from zeal_core.data import load_dataset
from zeal_core.errors import ConfigError, ModelError
from zeal_core.models import ModelConfig, create_model
from zeal_core.retrain import (
    AdaptContext,
    RoidOptions,
    batch_statistics,
    norm_layers,
    parse_options,
    strategy_info,
)
from zeal_core.retrain.norm import train_only_norm_affine
from zeal_core.retrain.roid import RoidOnline, prior_corrected, soft_likelihood_ratio

SIZE = 32  # px: the ViT is built for it (img_size), the ConvNeXt takes any size


def modern_model(arch: str) -> tuple[torch.nn.Module, ModelConfig]:
    """A random-weight timm model without BatchNorm, and its config (10 classes, 32 px)."""
    torch.manual_seed(0)
    extra = {"img_size": SIZE} if arch.startswith("vit") else {}
    model = timm.create_model(arch, pretrained=False, num_classes=10, **extra).eval()
    return model, ModelConfig(arch=arch, num_classes=10, image_size=SIZE)


def digits_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    images, _ = load_dataset("digits").split("val")
    return images[torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:n]]


@pytest.mark.parametrize(("arch", "kind"), [("convnext_atto", "LayerNorm2d"),
                                            ("vit_tiny_patch16_224", "LayerNorm")])
def test_roid_adapts_the_layer_norms_of_models_without_batchnorm(arch: str, kind: str) -> None:
    model, config = modern_model(arch)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    layers = norm_layers(model)
    assert layers and {type(layer).__name__ for layer in layers} == {kind}
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    adapter = RoidOnline(model, config, RoidOptions(lr=1e-2), torch.device("cpu"))
    logits = adapter.step(digits_images(16))
    assert logits.shape == (16, 10) and torch.isfinite(logits).all()
    changed = {name for name, tensor in adapter.model.state_dict().items()
               if not torch.equal(tensor, before[name])}
    norm_names = {f"{name}.{part}" for name, module in adapter.model.named_modules()
                  if module in norm_layers(adapter.model) for part in ("weight", "bias")}
    assert changed and changed <= norm_names  # only normalisation scale and shift moved
    assert all(torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())  # a copy


@pytest.mark.parametrize("arch", ["convnext_atto", "vit_tiny_patch16_224"])
def test_the_episodic_roid_strategy_runs_where_bn_adapt_and_tent_cannot(arch: str) -> None:
    model, config = modern_model(arch)
    context = AdaptContext(dataset=None, drift=None, device=torch.device("cpu"), parent_card=None,
                           parent_clean_accuracy=0.1, adapt_images=digits_images(48), progress=None,
                           cancel=None)
    adapted, details = strategy_info("roid").run(copy.deepcopy(model), config, context,
                                                 parse_options("roid", {"batch_size": 16}))
    assert details["steps"] == 3 and details["norm_layers"]
    assert not adapted.training and torch.isfinite(adapted(torch.randn(2, 3, SIZE, SIZE))).all()
    for name in ("bn-adapt", "tent"):
        with pytest.raises(ModelError, match="roid"):
            strategy_info(name).run(copy.deepcopy(model), config, context, parse_options(name, None))


def test_group_norm_layers_count_as_normalisation() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GroupNorm(2, 8), torch.nn.LayerNorm(8))
    assert [type(layer).__name__ for layer in norm_layers(model)] == ["GroupNorm", "LayerNorm"]
    trainable = train_only_norm_affine(model, norm_layers(model))
    assert len(trainable) == 4 and not model[0].weight.requires_grad


def test_weight_ensembling_keeps_the_source_when_alpha_is_zero() -> None:
    state, config, _ = tiny_parent()
    model = create_model(config)
    model.load_state_dict(state)
    adapter = RoidOnline(model, config, RoidOptions(lr=0.5, ensemble_momentum=0.0), torch.device("cpu"))
    adapter.step(digits_images(32))
    pairs = zip(adapter.trainable, adapter.anchors, strict=True)
    assert all(torch.allclose(parameter, anchor) for parameter, anchor in pairs)
    moving = RoidOnline(model, config, RoidOptions(lr=0.5, ensemble_momentum=1.0), torch.device("cpu"))
    moving.step(digits_images(32))
    pairs = zip(moving.trainable, moving.anchors, strict=True)
    assert not all(torch.allclose(parameter, anchor) for parameter, anchor in pairs)


def test_batch_statistics_blend_between_the_batch_and_the_source() -> None:
    state, config, _ = tiny_parent()
    model = create_model(config)
    model.load_state_dict(state)
    model.eval()
    inputs = torch.randn(8, 3, 16, 16) * 3 + 1  # far from the source statistics
    source = model(inputs)
    running = [layer.running_mean.clone() for layer in model.modules() if hasattr(layer, "running_mean")]
    with batch_statistics(model, 1.0):
        assert torch.allclose(model(inputs), source, atol=1e-5)
    with batch_statistics(model, 0.0):
        batch_only = model(inputs)
    reference = copy.deepcopy(model).train()
    assert torch.allclose(batch_only, reference(inputs), atol=1e-4)  # training-mode BatchNorm, same maths
    assert not torch.allclose(batch_only, source, atol=1e-3)
    after = [layer.running_mean for layer in model.modules() if hasattr(layer, "running_mean")]
    assert all(torch.equal(a, b) for a, b in zip(running, after, strict=True))  # statistics untouched
    assert torch.allclose(model(inputs), source)  # the mode ends with the block


def test_losses_and_prior_correction() -> None:
    confident = torch.tensor([[0.97, 0.01, 0.01, 0.01]])
    unsure = torch.full((1, 4), 0.25)
    assert soft_likelihood_ratio(confident) < soft_likelihood_ratio(unsure)
    balanced = torch.eye(4).repeat(4, 1) * 4  # every class equally often: the correction changes no argmax
    assert torch.equal(prior_corrected(balanced).argmax(1), balanced.argmax(1))
    skewed = torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0], [0.9, 1.0]])  # a batch of mostly class 0
    assert prior_corrected(skewed).argmax(1).tolist() == [0, 0, 0, 0]


def test_bad_roid_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="ensemble_momentum"):
        parse_options("roid", {"ensemble_momentum": 1.5})
    with pytest.raises(ConfigError, match="unknown setting"):
        parse_options("roid", {"learning_rate": 1.0})
