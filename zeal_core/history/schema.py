"""The check history's schema, as numbered migrations: version k of a database is migrations 1..k applied.

A new database gets every migration; an older one gets those it lacks, each in its own transaction, and
``PRAGMA user_version`` records how far it got. Never edit a released migration: add the next one.
"""

from __future__ import annotations

import sqlite3

# Migration i (1-based) brings a database from version i - 1 to version i.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: one row per check, one row per detector result of a check.
    (
        """CREATE TABLE checks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created TEXT NOT NULL,            -- ISO 8601 UTC
            model_version TEXT,
            dataset TEXT NOT NULL,
            source TEXT NOT NULL,             -- file names, 'upload', 'drift spec ...'
            n INTEGER NOT NULL,               -- images tested
            drift INTEGER,                    -- 1 drift, 0 no drift, NULL no decision
            min_p_value REAL,
            report_json TEXT NOT NULL         -- CheckReport.to_dict()
        )""",
        """CREATE TABLE detector_results (
            check_id INTEGER NOT NULL REFERENCES checks(id) ON DELETE CASCADE,
            detector TEXT NOT NULL,
            statistic REAL,
            p_value REAL,
            is_drift INTEGER,
            PRIMARY KEY (check_id, detector)
        )""",
        "CREATE INDEX checks_by_model ON checks (model_version, id)",
    ),
    # 2: where the check came from, its decision rule, the label-free estimate, the diagnosis, the batch.
    (
        "ALTER TABLE checks ADD COLUMN origin TEXT NOT NULL DEFAULT 'cli'",  # cli, upload, monitor, api
        "ALTER TABLE checks ADD COLUMN reference_n INTEGER",
        "ALTER TABLE checks ADD COLUMN alpha REAL",
        "ALTER TABLE checks ADD COLUMN decision_rule TEXT",
        "ALTER TABLE checks ADD COLUMN estimator TEXT",
        "ALTER TABLE checks ADD COLUMN estimated_accuracy REAL",
        "ALTER TABLE checks ADD COLUMN estimate_low REAL",
        "ALTER TABLE checks ADD COLUMN estimate_high REAL",
        "ALTER TABLE checks ADD COLUMN diagnosis TEXT",          # verdict and top cause, one line
        "ALTER TABLE checks ADD COLUMN batch_file TEXT",         # stored images, for adaptation; NULL if none
    ),
    # 3: what the retrain policy did, and its settings.
    (
        """CREATE TABLE policy_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created TEXT NOT NULL,
            model_version TEXT NOT NULL,      -- the model the alarms were raised on
            check_ids TEXT NOT NULL,          -- JSON list of the checks it acted on
            action TEXT NOT NULL,             -- 'queued', 'promoted', 'kept', 'failed'
            job_id TEXT,
            new_version TEXT,
            detail TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(connection: sqlite3.Connection) -> int:
    """The version a database is at (0 for a new, empty one)."""
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def migrate(connection: sqlite3.Connection) -> int:
    """Apply the missing migrations in order; returns the version reached.

    Raises:
        sqlite3.DatabaseError: The database is newer than this code (written by a later version of the lab).
    """
    version = schema_version(connection)
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"history database is at schema version {version}, newer than this lab's "
                                    f"{SCHEMA_VERSION}: upgrade the lab, or move the file aside")
    for number in range(version + 1, SCHEMA_VERSION + 1):
        connection.execute("BEGIN IMMEDIATE")  # one writer migrates; another process waits, then sees it
        if schema_version(connection) >= number:
            connection.execute("ROLLBACK")
            continue
        for statement in MIGRATIONS[number - 1]:
            connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {number}")
        connection.execute("COMMIT")
    return schema_version(connection)
