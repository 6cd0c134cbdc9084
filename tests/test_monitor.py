"""The simulated stream: schedules, detection of a sudden drift, and the retrain policy's effect."""

from __future__ import annotations

import json

import pytest

from tests.test_retrain import save_tiny_parent
from zeal_core.cli import main
from zeal_core.errors import ConfigError
from zeal_core.estimate import AccuracyEstimate
from zeal_core.jobs import JobQueue, run_worker
from zeal_core.models.registry import ModelRegistry
from zeal_core.monitor import MonitorConfig, Schedule, simulate
from zeal_core.monitor.simulate import bracket_estimates

ONSET = 4  # clean batches before the drift
SUDDEN = f"clean*{ONSET},gaussian_noise:5*10"
# Small stream batches and a quick policy: 2 alarms within 3 batches retrain with bn-adapt. bn-adapt's
# version of the tiny parent loses more clean accuracy than the guard's 2 points (its statistics now describe
# the noise): these tests are about the policy's mechanics, so the margin is wide (the guard's refusal is
# tested in tests/test_retrain_continual.py).
CONFIG = MonitorConfig(batch_size=32, reference_size=128, alarms_to_retrain=2, window=3, cooldown=20,
                       strategy="bn-adapt", seed=0, guard={"max_clean_drop": 0.5})


@pytest.fixture(scope="module")
def parent_registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRegistry, str]:
    registry = ModelRegistry(tmp_path_factory.mktemp("models"))
    return registry, save_tiny_parent(registry)


def test_schedule_parse_expands_segments_and_ramps() -> None:
    schedule = Schedule.parse("clean*2, gaussian_noise:1..5*5 ,contrast:4@0.1..1*3,fog:2")
    batches = schedule.batches()
    assert len(schedule) == len(batches) == 11
    assert batches[:2] == ["clean", "clean"]
    assert batches[2:7] == [f"gaussian_noise:{level}" for level in (1, 2, 3, 4, 5)]
    assert batches[7] == "contrast:4@0.1" and batches[9] == "contrast:4@1" and batches[10] == "fog:2"
    assert Schedule.parse(schedule.text) == schedule
    assert Schedule.sudden("fog:3", 3, 4).batches() == ["clean"] * 3 + ["fog:3"] * 4
    assert len(Schedule.recurring("fog:3", 2, 2, cycles=3)) == 12
    ramp = Schedule.gradual("fog", 4, before=1, ramp=4, after=1, by="fraction").batches()
    assert ramp[1] == "fog:4@0.1" and ramp[4] == "fog:4@1" and ramp[5] == "fog:4"


@pytest.mark.parametrize("text", ["", "clean*0", "nonsense:3*4", "fog:9*2", "clean*999999"])
def test_bad_schedules_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        Schedule.parse(text)


def test_bad_policy_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="window"):
        MonitorConfig(alarms_to_retrain=5, window=3)
    with pytest.raises(ConfigError, match="monitor: unknown setting"):
        MonitorConfig.from_dict({"batchsize": 3})


def test_sudden_drift_is_detected_and_the_policy_lifts_accuracy(parent_registry) -> None:
    registry, parent = parent_registry
    with_policy = simulate(parent, "digits", SUDDEN, CONFIG, device="cpu", registry=registry)
    summary = with_policy.summary
    assert summary["drift_onset_batch"] == ONSET
    assert summary["detection_delay_batches"] is not None and summary["detection_delay_batches"] <= 2
    assert len(with_policy.retrains) == 1
    event = with_policy.retrains[0]
    assert event.batch_index >= ONSET and event.strategy == "bn-adapt" and event.adapt_images > 0
    assert registry.card(event.version).parent == parent  # lineage of the policy's model
    after = [b for b in with_policy.batches if b.index > event.batch_index]
    assert all(b.active_version == event.version for b in after)
    mean_with = sum(b.accuracy_with_policy for b in after) / len(after)
    mean_without = sum(b.accuracy_without_policy for b in after) / len(after)
    assert mean_with > mean_without + 0.05
    # Every batch has a label-free estimate of the deployed model's accuracy, after the retrain too (then
    # calibrated on the new model's view of the clean labelled reference); intervals hold the point.
    assert all(b.estimate_low <= b.estimated_accuracy <= b.estimate_high for b in with_policy.batches)
    clean_batches = [b for b in with_policy.batches if b.drift_spec == "clean"]
    assert max(abs(b.estimated_accuracy - b.accuracy_with_policy) for b in clean_batches) < 0.35
    # Before the retrain both curves are the same model.
    assert all(b.accuracy_with_policy == b.accuracy_without_policy for b in with_policy.batches
               if b.index <= event.batch_index)

    # Paired run without a policy: same stream, same alarms, never a retrain, both curves equal.
    observe = simulate(parent, "digits", SUDDEN, MonitorConfig(**{**CONFIG.to_dict(), "strategy": None}),
                       device="cpu", registry=registry)
    assert observe.retrains == () and all(b.active_version == parent for b in observe.batches)
    assert [b.accuracy_without_policy for b in observe.batches] == \
        [b.accuracy_without_policy for b in with_policy.batches]
    assert all(b.accuracy_with_policy == b.accuracy_without_policy for b in observe.batches)
    json.dumps(with_policy.to_dict())  # JSON-ready for jobs and --json


