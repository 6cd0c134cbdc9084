"""The check history: schema migrations, concurrent writers, and the retrain policy over real checks."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_retrain import save_tiny_parent
from zeal_core.corruptions import DriftSpec
from zeal_core.data import load_dataset
from zeal_core.embed import Embeddings
from zeal_core.errors import ConfigError
from zeal_core.history import (
    SCHEMA_VERSION,
    HistoryPolicy,
    HistoryStore,
    checks_to_adapt_on,
    save_policy,
    schema_version,
)
from zeal_core.history.schema import MIGRATIONS
from zeal_core.history.store import HistoryError
from zeal_core.jobs import JobQueue, run_worker
from zeal_core.models.registry import ModelRegistry
from zeal_core.reference import FittedReference, ReferenceConfig, get_reference
from zeal_core.service import CheckService

# Writes 50 checks from one process; the test runs two at once on the same database file.
WRITER = """
import sys
import numpy as np
from zeal_core.embed import Embeddings
from zeal_core.history import HistoryStore
from zeal_core.reference import FittedReference, ReferenceConfig

def emb(seed, n):
    rng = np.random.default_rng(seed)
    return Embeddings(features=rng.normal(size=(n, 8)).astype(np.float32),
                      probs=np.full((n, 3), 1 / 3, np.float32), preds=np.zeros(n, np.int64), labels=None,
                      indices=np.arange(n))

reference = FittedReference.from_embeddings(emb(0, 40), ReferenceConfig(detectors=("ks",)))
store = HistoryStore(sys.argv[1])
for index in range(50):
    store.record(reference.check(emb(1000 * int(sys.argv[2]) + index, 20), source=f"writer {sys.argv[2]}"))
