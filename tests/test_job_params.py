"""Job parameters are checked when a job is submitted (issue 32): every built-in kind refuses a key it does
not take and a value of the wrong type at ``submit``, before anything is queued, and stores its defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from zeal_core.errors import ConfigError
from zeal_core.jobs import JobQueue, list_job_kinds
from zeal_core.jobs.kinds import BUILT_IN_KINDS
from zeal_core.policy import MAX_CLEAN_DROP

GOOD = {
    "train": {"dataset": "digits", "epochs": 1},
    "retrain": {"model": "active", "strategy": "bn-adapt", "drift": "gaussian_noise:3"},
    "adapt-history": {"model": "active", "strategy": "bn-adapt", "check_ids": [1], "history": "h.sqlite"},
    "monitor": {"model": "active", "schedule": "clean*2"},
}


def test_every_built_in_kind_has_a_checked_example() -> None:
    assert set(GOOD) == set(BUILT_IN_KINDS) <= set(list_job_kinds())


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_a_misspelt_parameter_fails_at_submit_and_queues_nothing(kind: str, tmp_path: Path) -> None:
    queue = JobQueue(tmp_path)
    with pytest.raises(ConfigError, match=f"{kind} job parameters.*unknown"):
        queue.submit(kind, GOOD[kind] | {"activte": True}, start_worker=False)
    assert queue.list() == []
    job = queue.submit(kind, GOOD[kind], start_worker=False)
    assert job.params.items() >= GOOD[kind].items()


@pytest.mark.parametrize(("kind", "field", "value"), [("retrain", "drift", 3), ("monitor", "config", "x"),
                                                      ("adapt-history", "margin", "a lot")])
def test_a_value_of_the_wrong_type_fails_at_submit(kind: str, field: str, value: object,
                                                    tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=field):
        JobQueue(tmp_path).submit(kind, GOOD[kind] | {field: value}, start_worker=False)


def test_defaults_are_written_once_and_stored_with_the_job(tmp_path: Path) -> None:
    from zeal_core.history.policy import HistoryPolicy
    from zeal_core.retrain import GuardConfig

    job = JobQueue(tmp_path).submit("adapt-history", GOOD["adapt-history"], start_worker=False)
    assert job.params["margin"] == HistoryPolicy().margin == GuardConfig().max_clean_drop == MAX_CLEAN_DROP
    assert job.params["promote"] == "manual" and job.params["device"] == "auto"
