"""A SIGKILLed retrain job: it is marked failed, the registry stays valid, and the next job runs.

The parent model is an untrained tiny timm ResNet (``test_resnet``) at 16 px on digits, saved straight into
the per-test registry, so the test needs no training run of its own.
"""

from __future__ import annotations

import os
import signal
import time

from zeal_core.jobs import DEAD_WORKER_MESSAGE, JobQueue
from zeal_core.models import ModelConfig, create_model
from zeal_core.models.registry import ModelRegistry

PARENT = ModelConfig(arch="test_resnet", num_classes=10, image_size=16, pretrained=False)
TIMEOUT_S = 240  # generous: the two shared cores may be busy


def _wait_until(predicate, timeout_s: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def _valid_versions() -> list[str]:
    """Every listed version loads, and no temp file is left in the registry folder."""
    registry = ModelRegistry()
    versions = registry.versions()
    for version in versions:
        registry.load(version)
    assert [p.name for p in registry.root.iterdir() if p.name.startswith(".")] == []
    return versions


def test_killed_retrain_job_fails_cleanly_and_the_next_retrain_job_runs() -> None:
    registry = ModelRegistry()
    parent = registry.save(create_model(PARENT), model_config=PARENT, dataset="digits",
                           dataset_fingerprint="", recipe={}, metrics={}).version
    queue = JobQueue()
    long_job = {"strategy": "retrain", "model": parent, "dataset": "digits", "drift": "gaussian_noise:3@0.5",
                "device": "cpu", "options": {"epochs": 200}}  # minutes of work: only the kill stops it
    victim = queue.submit("retrain", long_job)
    follower = queue.submit("retrain", {"strategy": "bn-adapt", "model": parent, "dataset": "digits",
                                        "drift": "gaussian_noise:3", "device": "cpu"})
    running = _wait_until(lambda: (job := queue.get(victim.id)).status == "running" and job.pid and job)
    assert queue.get(follower.id).status == "queued"  # one job at a time: the second one waits
    _wait_until(lambda: queue.get(victim.id).progress > 0)  # really inside the retraining loop
    os.kill(running.pid, signal.SIGKILL)

    failed = _wait_until(lambda: (job := queue.get(victim.id)).status == "failed" and job)
    assert failed.error == DEAD_WORKER_MESSAGE and failed.finished is not None
    assert queue.get(follower.id).status in ("queued", "running", "done")  # not lost with the worker
    # Every page render calls ensure_worker (app_pages/_ui.py): a new worker picks up the queued job.
    # (A second worker started by the back-to-back submits may already be waiting for the lock and take it
    # first.)
    queue.ensure_worker()
    done = queue.wait(follower.id, TIMEOUT_S)
    assert done.status == "done", done.error
    assert sorted(_valid_versions()) == sorted([parent, done.result["version"]])
    assert registry.card(done.result["version"]).parent == parent
