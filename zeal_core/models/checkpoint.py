"""Reading a checkpoint made outside the lab, safely, and fitting it to a timm architecture.

The one reader of foreign weights: ``models import`` and ``train --init`` both go through it.

Formats (chosen by the file name's suffix, then checked against the content):

- ``.safetensors``: read with safetensors only (a header of JSON, then raw tensor bytes; nothing runs).
- ``.pth``, ``.pt``, ``.bin``, ``.ckpt``, ``.pth.tar``: ``torch.save`` files, read with
  ``torch.load(..., map_location="cpu", weights_only=True)``, whose unpickler builds only tensors, numbers,
  strings and containers. A file that needs anything else (a whole pickled model, ``argparse.Namespace``,
  a numpy scalar, or a payload that would call ``os.system``) is refused before any of it is built.

What counts as the weights: a mapping of names to tensors, either the whole file or under one of the
common wrapper keys (``WRAPPER_KEYS``, searched in that order, up to three levels deep, e.g.
``{"state_dict": ...}`` or ``{"model": ...}``). Name prefixes added by ``DataParallel``/DDP (``module.``)
and ``torch.compile`` (``_orig_mod.``) are removed, and so is a prefix that every name shares (a Lightning
module's attribute, e.g. ``model.``) when the names only fit the architecture without it.

Fitting (``check_fit``) compares the file's tensors with the architecture's before anything is copied:
the classifier's output count against the classes wanted, then missing, unexpected and wrongly shaped
tensors, summarised as counts plus the first few names, then the number types: integer, boolean or complex
tensors where the architecture holds floating-point weights are refused (copying them would register a
model of rounded or truncated weights that scores near chance); other floating types (float16, bfloat16,
float64) are converted to the model's and said in ``FitPlan.converted`` and the card's notes.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from torch import nn

from zeal_core.errors import ModelError
from zeal_core.models.registry import looks_like_safetensors

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pth.tar")
# Largest file read (bytes): the whole file is held in memory once, so that the bytes hashed are the
# bytes parsed. 4 GiB fits every timm ImageNet model up to ViT-Huge in float32.
MAX_CHECKPOINT_BYTES = 4 << 30
# Keys that commonly hold the weights inside a training checkpoint, in the order they are tried.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network",
                "state_dict_ema", "model_ema", "ema")
# Name prefixes that wrappers add: DataParallel/DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# safetensors metadata keys the lab's export writes (JSON text), read back as defaults on import.
METADATA_MODEL_CONFIG = "zeal_model_config"  # ModelConfig.to_dict(): arch, image size, normalisation
METADATA_CLASS_NAMES = "zeal_class_names"  # the model's outputs in order, or null for the dataset's
METADATA_VERSION = "zeal_version"  # the lab version id it was exported from
_WRAPPER_DEPTH = 3  # levels of wrapper dicts searched
_SHOWN = 4  # names shown per list in a mismatch summary


@dataclass(frozen=True)
class Checkpoint:
    """Tensors read from a checkpoint file, with where they came from."""

    state: dict[str, torch.Tensor]  # tensor name -> tensor (CPU), wrappers and prefixes removed
    name: str  # the source file's name (no folder)
    sha256: str  # hex digest of the file's bytes
    size_bytes: int  # file size
    format: str  # "safetensors" or "torch"
    entry: str | None = None  # wrapper keys the weights were under, e.g. "state_dict"; None: the top level
    stripped_prefixes: tuple[str, ...] = ()  # name prefixes removed, e.g. ("module.",)
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors header metadata ({} for torch)

    def describe(self) -> dict[str, Any]:
        """JSON-ready provenance for a model card."""
        return {"file": self.name, "sha256": self.sha256, "bytes": self.size_bytes, "format": self.format,
                "entry": self.entry, "stripped_prefixes": list(self.stripped_prefixes),
                "tensors": len(self.state)}


def checkpoint_format(name: str) -> str:
    """``"safetensors"`` or ``"torch"`` from a file name's suffix.

    Raises:
        ModelError: Another suffix (the message lists the accepted ones).
    """
    lower = name.lower()
    if lower.endswith(SAFETENSORS_SUFFIXES):
        return "safetensors"
    if lower.endswith(TORCH_SUFFIXES):
        return "torch"
    raise ModelError(f"{name}: unknown checkpoint format; use a .safetensors file or a PyTorch state dict "
                     f"({', '.join(TORCH_SUFFIXES)})")


def read_bytes(path: str | Path) -> bytes:
    """A checkpoint file's bytes, after checking it is a readable file of a sensible size.

    Raises:
        ModelError: The path is missing, a folder, empty, too large or unreadable.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ModelError(f"{path} is a folder: give the checkpoint file inside it (e.g. {path}/model.pth)")
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist (or is not a regular file): check the path")
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise ModelError(f"checkpoint {path} is {size / 2**30:.1f} GiB, more than the "
                         f"{MAX_CHECKPOINT_BYTES / 2**30:.0f} GiB this lab reads")
    try:
        return path.read_bytes()
    except OSError as error:
        raise ModelError(f"checkpoint {path} cannot be read: {error}") from error


