"""The job system with its real worker process: order, cancel, and a SIGKILLed worker.

Jobs are real ``train`` jobs on digits with a tiny timm ResNet at 16 px: one epoch takes seconds, and a
"long" job (many epochs) runs until the test stops it.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from zeal_core.errors import ConfigError
from zeal_core.jobs import DEAD_WORKER_MESSAGE, Job, JobQueue, list_job_kinds
from zeal_core.models.registry import ModelRegistry

TINY = {"dataset": "digits", "arch": "test_resnet", "image_size": 16, "batch_size": 64, "epochs": 1,
        "eval_each_epoch": False, "device": "cpu"}
LONG = {**TINY, "epochs": 200}  # minutes of work: only ever stopped by the test
TIMEOUT_S = 240  # generous: the CI machine's two cores may be busy


def _wait_until(predicate, timeout_s: float = TIMEOUT_S, poll_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError("condition not reached in time")


def _assert_registry_valid() -> list:
    registry = ModelRegistry()
    cards = registry.list()
    for card in cards:
        registry.load(card.version)  # every listed version loads (weights and card agree)
    leftovers = [p.name for p in registry.root.glob("*") if p.name.endswith(".tmp")]
    assert leftovers == [], leftovers
    return cards


def test_kinds_and_job_file_round_trip(tmp_path) -> None:
    assert {"train", "retrain", "monitor"} <= set(list_job_kinds())
    queue = JobQueue(tmp_path / "jobs")
    job = queue.submit("train", TINY, start_worker=False)
    assert job.status == "queued" and job.kind == "train" and job.params == TINY
    stored = json.loads((tmp_path / "jobs" / f"{job.id}.json").read_text())
    assert Job.from_dict(stored) == job and queue.get(job.id) == job
    with pytest.raises(ConfigError, match="unknown job kind"):
        queue.submit("bake", {}, start_worker=False)
    with pytest.raises(ConfigError, match="JSON"):
        queue.submit("train", {"dataset": object()}, start_worker=False)
    with pytest.raises(ConfigError):
        queue.get("../escape")
    # Cancelling a queued job while no worker runs cancels it at once.
    cancelled = queue.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.started is None


def test_two_jobs_run_in_order_one_at_a_time() -> None:
    queue = JobQueue()
    # The second job adapts "the active model", which only the first job creates: it can only succeed if
    # the jobs run in order, one at a time.
    first = queue.submit("train", {**TINY, "activate": True})
    second = queue.submit("retrain", {"model": "active", "strategy": "bn-adapt", "drift": "gaussian_noise:5",
                                      "device": "cpu"})
    assert [job.id for job in queue.list()] == [second.id, first.id]  # newest first
    done_first, done_second = queue.wait(first.id, TIMEOUT_S), queue.wait(second.id, TIMEOUT_S)
    assert done_first.status == "done" and done_second.status == "done", (done_first.error, done_second.error)
    assert done_first.finished <= done_second.started
    trained, adapted = done_first.result["version"], done_second.result["version"]
    assert {card.version for card in _assert_registry_valid()} == {trained, adapted}
    card = ModelRegistry().card(adapted)
    assert card.parent == trained and card.strategy == "bn-adapt" and card.drift_spec == "gaussian_noise:5"
    assert done_second.result["metrics"]["drifted_after"] == card.metrics["drifted_after"]
    assert done_first.progress == 1.0 and "job done" in queue.read_log(first.id)


def test_cancel_running_and_queued_jobs() -> None:
    queue = JobQueue()
    running = queue.submit("train", LONG)
    waiting = queue.submit("train", TINY)
    _wait_until(lambda: queue.get(running.id).status == "running")
    cancelled_waiting = queue.cancel(waiting.id)
    assert cancelled_waiting.status in ("queued", "cancelled")  # the worker drops it when it gets there
    queue.cancel(running.id)
    stopped = queue.wait(running.id, TIMEOUT_S)
    assert stopped.status == "cancelled" and stopped.finished is not None
    dropped = queue.wait(waiting.id, TIMEOUT_S)
    assert dropped.status == "cancelled" and dropped.started is None
    assert _assert_registry_valid() == []  # cancelled training saves nothing


def test_killed_worker_marks_job_failed_and_next_job_runs() -> None:
    queue = JobQueue()
    victim = queue.submit("train", LONG)
    running = _wait_until(lambda: (job := queue.get(victim.id)).status == "running" and job.pid and job)
    _wait_until(lambda: queue.get(victim.id).progress > 0)  # really inside training
    os.kill(running.pid, signal.SIGKILL)
    failed = _wait_until(lambda: (job := queue.get(victim.id)).status == "failed" and job)
    assert failed.error == DEAD_WORKER_MESSAGE and failed.finished is not None
    assert _assert_registry_valid() == []
    follower = queue.submit("train", TINY)
    done = queue.wait(follower.id, TIMEOUT_S)
    assert done.status == "done", done.error
    assert [card.version for card in _assert_registry_valid()] == [done.result["version"]]
