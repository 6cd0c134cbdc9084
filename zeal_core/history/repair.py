"""Keeping the check history safe: a consistent backup, a health check, and a repair that loses nothing new.

- ``backup(path)`` copies the live database with SQLite's online backup (a consistent snapshot even while
  another process writes) to ``<history folder>/backups/history-<UTC time>.sqlite``.
- ``health(path)`` says whether the file opens and passes ``PRAGMA quick_check``.
- ``repair(path)`` moves a damaged file aside (``history.sqlite.damaged-<UTC time>``, with its ``-wal`` and
  ``-shm`` files, never deleted), creates a fresh database and copies into it every row of the damaged one
  that can still be read, table by table and, where a table scan breaks off, row by row. ``repair(path,
  source=copy)`` restores a backup instead (checked first). A healthy database is left alone.
"""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zeal_core.errors import DataError
from zeal_core.history.store import HistoryStore, default_path, history_error

TABLES = ("checks", "detector_results", "policy_events", "settings")  # copied in this order (foreign keys)
SIDE_FILES = ("-wal", "-shm")  # SQLite's companions of a WAL-mode database
ROW_PROBE_GAP = 2000  # rowids probed past the last readable one when a table scan breaks off


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


def health(path: Path | str | None = None) -> dict[str, Any]:
    """``{"ok": bool, "path": ..., "problem": text or None}`` for the history file (missing counts as ok)."""
    path = Path(path) if path is not None else default_path()
    if not path.exists():
        return {"ok": True, "path": str(path), "problem": None}
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            result = connection.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error as error:
        return {"ok": False, "path": str(path), "problem": f"{type(error).__name__}: {error}"}
    return {"ok": result == "ok", "path": str(path), "problem": None if result == "ok" else result}


def backup(path: Path | str | None = None, out: Path | str | None = None) -> dict[str, Any]:
    """Copy the history to ``out`` (default ``<folder>/backups/history-<time>.sqlite``) consistently.

    Raises:
        HistoryError: The history cannot be read (damaged: repair it first) or the copy cannot be written.
    """
    path = Path(path) if path is not None else default_path()
    if not path.exists():
        raise DataError(f"no check history at {path} yet: nothing to back up")
    target = Path(out) if out is not None else path.parent / "backups" / f"history-{_stamp()}.sqlite"
    if target.is_dir():
        target = target / f"history-{_stamp()}.sqlite"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    try:
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)
            checks = copy.execute("SELECT COUNT(*) FROM checks").fetchone()[0]
        finally:
            copy.close()
            source.close()
    except sqlite3.Error as error:
        partial.unlink(missing_ok=True)
        raise history_error(path, error) from error
    partial.replace(target)
    return {"history": str(path), "backup": str(target), "checks": int(checks),
            "bytes": target.stat().st_size}


def _move_aside(path: Path) -> Path:
    """Rename the database and its side files to ``<name>.damaged-<time>``; returns the new path."""
    aside = path.with_name(f"{path.name}.damaged-{_stamp()}")
    path.replace(aside)
    for suffix in SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.replace(aside.with_name(aside.name + suffix))
    return aside


def _readable_rows(connection: sqlite3.Connection, table: str) -> tuple[list[sqlite3.Row], int]:
    """Every row of ``table`` that can be read, and how many rowids failed."""
    try:
        return connection.execute(f"SELECT rowid AS _rowid, * FROM {table} ORDER BY rowid").fetchall(), 0
    except sqlite3.Error:
        pass
    rows, failed, rowid, last_good = [], 0, 0, 0
    while rowid - last_good <= ROW_PROBE_GAP:  # the scan broke off: probe row by row
        rowid += 1
        try:
            row = connection.execute(f"SELECT rowid AS _rowid, * FROM {table} WHERE rowid = ?",
                                     (rowid,)).fetchone()
        except sqlite3.Error:
            failed += 1
            continue
        if row is not None:
            rows.append(row)
            last_good = rowid
    return rows, failed


def _salvage(damaged: Path, store: HistoryStore) -> dict[str, int]:
    """Copy what can be read of ``damaged`` into ``store``; returns rows copied per table."""
    copied = dict.fromkeys(TABLES, 0)
    try:
        old = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True, timeout=5)
        old.row_factory = sqlite3.Row
    except sqlite3.Error:
        return copied
    try:
        with store.transaction() as new:
            for table in TABLES:
                columns = {row[1] for row in new.execute(f"PRAGMA table_info({table})")}
                rows, _ = _readable_rows(old, table)
                for row in rows:
                    pairs = zip(row.keys(), row, strict=True)
                    values = {key: value for key, value in pairs if key in columns}
                    if not values:
                        continue
                    names = ", ".join(values)
                    marks = ", ".join(f":{name}" for name in values)
                    try:
                        new.execute(f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})", values)
                    except sqlite3.Error:  # a row that breaks a constraint: left in the damaged copy
                        continue
                    copied[table] += 1
    finally:
        old.close()
    return copied


def repair(path: Path | str | None = None, *, source: Path | str | None = None,
           force: bool = False) -> dict[str, Any]:
    """Rebuild a damaged history (or restore ``source``, a backup); the damaged file is kept beside it.

    Args:
        path: The history file (default ``default_path()``).
        source: A backup to restore instead of salvaging the damaged file.
        force: Rebuild even when the file looks healthy.

    Raises:
        DataError: ``source`` is missing or itself damaged.
    """
    path = Path(path) if path is not None else default_path()
    state = health(path)
    if source is not None:
        checked = health(source)
        if not Path(source).is_file() or not checked["ok"]:
            raise DataError(f"backup {source} cannot be restored: "
                            f"{checked['problem'] or 'no such file'}; pick another copy")
    elif state["ok"] and not force:
        return {"history": str(path), "repaired": False, "healthy": True,
                "message": "the history is healthy: nothing to repair"}
    aside = _move_aside(path) if path.exists() else None
    if source is not None:
        shutil.copyfile(source, path)
        store = HistoryStore(path)  # migrates an older backup
        return {"history": str(path), "repaired": True, "restored_from": str(source),
                "damaged_copy": None if aside is None else str(aside), "checks": store.count()}
    store = HistoryStore(path)
    copied = _salvage(aside, store) if aside is not None else dict.fromkeys(TABLES, 0)
    return {"history": str(path), "repaired": True, "problem": state["problem"],
            "damaged_copy": None if aside is None else str(aside), "salvaged": copied,
            "checks": store.count()}
