"""The guard: every adapted version is compared with its parent before it may be made active."""

from __future__ import annotations

import dataclasses
import importlib
import json

import numpy as np
import pytest
import torch

from tests.test_retrain import DRIFT, save_tiny_parent
from zeal_core.embed import Embeddings
from zeal_core.errors import ConfigError
from zeal_core.models.registry import ModelRegistry
from zeal_core.retrain import GuardConfig, GuardVerdict, adapt, judge, strategy_info, verdict_of
from zeal_core.retrain.guard import CREDIBLE_GAIN_Z

# The module, not the function of the same name that zeal_core.retrain exports.
adapt_module = importlib.import_module("zeal_core.retrain.adapt")


def embeddings(correct: int, n: int = 100, labels: bool = True, seed: int = 0) -> Embeddings:
    """n items of 4 classes: the first ``correct`` predicted right at 0.9, the others wrong at 0.4."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, n)
    preds = np.where(np.arange(n) < correct, truth, (truth + 1) % 4)
    confidence = np.where(np.arange(n) < correct, 0.9, 0.4)
    probs = np.repeat(((1 - confidence) / 3)[:, None], 4, axis=1)
    probs[np.arange(n), preds] = confidence
    probs = probs.astype(np.float32)
    return Embeddings(features=rng.normal(size=(n, 3)).astype(np.float32), probs=probs, preds=preds,
                      labels=truth if labels else None, indices=np.arange(n), logits=np.log(probs))


def test_the_guard_refuses_a_version_that_lost_clean_accuracy() -> None:
    parent, drifted = embeddings(90), embeddings(60, labels=False, seed=1)
    verdict = judge(parent, embeddings(85), drifted, embeddings(70, labels=False, seed=1))
    assert not verdict.passed and len(verdict.reasons) == 1
    assert "5.0 points of clean accuracy" in verdict.reasons[0] and "refused" in verdict.summary
    # Within the margin it passes; the margin is a setting.
    assert judge(parent, embeddings(89), drifted, embeddings(70, labels=False, seed=1)).passed
    assert judge(parent, embeddings(85), drifted, embeddings(70, labels=False, seed=1),
                 GuardConfig(max_clean_drop=0.06)).passed


def test_the_guard_refuses_a_version_worse_on_the_drift() -> None:
    parent = embeddings(90)
    drifted_before, drifted_after = embeddings(70, labels=False, seed=1), embeddings(50, labels=False, seed=1)
    verdict = judge(parent, parent, drifted_before, drifted_after)
    assert not verdict.passed and "worse on the drifted images" in verdict.reasons[0]
    assert verdict.estimated_after < verdict.estimated_before and verdict.drifted_images == 100
    measured = judge(parent, parent, None, None, measured=(0.7, 0.65))
    assert not measured.passed and "validation" in measured.reasons[0]
    assert GuardVerdict.from_dict(json.loads(json.dumps(verdict.to_dict()))) == verdict


def test_the_guard_declines_a_version_that_is_not_credibly_better_on_the_drift() -> None:
    parent, drifted_before = embeddings(90), embeddings(60, labels=False, seed=1)
    strict = GuardConfig(min_gain_z=CREDIBLE_GAIN_Z)
    # One image of 100 better: within what the one changed prediction gives by chance (1.645 points).
    tie = judge(parent, parent, drifted_before, embeddings(61, labels=False, seed=1), strict)
    assert not tie.passed and tie.reasons[0].startswith("declined: no credible gain")
    assert tie.changed_predictions == 1 and tie.gain_bound == pytest.approx(0.01645)
    assert tie.declined and tie.label == "declined" and tie.summary.startswith("guard declined: no credible")
    worse = judge(parent, parent, drifted_before, embeddings(50, labels=False, seed=1), strict)
    assert not worse.declined and worse.label == "refused" and worse.gain_bound is None
    assert GuardVerdict.from_dict(tie.to_dict()) == tie and tie.to_dict()["declined"] is True
    assert "parent keeps serving" in tie.summary
    # A version that changed nothing is declined too, even when it grew more confident (estimate up).
    assert not judge(parent, parent, drifted_before, drifted_before, strict).passed
    probs = np.full_like(drifted_before.probs, 0.1 / 3)  # the parent's predictions, each at 0.9
    probs[np.arange(len(probs)), drifted_before.preds] = 0.9
    bolder = dataclasses.replace(drifted_before, probs=probs, logits=np.log(probs))
    confident = judge(parent, parent, drifted_before, bolder, strict)
    assert confident.estimated_after > confident.estimated_before + 0.3
    assert not confident.passed and confident.changed_predictions == 0
    assert "+0.0 points" in confident.reasons[0]
    clear = judge(parent, parent, drifted_before, embeddings(75, labels=False, seed=1), strict)
    assert clear.passed and clear.label == "passed"
    assert clear.changed_predictions == 15 and clear.gain_bound < 0.15
    # The requirement is opt-in: by default not worse suffices.
    default = judge(parent, parent, drifted_before, embeddings(61, labels=False, seed=1))
    assert default.passed and default.gain_bound is None and default.changed_predictions == 1
    with pytest.raises(ConfigError, match="min_gain_z"):
        GuardConfig(min_gain_z=-1)


def test_bad_guard_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="max_clean_drop"):
        GuardConfig(max_clean_drop=2)
    with pytest.raises(ConfigError, match="shift bank"):
        GuardConfig(estimator="shift-calibrated")
    with pytest.raises(ConfigError, match="labels"):
        judge(embeddings(90, labels=False), embeddings(90), None, None)


def _scrambled(model, model_config, context, options):
    """A strategy gone wrong: the classifier's weights shuffled between classes for half the features."""
    model.get_classifier().weight.data[:, ::2] = model.get_classifier().weight.data.flip(0)[:, ::2]
    return model, {"scrambled": True}