"""


def _embeddings(seed: int, n: int, shift: float = 0.0) -> Embeddings:
    rng = np.random.default_rng(seed)
    return Embeddings(features=rng.normal(shift, 1.0, (n, 8)).astype(np.float32),
                      probs=np.full((n, 3), 1 / 3, np.float32), preds=np.zeros(n, np.int64), labels=None,
                      indices=np.arange(n))


def test_two_processes_times_50_checks_lose_no_row(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    HistoryStore(path)  # created (and migrated) once before the writers race
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(k)], cwd=Path.cwd())
               for k in (1, 2)]
    assert [writer.wait(timeout=300) for writer in writers] == [0, 0]
    store = HistoryStore(path)
    rows = store.checks(limit=None)
    assert store.count() == 100 and len(rows) == 100
    assert sorted(row.source for row in rows).count("writer 1") == 50
    assert all(set(row.p_values) == {"ks"} for row in rows)


def test_new_database_gets_every_migration(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "new.sqlite")
    with sqlite3.connect(store.path) as connection:
        assert schema_version(connection) == SCHEMA_VERSION == len(MIGRATIONS)
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_older_schema_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    connection = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        connection.execute(statement)
    connection.execute("INSERT INTO checks (created, model_version, dataset, source, n, drift, min_p_value, "
                       "report_json) VALUES ('2026-11-01T00:00:00Z', 'v0', 'digits', 'old.png', 5, 1, 0.001, "
                       "'{}')")
    connection.execute("INSERT INTO detector_results VALUES (1, 'mmd', 0.3, 0.001, 1)")
    connection.execute("PRAGMA user_version = 1")
    connection.commit()
    connection.close()
    store = HistoryStore(path)
    old = store.get(1)
    assert old.source == "old.png" and old.origin == "cli" and old.p_values == {"mmd": 0.001}
    assert old.estimated_accuracy is None and store.events() == []
    reference = FittedReference.from_embeddings(_embeddings(0, 40), ReferenceConfig(detectors=("ks",)))
    new_id = store.record(reference.check(_embeddings(1, 30, shift=2.0)), origin="upload")
    assert new_id == 2 and store.get(2).drift is True and store.get(2).origin == "upload"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(HistoryError, match="newer than this lab"):  # a DataError: exit 2, one line
        HistoryStore(path)


def test_policy_settings_are_strict() -> None:
    with pytest.raises(ConfigError, match="real batches have no labels"):
        HistoryPolicy(strategy="finetune")
    with pytest.raises(ConfigError, match="promote"):
        HistoryPolicy(promote="always")
    with pytest.raises(ConfigError, match="never fire"):
        HistoryPolicy(alarms_to_retrain=4, window=2)


@pytest.fixture()
def tiny_reference() -> tuple[ModelRegistry, FittedReference]:
    registry = ModelRegistry()
    version = save_tiny_parent(registry)
    registry.set_active(version)
    config = ReferenceConfig(reference_n=120, detectors=("mmd", "bbsd"),
                             detector_options={"mmd": {"num_permutations": 200}})
    return registry, get_reference(version, config=config, device="cpu", registry=registry)


def _record_batches(reference: FittedReference, store: HistoryStore, specs: list[str],
                    queue: JobQueue) -> list[dict | None]:
    """Check and record each batch through the check service (which lets the policy queue a job)."""
    service = CheckService(history=store, queue=queue)
    actions = []
    for seed, spec in enumerate(specs):
        report = reference.check(spec, n=60, seed=seed, parts=["detectors"])
        images = DriftSpec.parse(spec).apply(
            reference.source.split_images[torch.tensor(report.sample.indices)], seed=seed)
        actions.append(service.record(report, images=images, origin="api", max_side=16).policy)
    return actions


def test_policy_fires_once_on_a_scripted_history_and_never_promotes_a_worse_model(tiny_reference) -> None:
    registry, reference = tiny_reference
    parent = reference.version
    store, queue = HistoryStore(), JobQueue()
    queue_submit = queue.submit
    queue.submit = lambda kind, params: queue_submit(kind, params, start_worker=False)  # run inline below
    # Off by default: drifted checks alone queue nothing.
    assert _record_batches(reference, store, ["contrast:5"] * 3, queue) == [None, None, None]
    save_policy(store, HistoryPolicy(enabled=True, alarms_to_retrain=2, window=3, cooldown=3,
                                     promote="auto", margin=0.0))
    actions = _record_batches(reference, store, ["clean", "contrast:5", "contrast:5", "contrast:5"], queue)
    fired = [action for action in actions if action is not None]
    assert len(fired) == 1 and actions[2] is not None  # the 2nd alarm within the window fires, once
    assert [job.kind for job in queue.list()] == ["adapt-history"]
    assert fired[0]["check_ids"] == [5, 6] and checks_to_adapt_on(store, HistoryPolicy(enabled=True,
        alarms_to_retrain=2, window=3, cooldown=3), parent) is None  # cooling down
    assert run_worker(queue.root) == 1
    job = queue.list()[0]
    assert job.status == "done", job.error
    new = registry.card(job.result["version"])
    assert new.parent == parent and new.recipe["provenance"]["history_checks"] == [5, 6]
    # BatchNorm statistics of near-blank images cost the parent much of its clean accuracy: not promoted.
    assert new.metrics["clean_after"] < new.metrics["clean_before"]
    assert job.result["promoted"] is False and registry.get_active() == parent
    # The guard refused it and the policy says why (zeal_core.retrain.guard).
    assert [event["action"] for event in store.events(parent)] == ["queued", "refused"]
    assert json.loads(json.dumps(job.result))["reason"].startswith("guard refused")
    assert "clean accuracy" in store.events(parent)[-1]["detail"]


def test_auto_promotion_within_the_margin(tiny_reference) -> None:
    registry, reference = tiny_reference
    store, queue = HistoryStore(), JobQueue()
    queue_submit = queue.submit
    queue.submit = lambda kind, params: queue_submit(kind, params, start_worker=False)
    save_policy(store, HistoryPolicy(enabled=True, alarms_to_retrain=1, window=1, cooldown=0,
                                     promote="auto", margin=0.99))
    actions = _record_batches(reference, store, ["gaussian_noise:5"], queue)
    assert actions[0] is not None and run_worker(queue.root) == 1
    job = queue.list()[0]
    assert job.result["promoted"] is True and registry.get_active() == job.result["version"]
    assert load_dataset("digits").num_classes == 10


def test_a_check_recorded_before_the_warm_up_is_completed_later(tmp_path: Path) -> None:
    """The record of a check taken while the diagnosis warmed up gets its final estimate and diagnosis;
    the decision and the row stay the same."""
    from dataclasses import replace

    rng = np.random.default_rng(3)
    labels = np.arange(60) % 3
    reference = FittedReference.from_embeddings(Embeddings(
        features=rng.normal(size=(60, 8)).astype(np.float32), probs=np.eye(3, dtype=np.float32)[labels],
        preds=labels, labels=labels, indices=np.arange(60), logits=np.eye(3, dtype=np.float32)[labels] * 4),
        ReferenceConfig(detectors=("ks",)))
    store = HistoryStore(tmp_path / "history.sqlite")
    first = reference.check(_embeddings(5, 30, shift=2.0))
    check_id = store.record(first, origin="upload")
    assert store.get(check_id).diagnosis is None
    later = replace(first, estimates=(replace(first.estimates[0], accuracy=0.25, low=0.2, high=0.3),))
    store.complete(check_id, later)
    row = store.get(check_id)
    assert row.estimated_accuracy == pytest.approx(0.25)
    assert (row.estimate_low, row.estimate_high) == (0.2, 0.3)
    assert row.drift == first.drift and store.count() == 1
    assert row.report["estimates"][0]["accuracy"] == pytest.approx(0.25)
