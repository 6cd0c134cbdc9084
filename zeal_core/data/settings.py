"""Data settings: built-in defaults, overridden by ``params.yaml`` (``data:`` section), then by environment.

Environment variables win so that a mirror (or a test's loopback server) works without editing files:
``ZEAL_IMAGENETTE_URL``, ``ZEAL_IMAGENETTE_MD5``. ``ZEAL_PARAMS`` points at another params file.

Folders are arguments: every loader takes ``root`` (the data folder; None = ``zeal_core.paths.data_dir()``)
and ``params_file`` (None = ``params_path()``), so a caller such as a pipeline stage can point one call at
its own folders without changing the process's environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zeal_core.errors import ConfigError
from zeal_core.paths import PROJECT_ROOT, data_dir

IMAGENETTE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"
IMAGENETTE_MD5 = "e793b78cc4c9e9a4ccc0c1155377a412"
IMAGENETTE_SIZE = 160  # px, the archive's own shorter side
FOLDER_SIZE = 64  # px; user folders are often small photos, and 64 px keeps training quick on a CPU
FOLDER_VAL_FRACTION = 0.2
FOLDER_SPLIT_SEED = 0

_MD5 = re.compile(r"^[0-9a-f]{32}$")


def params_path(params_file: Path | str | None = None) -> Path:
    """The params file: ``params_file`` when given, else ``ZEAL_PARAMS``, else ``params.yaml`` in the
    project root."""
    if params_file is not None:
        return Path(params_file).expanduser()
    value = os.environ.get("ZEAL_PARAMS")
    return Path(value).expanduser() if value else PROJECT_ROOT / "params.yaml"


def data_root(root: Path | str | None = None) -> Path:
    """The data folder: ``root`` when given, else ``zeal_core.paths.data_dir()`` (``ZEAL_DATA_DIR``)."""
    return Path(root).expanduser().resolve() if root is not None else data_dir()


def data_params(params_file: Path | str | None = None) -> dict[str, Any]:
    """The ``data:`` section of the params file (``params_path(params_file)``); empty when the file or
    section is absent."""
    path = params_path(params_file)
    if not path.exists():
        return {}
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read {path}: {error}; fix the YAML or remove the file") from None
    section = params.get("data", {}) if isinstance(params, dict) else {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: 'data' must be a mapping of settings")
    return section


def _section(key: str, params_file: Path | str | None) -> dict[str, Any]:
    value = data_params(params_file).get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{params_path(params_file)}: 'data.{key}' must be a mapping of settings")
    return value


def _size(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 8 <= value <= 1024:
        raise ConfigError(f"{where} = {value!r}: the image size must be a whole number of pixels in 8..1024")
    return value


@dataclass(frozen=True)
class ImagenetteSettings:
    """Where Imagenette comes from and how it is decoded."""

    url: str  # http(s) or file URL (a local path works too) of imagenette2-160.tgz or a mirror of it
    md5: str  # expected md5 hex of the archive; also the archive's fingerprint in cache names
    image_size: int  # working size in pixels


@dataclass(frozen=True)
class FolderSettings:
    """How a user's image folder is decoded and split."""

    image_size: int  # working size in pixels
    val_fraction: float  # share of each class held out when there are no train/ and val/ subfolders
    split_seed: int  # seed of that split


def imagenette_settings(image_size: int | None = None, *,
                        params_file: Path | str | None = None) -> ImagenetteSettings:
    """Imagenette settings from defaults, params file and environment (environment wins).

    Args:
        image_size: Overrides the working size from the params file.
        params_file: The params file to read (default ``params_path()``).

    Raises:
        ConfigError: The md5 is not 32 hex digits or the size is out of range.
    """
    section = _section("imagenette", params_file)
    url = os.environ.get("ZEAL_IMAGENETTE_URL") or str(section.get("url") or IMAGENETTE_URL)
    md5 = (os.environ.get("ZEAL_IMAGENETTE_MD5") or str(section.get("md5") or IMAGENETTE_MD5)).lower()
    if not _MD5.match(md5):
        raise ConfigError(f"Imagenette md5 {md5!r} is not 32 hex digits: fix ZEAL_IMAGENETTE_MD5 or "
                          f"data.imagenette.md5 in {params_path(params_file)}")
    size = image_size if image_size is not None else section.get("image_size", IMAGENETTE_SIZE)
    return ImagenetteSettings(url=url.strip(), md5=md5, image_size=_size(size, "data.imagenette.image_size"))


def folder_settings(image_size: int | None = None, *,
                    params_file: Path | str | None = None) -> FolderSettings:
    """Image-folder settings from defaults and the params file.

    Args:
        image_size: Overrides the working size from the params file.
        params_file: The params file to read (default ``params_path()``).

    Raises:
        ConfigError: A value is out of range.
    """
    section = _section("folder", params_file)
    size = image_size if image_size is not None else section.get("image_size", FOLDER_SIZE)
    fraction = section.get("val_fraction", FOLDER_VAL_FRACTION)
    path = params_path(params_file)
    seed = section.get("split_seed", FOLDER_SPLIT_SEED)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction < 1.0:
        raise ConfigError(f"data.folder.val_fraction = {fraction!r} in {path}: use a number "
                          "in [0, 1)")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"data.folder.split_seed = {seed!r} in {path}: use a whole number")
    return FolderSettings(image_size=_size(size, "data.folder.image_size"), val_fraction=float(fraction),
                          split_seed=seed)
