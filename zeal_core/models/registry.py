"""The model registry: versioned models as safetensors weights plus a JSON card, in ``models/``.

Layout (one pair per version, nothing else is needed)::

    models/<version>.safetensors   the weights (safetensors: tensors only, never pickle)
    models/<version>.json          the ModelCard, with the weights' sha256
    models/active.json             {"version": ...}, the version the app uses by default

Writes are atomic: each file is written to a hidden temp file in the same folder, flushed, and moved into
place with ``os.replace``; the card is written last. A version exists only when its card exists and its
weights match the card's sha256, so a process killed at any point leaves either no new version or a
complete one (a stray temp file or weights without a card are ignored by ``list``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import shutil
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file
from torch import nn

from zeal_core import paths
from zeal_core.errors import ConfigError, ModelError
from zeal_core.fileio import atomic_write
from zeal_core.jsonable import json_default
from zeal_core.models.factory import ModelConfig, create_model

log = logging.getLogger(__name__)

# Bump when the card layout changes incompatibly.
CARD_FORMAT = 1
ACTIVE_FILE = "active.json"
# A safetensors file starts with an 8-byte little-endian header length and then a JSON header "{...".
_MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class ModelCard:
    """Everything known about one model version (stored as ``models/<version>.json``)."""

    version: str  # safe id, e.g. "digits-resnet18-20261128T071500-3fa2"
    model_config: ModelConfig  # how to rebuild the network before loading the weights
    dataset: str  # dataset name it was trained on ("digits", "imagenette", "folder:PATH")
    dataset_fingerprint: str  # sha256 of that dataset's content
    recipe: dict[str, Any]  # training settings (TrainConfig.to_dict() or an adaptation's settings)
    parent: str | None  # version it was derived from (fine-tuning, adaptation), None for a fresh model
    strategy: str | None  # how it was derived from the parent ("finetune", "bn-adapt", ...), None if fresh
    drift_spec: str | None  # drift-spec text it was adapted to, None if none
    metrics: dict[str, Any]  # e.g. val_accuracy, per-class accuracy, history, before/after numbers
    created: str  # ISO 8601 UTC time of saving
    notes: str = ""  # free text (warnings such as the pretrained fallback go here too)
    weights_sha256: str = ""  # sha256 hex of the weights file, checked before every load
    format: int = CARD_FORMAT  # card layout version
    class_names: tuple[str, ...] | None = None  # what each output stands for; None: the dataset's classes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "format": self.format,
            "version": self.version,
            "model_config": self.model_config.to_dict(),
            "dataset": self.dataset,
            "dataset_fingerprint": self.dataset_fingerprint,
            "recipe": self.recipe,
            "parent": self.parent,
            "strategy": self.strategy,
            "drift_spec": self.drift_spec,
            "metrics": self.metrics,
            "created": self.created,
            "notes": self.notes,
            "weights_sha256": self.weights_sha256,
            "class_names": None if self.class_names is None else list(self.class_names),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelCard:
        """Inverse of ``to_dict``; unknown keys are ignored.

        Raises:
            ModelError: A required field is missing or of the wrong kind.
        """
        try:
            return cls(
                version=paths.safe_name(values["version"], "model version"),
                model_config=ModelConfig.from_dict(values["model_config"]),
                dataset=str(values["dataset"]),
                dataset_fingerprint=str(values.get("dataset_fingerprint", "")),
                recipe=dict(values.get("recipe") or {}),
                parent=_optional_safe_name(values.get("parent"), "parent model version"),
                strategy=_optional_text(values.get("strategy"), "strategy"),
                drift_spec=_optional_text(values.get("drift_spec"), "drift_spec"),
                metrics=dict(values.get("metrics") or {}),
                created=str(values["created"]),
                notes=str(values.get("notes", "")),
                weights_sha256=str(values.get("weights_sha256", "")),
                format=int(values.get("format", CARD_FORMAT)),
                class_names=_optional_class_names(values.get("class_names"),
                                                  int(values["model_config"]["num_classes"])),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as error:
            raise ModelError(f"model card is damaged ({type(error).__name__}: {error}): delete it and its "
                             "weights, or train the model again") from error

    def to_json(self) -> str:
        """The card as JSON text (what the ``.json`` file holds)."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=False, default=json_default)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """Inverse of ``to_json``."""
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ModelError(f"model card is not valid JSON ({error})") from error
        if not isinstance(values, dict):
            raise ModelError("model card is not a JSON object")
        return cls.from_dict(values)


def _optional_class_names(value: Any, num_classes: int) -> tuple[str, ...] | None:
    """None, or one distinct class name per model output."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValueError("class_names must be a list of strings")
    if len(value) != num_classes or len(set(value)) != len(value):
        raise ValueError(f"class_names must hold {num_classes} distinct names, got {len(value)}")
    return tuple(value)


