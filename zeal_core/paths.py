"""Where the lab keeps its files. Every location can be moved with an environment variable.

Tests point these at temporary folders; the app and the command line use the project folders.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from zeal_core.errors import ConfigError

# The project root: the folder that holds app.py, data/ and models/.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Names of versions, jobs and datasets: letters, digits, '.', '_' and '-' only, so that none can escape
# its folder (no '/', no '..' as a whole name).
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _env_path(variable: str, default: Path) -> Path:
    value = os.environ.get(variable)
    return Path(value).expanduser().resolve() if value else default


def data_dir() -> Path:
    """Prepared datasets, raw archives and decoded caches (``ZEAL_DATA_DIR``, default ``data/``)."""
    return _env_path("ZEAL_DATA_DIR", PROJECT_ROOT / "data")


def models_dir() -> Path:
    """The model registry (``ZEAL_MODELS_DIR``, default ``models/``)."""
    return _env_path("ZEAL_MODELS_DIR", PROJECT_ROOT / "models")


def state_dir() -> Path:
    """Job queue, job logs and other run-time state (``ZEAL_STATE_DIR``, default ``.zeal/``)."""
    return _env_path("ZEAL_STATE_DIR", PROJECT_ROOT / ".zeal")


def safe_name(name: str, what: str = "name") -> str:
    """Return ``name`` unchanged if it is safe to use as a file or folder name, else raise.

    Args:
        name: A version id, job id or dataset name supplied by a user.
        what: What the name is, for the error message.

    Raises:
        ConfigError: The name is empty, too long, or holds a path separator or other odd character.
    """
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or name in {".", ".."}:
        raise ConfigError(
            f"invalid {what} {name!r}: use 1-128 letters, digits, '.', '_' or '-' (no '/' or '..')"
        )
    return name


# Age (s) after which a hidden temp file is taken as left by a killed process. A live writer touches its
# temp file at least every 30 s (the download timeout) and the other writers finish in seconds.
STALE_TEMP_S = 600.0


def remove_stale_temp_files(folder: Path, name: str, max_age_s: float = STALE_TEMP_S) -> list[Path]:
    """Delete ``folder/.<name>.*`` temp files older than ``max_age_s``: what a SIGKILL left mid-write.

    Writers create ``.<final name>.<random>.tmp`` (or ``.part``) next to their target and rename it into
    place; a killed process cannot clean up, so the next writer of the same target does. Younger files may
    belong to a writer still running and are kept.

    Args:
        folder: The target's folder.
        name: The target's file name (taken literally), or a pattern such as ``*.safetensors`` or ``*`` (every
            target in the folder).
        max_age_s: Minimum age in seconds (modification time).

    Returns:
        The files removed.
    """
    import glob
    import time

    removed = []
    if not folder.is_dir():
        return removed
    now = time.time()
    literal = not any(character in name for character in "*?[")
    for path in folder.glob(f".{glob.escape(name) if literal else name}.*"):
        try:
            if path.suffix in (".tmp", ".part") and path.is_file() and now - path.stat().st_mtime > max_age_s:
                path.unlink()
                removed.append(path)
        except OSError:  # another process removed or renamed it first
            continue
    return removed