def read_checkpoint(source: str | Path | bytes, *, filename: str | None = None,
                    entry: str | None = None) -> Checkpoint:
    """Read a checkpoint without running anything in it.

    Args:
        source: A file path, or the file's bytes (an upload).
        filename: The file's name when ``source`` is bytes (its suffix picks the format).
        entry: Take the weights from this key (dotted for nested keys, e.g. ``"state_dict_ema"``) instead
            of searching ``WRAPPER_KEYS``.

    Raises:
        ModelError: Unknown format, a pickle that holds code or other objects, a damaged or truncated
            file, or no state dict inside.
    """
    if isinstance(source, bytes):
        if not filename:
            raise ModelError("an uploaded checkpoint needs its file name (the suffix says its format)")
        data, name = source, Path(filename).name
    else:
        name = Path(source).name
        checkpoint_format(name)  # an unknown suffix fails before the file is read
        data = read_bytes(source)
    kind = checkpoint_format(name)
    if not data:
        raise ModelError(f"checkpoint {name} is empty (0 bytes): it was not saved completely; save it again")
    if kind == "safetensors":
        loaded, metadata = _read_safetensors(data, name), _safetensors_metadata(data)
    else:
        loaded, metadata = _read_torch(data, name), {}
    state, entry_used = _find_state_dict(loaded, name, entry)
    state, stripped = _strip_prefixes(state)
    return Checkpoint(state=state, name=name, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data),
                      format=kind, entry=entry_used, stripped_prefixes=stripped, metadata=metadata)


def _damaged(name: str, error: BaseException) -> ModelError:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    return ModelError(f"checkpoint {name} is damaged or truncated ({type(error).__name__}: {first}): copy or "
                      "save it again")