def card_origin(card: ModelCard) -> str:
    """Where a version came from, in a word or two: "trained", "imported", "retrained" (the Retrain button or
    command line), "monitor policy" (a simulated stream's policy), "history policy" (real checks' policy)."""
    provenance = card.recipe.get("provenance") or {}
    if card.strategy == "import":
        return "imported"
    if provenance.get("origin") == "monitor":
        return "monitor policy"
    if "history_checks" in provenance:
        return "history policy"
    if card.parent is not None:
        return "retrained"
    return "trained"


def label_map(card: ModelCard, class_names: tuple[str, ...] | list[str]) -> np.ndarray:
    """For each class of a dataset (``class_names``), the model output that stands for it, or -1.

    A model trained on the whole dataset maps every class to itself; one trained on a subset (or imported
    with its own class list) maps by name, and the classes it never saw become -1 (unseen classes: the
    model cannot be right on them).

    Raises:
        ModelError: A model with its own class list shares no class with the dataset.
    """
    names = tuple(class_names)
    if card.class_names is None:
        if len(names) != card.model_config.num_classes:
            raise ModelError(f"model {card.version} has {card.model_config.num_classes} classes but the "
                             f"dataset has {len(names)}: pick a model trained on this dataset")
        return np.arange(len(names), dtype=np.int64)
    outputs = {name: index for index, name in enumerate(card.class_names)}
    mapping = np.array([outputs.get(name, -1) for name in names], dtype=np.int64)
    if (mapping < 0).all():
        raise ModelError(f"model {card.version} predicts {list(card.class_names)}, none of which is a class "
                         f"of the dataset ({list(names)}): pick a model trained on this dataset")
    return mapping


def _optional_safe_name(value: Any, what: str) -> str | None:
    """None, or a safe name (a card's parent becomes a path when its lineage is followed)."""
    return None if value is None else paths.safe_name(value, what)


def _optional_text(value: Any, what: str) -> str | None:
    """None, or a string (a card from elsewhere may hold any JSON value in these fields)."""
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{what} must be text or null, not {type(value).__name__}")


def _slug(text: str) -> str:
    """A file-name-safe fragment: runs of other characters become '-'."""
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-._")
    return slug[:40] or "model"


def new_version_id(dataset: str, arch: str, when: datetime | None = None) -> str:
    """A fresh, safe, time-sortable id such as ``digits-resnet18-20261128T071500-3fa2``."""
    when = when or datetime.now(UTC)
    name = f"{_slug(dataset)}-{_slug(arch)}-{when:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"
    return paths.safe_name(name, "model version")


_HASH_CACHE: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 of the weights file


