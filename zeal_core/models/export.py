"""A version leaves the lab: its weights as plain timm loads them, and its card next to them.

Formats (``EXPORT_FORMATS``), each written as ``<name>.<suffix>`` plus the card ``<name>.json``:

- ``safetensors`` (default): ``<name>.safetensors``. Plain timm loads it with two lines::

      m = timm.create_model(arch, num_classes=K)
      m.load_state_dict(safetensors.torch.load_file(path))

  (``arch`` and ``K`` are the card's ``model_config.arch`` and ``model_config.num_classes``; feed it
  ``image_size`` px images normalised with the card's ``mean`` and ``std``.) The header metadata repeats the
  model config and class list, so ``models import`` of this file alone needs no options, and the pair is a
  valid version for another lab's models folder (the card's ``weights_sha256`` is the exported file's).
- ``state-dict``: ``<name>.pth`` written by ``torch.save(state_dict)``, for scripts that expect that;
  ``m.load_state_dict(torch.load(path, weights_only=True))`` loads it.

The tensor names are timm's own (the registry stores ``model.state_dict()`` of the timm network), so
nothing is renamed on the way out.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save as save_safetensors_bytes

from zeal_core import paths
from zeal_core.errors import ModelError
from zeal_core.fileio import atomic_write_bytes, atomic_write_text
from zeal_core.jsonable import json_default
from zeal_core.models.checkpoint import METADATA_CLASS_NAMES, METADATA_MODEL_CONFIG, METADATA_VERSION
from zeal_core.plugins import Registry

if TYPE_CHECKING:
    from zeal_core.models.registry import ModelCard, ModelRegistry


@dataclass(frozen=True)
class ExportFormat:
    """One way to write a model's weights."""

    name: str  # e.g. "safetensors"
    suffix: str  # file name ending, e.g. ".safetensors"
    encode: Callable[[dict[str, torch.Tensor], dict[str, str]], bytes]  # (state dict, metadata) -> bytes
    load_hint: str  # the two lines plain timm code loads it with ({path}, {arch}, {num_classes} filled in)


EXPORT_FORMATS: Registry[ExportFormat] = Registry("export format")


def register_export_format(export_format: ExportFormat) -> ExportFormat:
    """Add a format to ``EXPORT_FORMATS`` (the command line and the Model page offer every one)."""
    return EXPORT_FORMATS.add(export_format.name, export_format)


def _torch_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)  # a plain dict of tensors: torch.load(weights_only=True) reads it back
    return buffer.getvalue()


register_export_format(ExportFormat(
    name="safetensors", suffix=".safetensors",
    encode=lambda state, metadata: save_safetensors_bytes(state, metadata=metadata),
    load_hint=("m = timm.create_model({arch!r}, num_classes={num_classes})\n"
               "m.load_state_dict(safetensors.torch.load_file({path!r}))")))
register_export_format(ExportFormat(
    name="state-dict", suffix=".pth", encode=_torch_bytes,
    load_hint=("m = timm.create_model({arch!r}, num_classes={num_classes})\n"
               "m.load_state_dict(torch.load({path!r}, weights_only=True))")))


def list_export_formats() -> list[str]:
    """Names of the export formats, default first."""
    return EXPORT_FORMATS.names()


@dataclass(frozen=True)
class ExportedFiles:
    """An export held in memory (what the Model page offers for download)."""

    weights_name: str  # e.g. "digits-resnet18-...-3fa2.safetensors"
    weights: bytes  # the weights file's content
    card_name: str  # e.g. "digits-resnet18-...-3fa2.json"
    card_text: str  # the card's JSON
    format: str  # the export format's name
    sha256: str  # of ``weights``
    load_hint: str  # the two lines that load it in plain timm


def load_hint(card: ModelCard, export_format: str = "safetensors", path: str | None = None) -> str:
    """The two lines that load ``card``'s export in plain timm (``path`` default: the version's file name)."""
    chosen = EXPORT_FORMATS.get(export_format)
    return chosen.load_hint.format(arch=card.model_config.arch, num_classes=card.model_config.num_classes,
                                   path=path or card.version + chosen.suffix)