@pytest.fixture()
def sabotaged(monkeypatch: pytest.MonkeyPatch, tmp_path) -> tuple[ModelRegistry, str]:
    """A registry with the tiny parent, and 'bn-adapt' replaced by a strategy that ruins the classifier."""
    monkeypatch.setenv("ZEAL_MODELS_DIR", str(tmp_path / "models"))
    registry = ModelRegistry()
    parent = save_tiny_parent(registry)
    registry.set_active(parent)
    broken = dataclasses.replace(strategy_info("bn-adapt"), run=_scrambled)
    monkeypatch.setattr(adapt_module, "strategy_info", lambda name: broken)
    return registry, parent


def test_no_caller_skips_the_guard_and_a_refused_version_is_never_activated(sabotaged) -> None:
    from zeal_core.job_kinds.retrain import run_retrain

    registry, parent = sabotaged
    card = adapt("bn-adapt", parent, "digits", DRIFT, device="cpu", registry=registry)
    verdict = verdict_of(card)
    assert verdict is not None and not verdict.passed and card.metrics["guard_passed"] is False
    assert any("clean accuracy" in reason for reason in verdict.reasons)
    assert verdict.clean_before == card.metrics["clean_before"] and verdict.measured_after is not None
    # The Retrain job asked to activate it: it stays saved, the parent stays active, the result says why.
    result = run_retrain({"model": parent, "strategy": "bn-adapt", "drift": DRIFT, "dataset": "digits",
                          "device": "cpu", "activate": True}, lambda event: None, None)
    assert result["activated"] is False and "refused" in result["guard"]
    assert registry.get_active() == parent and registry.card(result["version"]).parent == parent


def test_a_version_that_passes_the_guard_is_activated_on_request(monkeypatch, tmp_path) -> None:
    from zeal_core.job_kinds.retrain import run_retrain

    monkeypatch.setenv("ZEAL_MODELS_DIR", str(tmp_path / "models"))
    registry = ModelRegistry()
    parent = save_tiny_parent(registry)
    result = run_retrain({"model": parent, "strategy": "roid", "drift": DRIFT, "dataset": "digits",
                          "device": "cpu", "activate": True, "guard": {"max_clean_drop": 0.5}},
                         lambda event: None, None)
    card = registry.card(result["version"])
    assert verdict_of(card).passed and result["activated"] is True
    assert registry.get_active() == card.version
    assert card.recipe["guard"]["max_clean_drop"] == 0.5
    assert torch.isfinite(torch.tensor(card.metrics["guard"]["estimated_after"]))


def test_the_retrain_command_can_require_a_credible_gain() -> None:
    import argparse

    from zeal_core.commands.retrain import guard_settings

    strict = guard_settings(argparse.Namespace(max_clean_drop=0.01, require_gain=True))
    assert strict == {"max_clean_drop": 0.01, "min_gain_z": CREDIBLE_GAIN_Z}
    assert GuardConfig.from_dict(strict).min_gain_z == CREDIBLE_GAIN_Z
    assert guard_settings(argparse.Namespace(max_clean_drop=None, require_gain=False)) is None
