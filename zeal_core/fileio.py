"""Atomic file writes: readers see the old file or the whole new one, never a part of it.

Every writer in the lab (dataset caches, model cards and weights, job files, pipeline reports, the check
history's batch store) goes through these. A temp file is created next to the target (same folder, so the
final ``os.replace`` is an atomic rename), written, flushed to disk and moved into place; on any failure the
temp file is removed and the old target is untouched. A process killed mid-write leaves only a hidden
``.<name>.<random>.tmp`` file; every later write into the same folder removes such orphans once they are
stale (``zeal_core.paths.remove_stale_temp_files``: older than 10 minutes, so a live writer's temp file is
never touched), whichever file they were meant to become.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from zeal_core.paths import remove_stale_temp_files


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temp_path)``, fsync the temp file, then move it onto ``path``.

    Args:
        path: The target file; its folder is created when missing.
        write: Writes the whole content to the temp path it is given (e.g. ``safetensors.save_file``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent, "*")  # orphans of killed writers of any file in this folder
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as file:
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