def file_sha256(path: Path) -> str:
    """sha256 hex of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def looks_like_safetensors(data: bytes) -> bool:
    """Whether ``data`` starts like a safetensors file (checked before any parsing).

    A pickle (``torch.save``) file starts with 0x80 or a zip header; a safetensors file starts with an
    8-byte little-endian header length followed by ``{``.
    """
    if len(data) < 10:
        return False
    header_length = int.from_bytes(data[:8], "little")
    return 0 < header_length <= min(_MAX_HEADER_BYTES, len(data) - 8) and data[8:9] == b"{"


def check_safetensors_bytes(data: bytes, source: str) -> None:
    """Raise ``ModelError`` unless ``data`` looks like a safetensors file (see ``looks_like_safetensors``)."""
    if len(data) < 10:
        raise ModelError(f"model file {source} is too short to be a safetensors file: it is damaged; "
                         "delete the version and train it again")
    if not looks_like_safetensors(data):
        raise ModelError(f"model file {source} is not a safetensors file (pickle and other formats are "
                         "never loaded): delete it, or export the weights with safetensors.torch.save_file")


class ModelRegistry:
    """Versioned models in one folder; see the module docstring for the layout and the atomicity rules.

    Args:
        root: The folder; default ``zeal_core.paths.models_dir()`` (``ZEAL_MODELS_DIR`` or ``models/``).
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else paths.models_dir()
        # Verified weights, by (path, size, mtime_ns) -> sha256, so list() does not rehash unchanged files;
        # shared by every registry of the process (pages and the check service open one per rerun).
        self._hash_cache = _HASH_CACHE

    # Paths -----------------------------------------------------------------------------------------------

    def weights_path(self, version: str) -> Path:
        """``<root>/<version>.safetensors``."""
        return self.root / f"{paths.safe_name(version, 'model version')}.safetensors"

    def card_path(self, version: str) -> Path:
        """``<root>/<version>.json``."""
        return self.root / f"{paths.safe_name(version, 'model version')}.json"

    # Writing ---------------------------------------------------------------------------------------------

    def save(
        self,
        model: nn.Module,
        *,
        model_config: ModelConfig,
        dataset: str,
        dataset_fingerprint: str,
        recipe: dict[str, Any],
        metrics: dict[str, Any],
        parent: str | None = None,
        strategy: str | None = None,
        drift_spec: str | None = None,
        notes: str = "",
        class_names: tuple[str, ...] | None = None,
    ) -> ModelCard:
        """Store ``model`` as a new version (weights first, card last, each atomically) and return its card.

        ``class_names`` names the model's outputs when they are not the dataset's classes in its order (a
        model trained on a class subset, or imported with its own class list).

        Raises:
            ModelError: The parent is not a safe version name, or the weights cannot be written.
        """
        if parent is not None:
            paths.safe_name(parent, "parent model version")
        self.root.mkdir(parents=True, exist_ok=True)
        self.remove_leftovers()
        version = new_version_id(dataset, model_config.arch)
        while self.card_path(version).exists() or self.weights_path(version).exists():
            version = new_version_id(dataset, model_config.arch)
        state = {name: tensor.detach().to("cpu").contiguous().clone()
                 for name, tensor in model.state_dict().items()}
        weights_path = self.weights_path(version)
        try:
            atomic_write(weights_path, lambda tmp: save_file(state, str(tmp), metadata={"version": version}))
        except (OSError, SafetensorError, ValueError) as error:
            raise ModelError(f"could not write model weights to {weights_path}: {error}; check the folder "
                             "is writable and has free space") from error
        card = ModelCard(
            version=version,
            model_config=replace(model_config),
            dataset=dataset,
            dataset_fingerprint=dataset_fingerprint,
            recipe=dict(recipe),
            parent=parent,
            strategy=strategy,
            drift_spec=drift_spec,
            metrics=dict(metrics),
            created=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            notes=notes,
            weights_sha256=file_sha256(weights_path),
            class_names=None if class_names is None else tuple(class_names),
        )
        try:
            self._write_card(card)
        except OSError as error:
            # Without its card the weights are unreachable: remove them so nothing half-written stays.
            weights_path.unlink(missing_ok=True)
            raise ModelError(f"could not write model card {self.card_path(version)}: {error}; check the "
                             "folder is writable and has free space, then save again") from error
        return card

    def remove_leftovers(self, max_age_s: float = paths.STALE_TEMP_S) -> list[Path]:
        """Delete what a killed save left: temp files, and weights without a card, older than ``max_age_s``.

        Neither is ever visible as a version; this only frees their disk space. Younger files may belong to
        a save still running in another process and are kept.

        Returns:
            The files removed.
        """
        import time

        removed = [*paths.remove_stale_temp_files(self.root, "*.safetensors", max_age_s),
                   *paths.remove_stale_temp_files(self.root, "*.json", max_age_s)]
        now = time.time()
        for weights in self.root.glob("*.safetensors"):
            try:
                if not weights.with_suffix(".json").exists() and now - weights.stat().st_mtime > max_age_s:
                    weights.unlink()
                    removed.append(weights)
            except OSError:
                continue
        return removed

    def _write_card(self, card: ModelCard) -> None:
        """Write the card (the step that makes a version visible)."""
        text = card.to_json()
        atomic_write(self.card_path(card.version), lambda tmp: tmp.write_text(text))

    def delete(self, version: str) -> None:
        """Remove a version, damaged or not: the card first (so it vanishes at once), then its weights.

        When it was the active version, ``active.json`` goes too (no version is active afterwards); the
        pointer of another version is never touched, even when that one is damaged.

        Raises:
            ModelError: There is no such version.
        """
        card_path, weights_path = self.card_path(version), self.weights_path(version)
        if not card_path.exists() and not weights_path.exists():
            raise ModelError(f"no model version {version!r} in {self.root}: `zeal models list` (or the "
                             "Model page) shows the versions there are")
        was_active = self._active_text_names(version)
        card_path.unlink(missing_ok=True)
        weights_path.unlink(missing_ok=True)
        # What checks fitted for this version and kept beside it (zeal_core.reference.persist).
        shutil.rmtree(self.root / f"{paths.safe_name(version, 'model version')}.fitted", ignore_errors=True)
        if was_active:
            (self.root / ACTIVE_FILE).unlink(missing_ok=True)

    # Reading ---------------------------------------------------------------------------------------------

    def _verified_sha(self, path: Path) -> str:
        status = path.stat()
        key = (str(path), status.st_size, status.st_mtime_ns)
        if key not in self._hash_cache:
            self._hash_cache[key] = file_sha256(path)
        return self._hash_cache[key]

    def _read_card(self, version: str) -> ModelCard:
        card_path = self.card_path(version)
        if not card_path.exists():
            raise ModelError(f"no model version {version!r} in {self.root}: `zeal models list` shows the "
                             "versions there are (or use --model active); `zeal train --dataset digits` "
                             "trains one")
        try:
            card = ModelCard.from_json(card_path.read_text())
        except OSError as error:
            raise ModelError(f"model card {card_path} cannot be read: {error}") from error
        except ModelError as error:
            raise ModelError(f"model card {card_path}: {error}") from error
        if card.version != version:
            raise ModelError(f"model card {card_path} names version {card.version!r}, not {version!r}: "
                             "the file was renamed; rename it back or delete it")
        return card

    def card(self, version: str) -> ModelCard:
        """The card of a valid version (its weights present and matching).

        Raises:
            ModelError: The version is missing, its card is damaged, or its weights are missing or changed.
        """
        card = self._read_card(version)
        weights_path = self.weights_path(version)
        if not weights_path.exists():
            raise ModelError(f"model version {version!r} has no weights file {weights_path}: it was only "
                             "partly written or deleted; delete the version and train it again")
        if card.weights_sha256 and self._verified_sha(weights_path) != card.weights_sha256:
            raise ModelError(f"model weights {weights_path} do not match the sha256 in their card (changed "
                             "or damaged): delete the version and train it again")
        return card

    def load(self, version: str, device: torch.device | str = "cpu") -> tuple[nn.Module, ModelCard]:
        """The model in eval mode on ``device``, and its card. Only safetensors is ever read.

        Raises:
            ModelError: Missing or invalid version, a weights file that is not safetensors, or weights that
                do not fit the card's model config.
        """
        from zeal_core.device import resolve_device

        card = self._read_card(version)
        weights_path = self.weights_path(version)
        try:
            data = weights_path.read_bytes()
        except FileNotFoundError as error:
            raise ModelError(f"model version {version!r} has no weights file {weights_path}: it was only "
                             "partly written or deleted; delete the version and train it again") from error
        # Hash and parse the same bytes, so the file cannot change between the check and the load.
        if card.weights_sha256 and hashlib.sha256(data).hexdigest() != card.weights_sha256:
            raise ModelError(f"model weights {weights_path} do not match the sha256 in their card (changed "
                             "or damaged): delete the version and train it again")
        check_safetensors_bytes(data, str(weights_path))
        try:
            state = load_safetensors_bytes(data)
        except (SafetensorError, ValueError) as error:
            raise ModelError(f"model file {weights_path} is not a readable safetensors file ({error}): "
                             "delete the version and train it again") from error
        # The card's weights replace any pretrained ones, so never fetch from the hub here.
        model = create_model(replace(card.model_config, pretrained=False))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[0]
            raise ModelError(f"model weights {weights_path} do not fit {card.model_config.arch} with "
                             f"{card.model_config.num_classes} classes ({first_line}): the card and weights "
                             "disagree; delete the version") from error
        model.to(resolve_device(device))
        model.eval()
        return model, card

    def list(self) -> list[ModelCard]:
        """Valid versions, newest first. Damaged or half-written versions are skipped (see ``damaged``)."""
        cards = []
        for version in self._card_versions():
            try:
                cards.append(self.card(version))
            except (ModelError, ConfigError, OSError) as error:
                log.debug("skipping model %s: %s", version, error)
        cards.sort(key=lambda card: (card.created, card.version), reverse=True)
        return cards

    def _card_versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(path.stem for path in self.root.glob("*.json")
                      if path.name != ACTIVE_FILE and not path.name.startswith("."))

    def problem(self, version: str) -> str | None:
        """Why ``version`` cannot be used (missing, damaged card, missing or changed weights), or None."""
        try:
            self.card(version)
        except (ModelError, ConfigError, OSError) as error:
            return str(error)
        return None

    def damaged(self) -> list[tuple[str, str]]:
        """``(version, what is wrong)`` for every card in the folder that does not give a usable version."""
        found = []
        for version in self._card_versions():
            try:
                paths.safe_name(version, "model version")
            except ConfigError as error:
                found.append((version, str(error)))
                continue
            reason = self.problem(version)
            if reason is not None:
                found.append((version, reason))
        return found

    def versions(self) -> list[str]:
        """Ids of the valid versions, newest first."""
        return [card.version for card in self.list()]

    def resolve(self, name: str) -> str:
        """``"active"`` (the newest only when none was ever made active), ``"latest"`` or a version id -> a
        version id.

        Raises:
            ModelError: ``active``/``latest`` was asked for but there is no model yet, or the active version
                is damaged or gone (never replaced by another version: the message names it and the fix).
        """
        if name not in ("active", "latest"):
            return name
        if name == "active" and self.active_is_set():
            version = self.active_pointer()
            reason = self.problem(version)
            if reason is not None:
                raise self.damaged_active_error(version, reason)
            return version
        newest = self.latest()
        if newest is None:
            raise ModelError(f"no model in {self.root}: train one with `zeal train --dataset digits` (or "
                             "the Home page's button), or import one with `zeal models import`")
        return newest.version

    def latest(self, dataset: str | None = None) -> ModelCard | None:
        """The newest valid version (for ``dataset`` when given), or None."""
        for card in self.list():
            if dataset is None or card.dataset == dataset:
                return card
        return None

    # The active version ----------------------------------------------------------------------------------

    def get_active(self) -> str | None:
        """The active version id, or None when none is set or it is no longer valid (``active_problem``
        says which)."""
        try:
            version = self.active_pointer()
            if version is None:
                return None
            self.card(version)
        except (OSError, ModelError, ConfigError):
            return None
        return version

    def active_is_set(self) -> bool:
        """Whether ``active.json`` exists (a version was made active), valid or not."""
        return (self.root / ACTIVE_FILE).exists()

    def active_pointer(self) -> str | None:
        """The version ``active.json`` names, whether or not it is still usable; None without the file.

        Raises:
            ModelError: ``active.json`` is unreadable or names no valid version id.
        """
        path = self.root / ACTIVE_FILE
        try:
            version = json.loads(path.read_text()).get("version")
            return paths.safe_name(version, "model version")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError, TypeError, ConfigError) as error:
            raise ModelError(f"{path} is damaged ({type(error).__name__}: {error}): make a version active "
                             "again (`zeal models activate VERSION`, or the Model page)") \
                from None

    def active_problem(self) -> tuple[str, str] | None:
        """``(version, what is wrong)`` when ``active.json`` names an unusable version, else None."""
        try:
            version = self.active_pointer()
        except ModelError as error:
            return ACTIVE_FILE, str(error)
        reason = None if version is None else self.problem(version)
        return None if reason is None else (version, reason)

    def damaged_active_error(self, version: str, reason: str) -> ModelError:
        """The error for a damaged active version: its name, what is wrong, and how to fix it."""
        return ModelError(f"the active model version {version} cannot be used ({reason}). No other version "
                          f"is used in its place: restore its files, or delete it (`zeal models delete "
                          f"{version}`) and make another version active (`zeal models activate VERSION`, "
                          "or the Model page)")

    def _active_text_names(self, version: str) -> bool:
        try:
            return self.active_pointer() == version
        except ModelError:
            return False

    def set_active(self, version: str) -> None:
        """Make ``version`` the active one (atomic write of ``active.json``).

        Raises:
            ModelError: The version is missing or invalid.
        """
        self.card(version)
        self.root.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"version": version})
        atomic_write(self.root / ACTIVE_FILE, lambda tmp: tmp.write_text(text))