def export_files(version: str, export_format: str = "safetensors", *, registry: ModelRegistry | None = None,
                 name: str | None = None) -> ExportedFiles:
    """The weights and card of ``version`` in ``export_format``, as bytes and text.

    Args:
        version: A version id, ``"active"`` or ``"latest"``.
        export_format: One of ``list_export_formats()``.
        registry: Default ``ModelRegistry()``.
        name: File name stem; default the version id.

    Raises:
        ConfigError: Unknown format or unsafe name. ModelError: no such version, or its weights are damaged.
    """
    from zeal_core.models.registry import ModelRegistry

    chosen = EXPORT_FORMATS.get(export_format)
    registry = registry if registry is not None else ModelRegistry()
    model, card = registry.load(registry.resolve(version), device="cpu")  # checks the sha256 first
    stem = paths.safe_name(name or card.version, "export file name")
    state = {key: tensor.detach().contiguous().clone() for key, tensor in model.state_dict().items()}
    weights = chosen.encode(state, _metadata(card))
    sha256 = hashlib.sha256(weights).hexdigest()
    hint = load_hint(card, chosen.name, stem + chosen.suffix)
    return ExportedFiles(weights_name=stem + chosen.suffix, weights=weights, card_name=f"{stem}.json",
                         card_text=_card_text(card, chosen, stem + chosen.suffix, sha256, hint),
                         format=chosen.name, sha256=sha256, load_hint=hint)


def export_version(version: str, out_dir: str | Path, export_format: str = "safetensors", *,
                   registry: ModelRegistry | None = None, name: str | None = None) -> dict[str, Any]:
    """Write ``version`` to ``out_dir`` as ``<name><suffix>`` and ``<name>.json`` (each atomically).

    Returns:
        JSON-ready facts: version, format, the two paths, the weights' sha256 and size, the load hint.

    Raises:
        ConfigError, ModelError: As ``export_files``; ModelError also when ``out_dir`` is a file or
            cannot be written.
    """
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ModelError(f"export folder {out} is a file: give a folder (it is created when missing)")
    files = export_files(version, export_format, registry=registry, name=name)
    weights_path, card_path = out / files.weights_name, out / files.card_name
    try:
        atomic_write_bytes(weights_path, files.weights)
        atomic_write_text(card_path, files.card_text)
    except OSError as error:
        raise ModelError(f"could not write the export to {out}: {error}; check the folder is writable and "
                         "has free space") from error
    card = json.loads(files.card_text)
    return {"version": card["version"], "format": files.format, "weights": str(weights_path),
            "card": str(card_path), "sha256": files.sha256, "bytes": len(files.weights),
            "arch": card["model_config"]["arch"], "num_classes": card["model_config"]["num_classes"],
            "load": files.load_hint}


def _metadata(card: ModelCard) -> dict[str, str]:
    """safetensors header strings: what ``models import`` needs to take the file back without options."""
    return {"format": "pt", METADATA_VERSION: card.version,
            METADATA_MODEL_CONFIG: json.dumps(card.model_config.to_dict()),
            METADATA_CLASS_NAMES: json.dumps(None if card.class_names is None else list(card.class_names))}


def _card_text(card: ModelCard, chosen: ExportFormat, file_name: str, sha256: str, hint: str) -> str:
    values = card.to_dict()
    values["weights_sha256"] = sha256  # the exported file's, so the pair is a valid registry version
    config = card.model_config
    values["export"] = {"file": file_name, "format": chosen.name, "load": hint,
                        "registry_weights_sha256": card.weights_sha256,
                        "input": {"image_size": config.image_size, "mean": list(config.mean),
                                  "std": list(config.std), "pixels": "RGB, scaled to [0, 1] first"}}
    return json.dumps(values, indent=1, default=json_default)
