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