def _read_safetensors(data: bytes, name: str) -> dict[str, torch.Tensor]:
    if not looks_like_safetensors(data):
        raise ModelError(f"checkpoint {name} is not a safetensors file (it may be a pickle renamed "
                         ".safetensors; pickles are never loaded under that name): rename a torch.save file "
                         "to .pth, or save it with safetensors.torch.save_file")
    try:
        return load_safetensors_bytes(data)
    except (SafetensorError, ValueError, RuntimeError, OSError) as error:
        raise _damaged(name, error) from error


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors header (already checked to parse)."""
    header_length = int.from_bytes(data[:8], "little")
    try:
        metadata = json.loads(data[8:8 + header_length]).get("__metadata__") or {}
    except (ValueError, AttributeError):
        return {}
    return {str(key): str(value) for key, value in metadata.items()} if isinstance(metadata, dict) else {}


def _read_torch(data: bytes, name: str) -> Any:
    # torch.save writes a zip ("PK") or, in the legacy format, a pickle (protocol 2+, first byte 0x80).
    if not data.startswith((b"PK", b"\x80")):
        raise ModelError(f"checkpoint {name} is not a torch.save file (it starts with neither a zip nor a "
                         "pickle header): it is damaged or in another format; copy or save it again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol notes from the weights-only unpickler
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        if "Unsupported" in text or "GLOBAL" in text or "Weights only load failed" in text:
            found = re.findall(r"GLOBAL ([\w.]+)", text)
            what = f" (it needs {found[0]})" if found else ""
            raise ModelError(
                f"checkpoint {name} holds Python objects other than tensors{what}, such as code, a whole "
                "pickled model or training arguments: refused without running any of it (only plain state "
                "dicts are read). Save the weights alone with torch.save(model.state_dict(), path) or "
                "safetensors.torch.save_file") from error
        raise _damaged(name, error) from error
    except Exception as error:  # zip, EOF and storage errors: all mean the bytes are not a whole file
        raise _damaged(name, error) from error


def _is_state_dict(value: Any) -> bool:
    return (isinstance(value, Mapping) and len(value) > 0
            and all(isinstance(key, str) and isinstance(item, torch.Tensor) for key, item in value.items()))


def _find_state_dict(loaded: Any, name: str, entry: str | None) -> tuple[dict[str, torch.Tensor], str | None]:
    """The name -> tensor mapping inside ``loaded`` and the wrapper keys leading to it."""
    if not isinstance(loaded, Mapping):
        raise ModelError(f"checkpoint {name} holds a {type(loaded).__name__}, not a state dict (a mapping of "
                         "names to tensors): save model.state_dict()")
    if entry is not None:
        value: Any = loaded
        for part in entry.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise ModelError(f"checkpoint {name} has no entry {entry!r}; its top-level keys are "
                                 f"{_keys_shown(loaded)}")
            value = value[part]
        if not _is_state_dict(value):
            raise ModelError(f"entry {entry!r} of checkpoint {name} is not a mapping of names to tensors")
        return dict(value), entry
    path: list[str] = []
    value = loaded
    for _ in range(_WRAPPER_DEPTH + 1):
        if _is_state_dict(value):
            return dict(value), ".".join(path) or None
        key = next((key for key in WRAPPER_KEYS if isinstance(value.get(key), Mapping)), None)
        if key is None:
            break
        path.append(key)
        value = value[key]
    raise ModelError(f"checkpoint {name} has no state dict: its top-level keys are {_keys_shown(loaded)} "
                     f"(looked for the weights at the top level and under {', '.join(WRAPPER_KEYS)}); give "
                     "the key that holds them (--key), or save model.state_dict()")


def _keys_shown(mapping: Mapping) -> str:
    keys = [str(key) for key in list(mapping)[:12]]
    return "[" + ", ".join(keys) + (", ..." if len(mapping) > 12 else "") + "]"


def _strip_prefixes(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """Remove ``module.`` prefixes and ``_orig_mod.`` name parts (both may repeat and nest)."""
    stripped: list[str] = []
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in state):
                state = {key[len(prefix):]: tensor for key, tensor in state.items()}
                stripped.append(prefix)
                changed = True
    if any("._orig_mod." in key for key in state):  # a compiled submodule
        state = {key.replace("._orig_mod.", "."): tensor for key, tensor in state.items()}
        stripped.append("._orig_mod.")
    return state, tuple(stripped)


def check_finite(checkpoint: Checkpoint) -> None:
    """Refuse weights holding NaN or infinity (a diverged run, or a damaged file).

    Raises:
        ModelError: Naming how many tensors are affected and the first few.
    """
    bad = [key for key, tensor in checkpoint.state.items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise ModelError(f"checkpoint {checkpoint.name}: {len(bad)} tensor(s) hold NaN or infinite values "
                         f"({_names(bad)}): the training that made it diverged, or the file is damaged")


# ---------------------------------------------------------------------------------------------- fitting


def classifier_names(model: nn.Module) -> tuple[str, ...]:
    """Module names of the model's classifier(s), e.g. ``("fc",)`` for a timm ResNet."""
    names = getattr(model, "pretrained_cfg", {}).get("classifier")
    if isinstance(names, str):
        return (names,)
    if names:
        return tuple(names)
    classifier = model.get_classifier()
    return tuple(name for name, module in model.named_modules() if module is classifier and name)


def _is_head(key: str, heads: tuple[str, ...]) -> bool:
    return any(key.startswith(f"{head}.") for head in heads)


def head_outputs(state: Mapping[str, torch.Tensor], heads: tuple[str, ...]) -> int | None:
    """How many classes the checkpoint's classifier predicts (rows of its weight), or None without one."""
    weight = state.get(f"{heads[0]}.weight") if heads else None
    return int(weight.shape[0]) if weight is not None and weight.ndim >= 1 else None


@dataclass(frozen=True)
class FitPlan:
    """What ``check_fit`` found: the checkpoint fits, and how its head is handled."""

    heads: tuple[str, ...]  # classifier module names of the architecture
    file_classes: int | None  # outputs of the checkpoint's classifier (None: it has none)
    reset_head: bool  # the classifier's tensors are left out and the model's fresh head is kept
    stripped_prefix: str | None = None  # a prefix every name shared that was removed to fit, e.g. "model."
    converted: tuple[str, ...] = ()  # dtype conversions made on loading, e.g. ("float16 -> float32: 62",)