def test_clean_stream_raises_few_alarms_and_no_retrain(parent_registry) -> None:
    registry, parent = parent_registry
    result = simulate(parent, "digits", "clean*8", CONFIG, device="cpu", registry=registry)
    assert result.retrains == ()
    assert result.summary["false_alarms_clean"] <= 2  # alpha 0.05 over 8 batches: occasional, not systematic


def test_cli_monitor_prints_summary(parent_registry, monkeypatch, capsys) -> None:
    registry, parent = parent_registry
    monkeypatch.setenv("ZEAL_MODELS_DIR", str(registry.root))
    code = main(["monitor", "--model", parent, "--schedule", "clean*2,fog:4*3", "--policy", "none",
                 "--batch-size", "32", "--reference-size", "128", "--device", "cpu", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["summary"]["batches"] == 5 and result["retrains"] == [] and "batches" not in result


def test_monitor_runs_as_a_job_with_its_retrains_inline() -> None:
    registry = ModelRegistry()  # the per-test folder the job's worker uses too
    parent = save_tiny_parent(registry)
    queue = JobQueue()
    job = queue.submit("monitor", {"model": parent, "dataset": "digits", "schedule": SUDDEN,
                                   "config": CONFIG.to_dict(), "device": "cpu"}, start_worker=False)
    assert run_worker(queue.root) == 1  # this process is the worker: one job, then the queue is empty
    done = queue.get(job.id)
    assert done.status == "done", done.error
    retrains = done.result["retrains"]
    assert len(retrains) == 1 and done.result["summary"]["retrains"] == 1
    assert registry.card(retrains[0]["version"]).parent == parent


def test_after_an_unlabeled_adaptation_the_estimates_interval_holds_the_truth(parent_registry) -> None:
    """bn-adapt normalises with the drifted batches' statistics: the estimate is calibrated on the reference
    seen the same way (its own statistics), its interval widened to the adapted statistics' calibration
    too, so it holds the truth whether the adaptation worked or not (contrast:5: it barely does here)."""
    registry, parent = parent_registry
    result = simulate(parent, "digits", "clean*2,contrast:5*6", CONFIG, device="cpu", registry=registry)
    assert len(result.retrains) == 1
    after = [b for b in result.batches if b.index > result.retrains[0].batch_index]
    assert len(after) >= 3
    assert all(b.estimate_low <= b.accuracy_with_policy <= b.estimate_high for b in after), \
        [(b.estimate_low, b.accuracy_with_policy, b.estimate_high) for b in after]


def test_bracketed_estimates_hold_both_calibrations_and_say_they_extrapolate() -> None:
    shown = (AccuracyEstimate(estimator="pm-atc", accuracy=0.97, low=0.9, high=1.0, level=0.9, n=64),
             AccuracyEstimate(estimator="doc", accuracy=0.9, low=0.85, high=0.95, level=0.9, n=64))
    other = (AccuracyEstimate(estimator="pm-atc", accuracy=0.7, low=0.6, high=0.8, level=0.9, n=64),)
    pm_atc, doc = bracket_estimates(shown, other)
    assert (pm_atc.accuracy, pm_atc.low, pm_atc.high) == (0.97, 0.6, 1.0) and pm_atc.extrapolation
    assert pm_atc.details["bracketed_by"] == [0.7, 0.6, 0.8]
    assert doc == shown[1]  # no twin: unchanged
