"""The check history: every check of a real batch (command line, upload page, monitor), kept in SQLite.

One file, ``state_dir()/history/history.sqlite``, in WAL mode so that readers never block the writer and
several processes (a cron job, the app, a CI step) can record at once: each write is one short
``BEGIN IMMEDIATE`` transaction, and a writer that finds the database busy waits up to ``BUSY_TIMEOUT_S``.
The schema is versioned (``zeal_core.history.schema``); opening an older file migrates it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zeal_core.errors import ConfigError, DataError
from zeal_core.history.schema import migrate
from zeal_core.paths import state_dir
from zeal_core.reference.report import CheckReport, now_text

BUSY_TIMEOUT_S = 30.0  # s a writer waits for another process's transaction before giving up
BUSY_VARIABLE = "ZEAL_HISTORY_BUSY_S"  # environment variable overriding BUSY_TIMEOUT_S (seconds)
REPAIR_COMMAND = "zeal history repair"
ORIGINS = ("cli", "upload", "monitor", "api")  # where a check was started


class HistoryError(DataError):
    """The check history cannot be read or written (damaged, read-only, locked); the message says the fix."""


def history_error(path: Path, error: BaseException, waited_s: float = BUSY_TIMEOUT_S) -> HistoryError:
    """A ``HistoryError`` naming the file, what is wrong with it and the fix, for a ``sqlite3`` error."""
    text = str(error)
    lower = text.lower()
    if "locked" in lower or "busy" in lower:
        return HistoryError(f"the check history {path} is locked by another process (waited {waited_s:g} s; "
                            f"{text}): another check or the app holds a write; retry later")
    if "readonly" in lower or "read-only" in lower:
        return HistoryError(f"the check history {path} is read-only ({text}): make the file and its folder "
                            "writable, or set ZEAL_STATE_DIR to a writable folder")
    if "unable to open" in lower:
        return HistoryError(f"cannot open the check history {path} ({text}): the file or its folder is "
                            "missing, read-only or not accessible; make both writable, or set ZEAL_STATE_DIR "
                            "to a writable folder")
    if "full" in lower:
        return HistoryError(f"the check history {path} cannot grow ({text}): free disk space")
    if "schema version" in lower:
        return HistoryError(f"the check history {path}: {text}")
    return HistoryError(f"the check history {path} is damaged ({type(error).__name__}: {text}): run "
                        f"`{REPAIR_COMMAND}` (it keeps the damaged file beside it and salvages the checks "
                        "it can still read into a new one), or restore a copy made by `zeal "
                        f"history backup` with `{REPAIR_COMMAND} --from COPY`")


def default_busy_timeout_s() -> float:
    """Seconds a writer waits for a lock: ``ZEAL_HISTORY_BUSY_S``, else ``BUSY_TIMEOUT_S``."""
    text = os.environ.get(BUSY_VARIABLE, "").strip()
    try:
        value = float(text) if text else BUSY_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"{BUSY_VARIABLE}={text!r}: use a number of seconds, e.g. 30") from None
    if not 0 <= value <= 3600:
        raise ConfigError(f"{BUSY_VARIABLE}={text!r}: use 0 to 3600 seconds")
    return value


def default_path() -> Path:
    """``state_dir()/history/history.sqlite``."""
    return state_dir() / "history" / "history.sqlite"


@dataclass(frozen=True)
class CheckRow:
    """One recorded check (the columns most readers need; ``report`` holds the rest)."""

    id: int  # row id, increasing with time
    created: str  # ISO 8601 UTC
    model_version: str | None  # the reference's model
    dataset: str  # the reference's dataset
    source: str  # what was checked
    origin: str  # cli, upload, monitor or api
    n: int  # images tested
    drift: bool | None  # the decision (None: no decision)
    min_p_value: float | None  # the smallest detector p-value
    alpha: float | None  # the decision's family-wise level
    estimator: str | None  # which label-free estimator gave the estimate
    estimated_accuracy: float | None  # label-free estimate (None before estimators or when not run)
    estimate_low: float | None  # its interval
    estimate_high: float | None
    diagnosis: str | None  # the diagnosis in one line: verdict and top cause
    batch_file: str | None  # stored images (for adaptation), if kept
    p_values: dict[str, float]  # detector -> p-value
    report: dict[str, Any]  # CheckReport.to_dict()


class HistoryStore:
    """Open (and create or migrate) the history database.

    Every ``sqlite3`` error (a damaged, truncated, read-only or locked file) reaches callers as a
    ``HistoryError`` that names the file and the fix (``history repair``, permissions, retry).

    Args:
        path: The SQLite file; default ``state_dir()/history/history.sqlite``.
        busy_timeout_s: Seconds a writer waits for another's lock (default ``ZEAL_HISTORY_BUSY_S`` or 30).
    """

    def __init__(self, path: Path | str | None = None, *, busy_timeout_s: float | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.busy_timeout_s = busy_timeout_s if busy_timeout_s is not None else default_busy_timeout_s()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise history_error(self.path, sqlite3.OperationalError(f"unable to open ({error})")) from None
        self._local = threading.local()  # one connection per thread (sqlite3 objects are not shareable)
        with self._connection() as connection:
            if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                connection.execute("PRAGMA journal_mode = WAL")
            migrate(connection)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        connection = getattr(self._local, "connection", None)
        try:
            if connection is None:
                connection = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
                connection.row_factory = sqlite3.Row
                connection.execute("PRAGMA foreign_keys = ON")
                self._local.connection = connection
            yield connection
        except sqlite3.Error as error:
            self.close()  # a fresh connection next time (the file may be repaired meanwhile)
            raise history_error(self.path, error, self.busy_timeout_s) from error
        except json.JSONDecodeError as error:  # a stored report that no longer parses
            raise history_error(self.path, sqlite3.DatabaseError(f"a stored report is not JSON: {error}")) \
                from error

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: it takes the write lock at once, or waits for it)."""
        with self._connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # the original error is the one to report
                    connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                connection.close()
            self._local.connection = None

    # ------------------------------------------------------------------------------------------- writing

    def record(self, report: CheckReport, *, origin: str = "cli", batch_file: str | None = None) -> int:
        """Store one check and its detector results; returns the new row id."""
        if origin not in ORIGINS:
            raise ConfigError(f"unknown check origin {origin!r}: use one of {', '.join(ORIGINS)}")
        values = report.to_dict()
        decision = values["decision"]
        row = {
            "created": values["created"] or now_text(), "model_version": report.version,
            "dataset": report.dataset, "source": report.source, "n": report.n,
            "drift": None if decision is None else int(decision["drift"]),
            "min_p_value": None if decision is None else decision["min_p_value"],
            "report_json": json.dumps(values, allow_nan=False), "origin": origin,
            "reference_n": report.reference_n, "alpha": None if decision is None else decision["alpha"],
            "decision_rule": None if decision is None else decision["rule"],
            **_label_free_columns(values), "batch_file": batch_file,
        }
        columns = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        with self.transaction() as connection:
            cursor = connection.execute(f"INSERT INTO checks ({columns}) VALUES ({marks})", row)
            check_id = int(cursor.lastrowid)
            connection.executemany(
                "INSERT INTO detector_results (check_id, detector, statistic, p_value, is_drift) "
                "VALUES (?, ?, ?, ?, ?)",
                [(check_id, result.detector, _finite(result.statistic), result.p_value, int(result.is_drift))
                 for result in report.results])
        return check_id

    def complete(self, check_id: int, report: CheckReport) -> None:
        """Replace a recorded check's estimate, diagnosis and stored report with those of ``report``: the
        same check redone once its label-free parts finished warming up (the decision stays as recorded)."""
        values = report.to_dict()
        columns = _label_free_columns(values)
        assignments = ", ".join(f"{name} = :{name}" for name in columns)
        with self.transaction() as connection:
            connection.execute(f"UPDATE checks SET {assignments}, report_json = :report_json WHERE id = :id",
                               {**columns, "report_json": json.dumps(values, allow_nan=False),
                                "id": int(check_id)})

    def set_batch_file(self, check_id: int, batch_file: str | None) -> None:
        """Record (or clear) where a check's images are stored."""
        with self.transaction() as connection:
            connection.execute("UPDATE checks SET batch_file = ? WHERE id = ?", (batch_file, check_id))

    # ------------------------------------------------------------------------------------------- reading

    def checks(self, *, model_version: str | None = None, limit: int | None = None,
               since_id: int = 0) -> list[CheckRow]:
        """Recorded checks, oldest first (the last ``limit`` when given)."""
        where, arguments = ["id > ?"], [since_id]
        if model_version is not None:
            where.append("model_version = ?")
            arguments.append(model_version)
        query = f"SELECT * FROM checks WHERE {' AND '.join(where)} ORDER BY id DESC"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        with self._connection() as connection:
            rows = connection.execute(query, arguments).fetchall()
            p_values = self._p_values(connection, [row["id"] for row in rows])
        return [_row(row, p_values.get(row["id"], {})) for row in reversed(rows)]

    def get(self, check_id: int) -> CheckRow:
        """One check by id.

        Raises:
            ConfigError: No such check.
        """
        with self._connection() as connection:
            row = connection.execute("SELECT * FROM checks WHERE id = ?", (int(check_id),)).fetchone()
            if row is None:
                raise ConfigError(f"no check {check_id} in the history {self.path}: `zeal history` lists "
                                  "the ids there are")
            return _row(row, self._p_values(connection, [row["id"]]).get(row["id"], {}))

    def count(self) -> int:
        """How many checks are recorded."""
        with self._connection() as connection:
            return int(connection.execute("SELECT COUNT(*) FROM checks").fetchone()[0])

    @staticmethod
    def _p_values(connection: sqlite3.Connection, ids: list[int]) -> dict[int, dict[str, float]]:
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        found: dict[int, dict[str, float]] = {}
        for row in connection.execute(f"SELECT check_id, detector, p_value FROM detector_results "
                                      f"WHERE check_id IN ({marks})", ids):
            found.setdefault(row["check_id"], {})[row["detector"]] = row["p_value"]
        return found

    # ---------------------------------------------------------------------------------- settings, events

    def setting(self, key: str, default: Any = None) -> Any:
        """A stored setting (JSON value), or ``default``."""
        with self._connection() as connection:
            row = connection.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row["value"])

    def set_setting(self, key: str, value: Any) -> None:
        """Store a setting (any JSON value)."""
        with self.transaction() as connection:
            connection.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                               "SET value = excluded.value", (key, json.dumps(value)))

    def add_event(self, model_version: str, check_ids: list[int], action: str, *, job_id: str | None = None,
                  new_version: str | None = None, detail: str = "") -> int:
        """Record what the retrain policy did; returns the event id."""
        with self.transaction() as connection:
            cursor = connection.execute(
                "INSERT INTO policy_events (created, model_version, check_ids, action, job_id, new_version, "
                "detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (now_text(), model_version, json.dumps(check_ids), action, job_id, new_version, detail))
            return int(cursor.lastrowid)

    def events(self, model_version: str | None = None) -> list[dict[str, Any]]:
        """Policy events, oldest first."""
        query, arguments = "SELECT * FROM policy_events", []
        if model_version is not None:
            query, arguments = query + " WHERE model_version = ?", [model_version]
        with self._connection() as connection:
            rows = connection.execute(query + " ORDER BY id", arguments).fetchall()
        return [{**dict(row), "check_ids": json.loads(row["check_ids"])} for row in rows]


def _finite(value: float) -> float | None:
    return value if value == value and abs(value) != float("inf") else None  # NaN/inf -> NULL


def _label_free_columns(values: dict[str, Any]) -> dict[str, Any]:
    """The estimate and diagnosis columns of a check from ``CheckReport.to_dict()`` values."""
    estimate = values["estimates"][0] if values["estimates"] else None
    diagnosis = values["diagnosis"]
    return {"estimator": None if estimate is None else estimate["estimator"],
            "estimated_accuracy": None if estimate is None else estimate["accuracy"],
            "estimate_low": None if estimate is None else estimate["low"],
            "estimate_high": None if estimate is None else estimate["high"],
            "diagnosis": None if diagnosis is None else diagnosis.get("summary") or diagnosis.get("verdict")}


def _row(row: sqlite3.Row, p_values: dict[str, float]) -> CheckRow:
    return CheckRow(
        id=int(row["id"]), created=row["created"], model_version=row["model_version"], dataset=row["dataset"],
        source=row["source"], origin=row["origin"], n=int(row["n"]),
        drift=None if row["drift"] is None else bool(row["drift"]), min_p_value=row["min_p_value"],
        alpha=row["alpha"], estimator=row["estimator"], estimated_accuracy=row["estimated_accuracy"],
        estimate_low=row["estimate_low"],
        estimate_high=row["estimate_high"], diagnosis=row["diagnosis"], batch_file=row["batch_file"],
        p_values=p_values, report=json.loads(row["report_json"]))
