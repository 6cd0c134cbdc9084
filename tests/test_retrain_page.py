"""The Retrain page: the drift spec follows the Drift Lab; Make active shows before/after accuracy and asks
first when the guard refused the version; every registered strategy is offered."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app_pages._ui import KEY_DATASET, KEY_DRIFT_SPEC
from tests.conftest import ROOT, shown_text
from tests.test_retrain import save_tiny_parent
from zeal_core.models.registry import ModelRegistry
from zeal_core.retrain import GuardVerdict, continual_strategies, list_strategies, unlabeled_strategies

TIMEOUT_S = 180  # s per script run on a shared CPU


def retrain_page(**state: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT_S)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("app_pages/retrain.py").run()
    assert not at.exception
    return at


def adapted_version(registry: ModelRegistry, parent: str, passed: bool) -> str:
    """A saved child of ``parent`` whose card holds a guard verdict (the weights are the parent's)."""
    model, card = registry.load(parent)
    reasons = () if passed else ("loses 6.0 points of clean accuracy (more than the 2-point margin)",)
    verdict = GuardVerdict(passed=passed, reasons=reasons, clean_before=0.98,
                           clean_after=0.975 if passed else 0.92, max_clean_drop=0.02, estimator="pm-atc",
                           estimated_before=0.70, estimated_after=0.90, drifted_images=100,
                           measured_before=0.75, measured_after=0.93)
    child = registry.save(model, model_config=card.model_config, dataset="digits",
                          dataset_fingerprint=card.dataset_fingerprint, recipe={"strategy": "roid"},
                          metrics={"clean_before": 0.98, "clean_after": verdict.clean_after,
                                   "drifted_before": 0.75, "drifted_after": 0.93, "guard": verdict.to_dict(),
                                   "guard_passed": passed},
                          parent=parent, strategy="roid", drift_spec="gaussian_noise:5")
    return child.version


@pytest.fixture()
def registry() -> tuple[ModelRegistry, str]:
    registry = ModelRegistry()
    parent = save_tiny_parent(registry)
    registry.set_active(parent)
    return registry, parent


def test_make_active_asks_first_when_the_guard_refused_the_version(registry) -> None:
    models, parent = registry
    refused = adapted_version(models, parent, passed=False)
    at = retrain_page()
    at.selectbox(key="retrain_version").set_value(refused).run()
    clean = next(metric for metric in at.metric if metric.label == "Clean accuracy")
    drifted = next(metric for metric in at.metric if metric.label == "Drifted accuracy")
    assert clean.value == "92.0%" and clean.delta == "-6.0 pts"
    assert drifted.value == "93.0%" and drifted.delta == "+18.0 pts"
    assert any("Guard refused" in caption.value for caption in at.caption)
    at.button(key="retrain_chosen_activate").click().run()
    assert models.get_active() == parent  # not yet: the page asks first
    assert any("loses 6.0 points" in shown_text(warning.value) for warning in at.warning)
    at.button(key="retrain_chosen_cancel").click().run()
    assert models.get_active() == parent and not at.warning
    at.button(key="retrain_chosen_activate").click().run()
    at.button(key="retrain_chosen_confirm").click().run()
    assert models.get_active() == refused


def test_a_version_the_guard_passed_is_activated_in_one_click(registry) -> None:
    models, parent = registry
    passed = adapted_version(models, parent, passed=True)
    at = retrain_page()
    at.selectbox(key="retrain_version").set_value(passed).run()
    at.button(key="retrain_chosen_activate").click().run()
    assert models.get_active() == passed and not at.warning


def test_the_drift_spec_follows_the_drift_lab_and_every_strategy_is_offered(registry) -> None:
    at = retrain_page(**{KEY_DRIFT_SPEC: "fog:3"})
    assert spec_box(at).value == "fog:3"
    assert at.selectbox(key="retrain_strategy").options == list_strategies()
    assert "roid" in at.selectbox(key="retrain_strategy").options
    at.session_state[KEY_DRIFT_SPEC] = "contrast:4@0.5"  # the user moved the Drift Lab's sliders
    at.run()
    assert spec_box(at).value == "contrast:4@0.5"
    at.run()  # a rerun (a job's progress, a redrawn form) keeps the spec in the box, never empties it
    assert spec_box(at).value == "contrast:4@0.5"
    fresh = retrain_page()  # no Drift Lab visit: a drift strong enough to cost accuracy
    assert spec_box(fresh).value == "gaussian_noise:5"


def spec_box(at):
    """The Retrain form's drift spec box (exactly one)."""
    boxes = [box for box in at.text_input if box.label == "Drift spec"]
    assert len(boxes) == 1
    return boxes[0]


def test_the_page_says_when_the_data_page_choice_is_not_the_active_models_dataset(registry) -> None:
    same = retrain_page(**{KEY_DATASET: "digits"})
    assert not any("You chose" in shown_text(info.value) for info in same.info)
    other = retrain_page(**{KEY_DATASET: "imagenette"})
    notes = [shown_text(info.value) for info in other.info if "You chose" in shown_text(info.value)]
    assert len(notes) == 1 and "trained on digits" in notes[0] and "Retrain" in notes[0]


def test_the_monitor_page_offers_every_registered_strategy_in_both_modes_and_in_the_policy(registry) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT_S)
    at.run()
    at.switch_page("app_pages/monitor.py").run()
    assert not at.exception
    options = at.selectbox(key="monitor_strategy").options
    assert options[:-1] == list_strategies() and "roid" in options  # after k alarms: + observe only
    at.radio(key="monitor_mode").set_value("continually, every batch").run()
    assert at.selectbox(key="monitor_strategy").options == continual_strategies()
    assert "roid" in continual_strategies()
    assert at.selectbox(key="policy_strategy").options == unlabeled_strategies()  # the history's policy