def check_fit(checkpoint: Checkpoint, model: nn.Module, *, arch: str, num_classes: int,
              reset_head: bool | None, class_flag: str = "--reset-head") -> FitPlan:
    """Check that ``checkpoint`` fits ``model`` (a fresh ``arch`` with ``num_classes`` outputs); copy nothing.

    Args:
        checkpoint: The tensors read.
        model: The architecture to fit, with the classifier size wanted.
        arch: Its timm name (for messages).
        num_classes: Outputs wanted (the dataset's classes, or the model's own class list).
        reset_head: True: the checkpoint's classifier is dropped (a new one is made); False: it must fit;
            None: drop it only when it does not fit (fine-tuning from a backbone).
        class_flag: The option that resets the head, named in the class-count message.

    Raises:
        ModelError: A classifier of another size (naming both counts and ``class_flag``), no classifier,
            or tensors that do not match the architecture (counts and first names of each kind).
    """
    heads = classifier_names(model)
    expected = model.state_dict()
    state, prefix = _fit_names(checkpoint.state, expected)
    file_classes = head_outputs(state, heads)
    if reset_head is None:
        reset_head = file_classes != num_classes
    if not reset_head:
        if file_classes is None:
            head = heads[0] if heads else "head"
            raise ModelError(f"checkpoint {checkpoint.name} has no classifier ({head}.weight) for {arch}: "
                             f"add {class_flag} to train a new one on the dataset")
        if file_classes != num_classes:
            raise ModelError(f"checkpoint {checkpoint.name} predicts {file_classes} classes but the dataset "
                             f"has {num_classes}: add {class_flag} to replace the classifier with a new one "
                             "trained on this dataset, or name the model's own classes in output order "
                             "(--classes) when it predicts a subset of them")
    missing = [key for key in expected if key not in state and not key.endswith("num_batches_tracked")
               and not (reset_head and _is_head(key, heads))]
    unexpected = [key for key in state if key not in expected and not (reset_head and _is_head(key, heads))]
    wrong_shape = [f"{key}: file {_shape(state[key])}, model {_shape(expected[key])}" for key in state
                   if key in expected and not (reset_head and _is_head(key, heads))
                   and state[key].shape != expected[key].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of the model's {len(expected)} tensors are missing from the file "
                         f"({_names(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} of the file's {len(state)} are not in the model "
                         f"({_names(unexpected)})")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} have another shape ({_names(wrong_shape)})")
        raise ModelError(f"checkpoint {checkpoint.name} does not fit {arch}: {'; '.join(parts)}. Is --arch "
                         f"right? (the file's first tensors: {_names(list(state))})")
    kept = {key: tensor for key, tensor in state.items() if not (reset_head and _is_head(key, heads))}
    return FitPlan(heads=heads, file_classes=file_classes, reset_head=bool(reset_head),
                   stripped_prefix=prefix, converted=check_dtypes(checkpoint.name, kept, expected))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_dtypes(name: str, state: Mapping[str, torch.Tensor],
                 expected: Mapping[str, torch.Tensor]) -> tuple[str, ...]:
    """Refuse number types that would corrupt the weights; list the harmless conversions.

    Args:
        name: The checkpoint's name, for messages.
        state: The file's tensors (names already fitted to the architecture).
        expected: The architecture's state dict.

    Returns:
        ``"<from> -> <to>: <count>"`` per floating-point conversion made on loading (float16 -> float32).

    Raises:
        ModelError: Complex tensors anywhere, or integer/boolean tensors where the model holds weights.
    """
    refused: dict[str, list[str]] = {}
    conversions: dict[str, int] = {}
    for key, tensor in state.items():
        target = expected.get(key)
        if target is None or tensor.dtype == target.dtype:
            continue
        if tensor.is_complex() or (target.is_floating_point() and not tensor.is_floating_point()):
            refused.setdefault(_dtype_name(tensor.dtype), []).append(key)
        elif target.is_floating_point():
            change = f"{_dtype_name(tensor.dtype)} -> {_dtype_name(target.dtype)}"
            conversions[change] = conversions.get(change, 0) + 1
    if refused:
        kinds = "; ".join(f"{len(keys)} {dtype} ({_names(keys)})" for dtype, keys in refused.items())
        raise ModelError(f"checkpoint {name} holds weights as integer, boolean or complex numbers ({kinds}) "
                         "where the model needs floating point: they were rounded, cast or saved wrongly and "
                         "would score near chance; save the float weights (model.float().state_dict())")
    return tuple(f"{change}: {count} tensors" for change, count in conversions.items())


def _fit_names(state: dict[str, torch.Tensor],
               expected: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str | None]:
    """``state``, or ``state`` without a prefix all its names share when only that fits ``expected``."""
    if any(key in expected for key in state):
        return state, None
    first = {key.split(".", 1)[0] for key in state}
    if len(first) == 1 and all("." in key for key in state):
        prefix = f"{first.pop()}."
        inner = {key[len(prefix):]: tensor for key, tensor in state.items()}
        if any(key in expected for key in inner):
            return inner, prefix
    return state, None


def load_fitted(model: nn.Module, checkpoint: Checkpoint, plan: FitPlan) -> nn.Module:
    """Copy the checkpoint's tensors into ``model`` as ``plan`` says (after ``check_fit``); returns it."""
    state = checkpoint.state
    if plan.stripped_prefix:
        state = {key[len(plan.stripped_prefix):]: tensor for key, tensor in state.items()}
    if plan.reset_head:
        state = {key: tensor for key, tensor in state.items() if not _is_head(key, plan.heads)}
    model.load_state_dict(state, strict=False)  # every difference was checked (and refused) above
    return model


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(str(size) for size in tensor.shape) or "scalar"


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f", ... {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")
