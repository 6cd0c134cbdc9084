"""Fitted objects as arrays + JSON, never a pickle: how a fitted reference keeps its estimators and diagnoser.

``encode(obj)`` walks an object's attributes and returns a JSON-ready tree plus the numpy arrays it points
to; ``decode(tree, arrays)`` builds an equal object back without running any stored code. What can be
stored, recursively:

- ``None``, ``bool``, ``int``, ``float`` (NaN and infinities too), ``str``;
- numpy arrays of numbers, booleans or text and numpy scalars; torch tensors (kept as CPU arrays);
- ``list``, ``tuple``, ``set``, ``frozenset`` and ``dict`` (any stored keys) of those;
- instances of classes defined in ``zeal_core`` (dataclasses or not), stored as their attribute dictionary,
  when every class in their MRO is a ``zeal_core`` class or ``object``/``abc.ABC``/``typing.Generic``.

Anything else (an sklearn or torch module, a callable, a lock, a random generator, a class from another
package) raises ``StateError`` naming the attribute path, so a new fitted attribute that would not survive
a restart fails a test instead of a user's cron job. On the way back only ``zeal_core.`` classes are looked
up by name (an allow-list by module prefix) and created with ``object.__new__``: no constructor, no
``__setstate__``, nothing from the file is ever executed.

``write_bundle`` / ``read_bundle`` put one such tree and its arrays into a single ``.npz`` (the JSON inside
as a byte array, read with ``numpy.load(allow_pickle=False)``), written atomically, with a sha256 over
everything so a truncated, edited or foreign file is refused with the reason.
"""

from __future__ import annotations

import abc
import hashlib
import importlib
import io
import json
import math
import sys
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from zeal_core.fileio import atomic_write_bytes

ALLOWED_PREFIX = "zeal_core."  # classes that may be rebuilt from a file are defined under this package
BUNDLE_FORMAT = 1  # bumped when the layout of a bundle changes (older files are then refitted)
META_KEY = "__meta__"  # the npz entry holding the JSON (uint8 bytes)
_PLAIN_BASES = (object, abc.ABC, typing.Generic)
_ARRAY_KINDS = "biufcU"  # numpy dtype kinds that hold no Python objects


class StateError(ValueError):
    """An object holds something that cannot be stored as arrays + JSON, or a stored tree is not valid."""


class BundleRefused(Exception):
    """A stored bundle cannot be used (missing, damaged, tampered, foreign or stale): the reason."""


# ------------------------------------------------------------------------------------------------ encode


class _Encoder:
    """One encoding pass: collects arrays (each stored once, however often it is referenced)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._nodes: dict[int, dict[str, Any]] = {}
        self._keep: list[Any] = []  # keeps encoded arrays alive so their ids stay unique

    def array(self, value: np.ndarray, path: str) -> dict[str, Any]:
        if value.dtype.kind not in _ARRAY_KINDS:
            raise StateError(f"{path}: a numpy array of dtype {value.dtype} cannot be stored without pickle")
        node = self._nodes.get(id(value))
        if node is None:
            name = f"a{len(self.arrays)}"
            stored, axes = _layout(value)
            self.arrays[name] = stored
            node = {"$array": name} if axes is None else {"$array": name, "axes": axes}
            self._nodes[id(value)] = node
            self._keep.append(value)
        return node

    def encode(self, value: Any, path: str) -> Any:
        kind = type(value)
        if value is None or kind in (bool, int, str):
            return value
        if kind is float:
            return value if math.isfinite(value) else {"$float": repr(value)}
        if kind is np.ndarray:
            return self.array(value, path)
        if isinstance(value, np.generic) and value.dtype.kind in _ARRAY_KINDS:
            item = value.item()
            if isinstance(item, float) and not math.isfinite(item):
                item = {"$float": repr(item)}
            return {"$scalar": value.dtype.str, "value": item}
        torch = sys.modules.get("torch")
        if torch is not None and kind is torch.Tensor:
            return {"$tensor": self.array(np.ascontiguousarray(value.detach().cpu().numpy()), path)["$array"]}
        if kind in (list, tuple, set, frozenset):
            items = list(value)
            if kind in (set, frozenset):
                items = sorted(items, key=repr)  # a stable order, so equal sets give equal files
            encoded = [self.encode(item, f"{path}[{index}]") for index, item in enumerate(items)]
            return {f"${kind.__name__}": encoded}
        if kind is dict:
            return {"$dict": [[self.encode(key, f"{path}.<key>"), self.encode(item, f"{path}[{key!r}]")]
                              for key, item in value.items()]}
        return self.instance(value, path)

    def instance(self, value: Any, path: str) -> dict[str, Any]:
        cls = type(value)
        reason = _unstorable_class(cls)
        if reason:
            raise StateError(f"{path}: {cls.__module__}.{cls.__qualname__} {reason}")
        attributes = getattr(value, "__dict__", None)
        if not isinstance(attributes, dict):
            raise StateError(f"{path}: {cls.__qualname__} has no attribute dictionary (__slots__?)")
        state = {name: self.encode(item, f"{path}.{name}") for name, item in attributes.items()}
        return {"$object": f"{cls.__module__}:{cls.__qualname__}", "state": state}


def _layout(value: np.ndarray) -> tuple[np.ndarray, list[int] | None]:
    """The array to store and the axes that give ``value``'s memory layout back on loading.

    BLAS kernels round differently on differently laid-out inputs, so a loaded copy must keep the layout
    of the fitted array for results to stay bit-identical: a C- or Fortran-ordered array is stored as it
    is (``np.save`` writes either); a transposed view is stored C-ordered along its axes sorted by stride
    and transposed back on loading; anything else is copied C-ordered.
    """
    if value.flags.c_contiguous or value.flags.f_contiguous or value.ndim < 2:
        return value, None
    order = [int(axis) for axis in np.argsort([-stride for stride in value.strides], kind="stable")]
    permuted = value.transpose(order)
    if not permuted.flags.c_contiguous:
        return np.ascontiguousarray(value), None
    return permuted, [int(axis) for axis in np.argsort(order)]


def _unstorable_class(cls: type) -> str:
    """Why instances of ``cls`` cannot be stored ("" when they can)."""
    if not cls.__module__.startswith(ALLOWED_PREFIX) or "<locals>" in cls.__qualname__:
        return "is not a zeal_core class (only numbers, text, arrays and zeal_core objects are stored)"
    for base in cls.__mro__:
        if base not in _PLAIN_BASES and not base.__module__.startswith(ALLOWED_PREFIX):
            return f"derives from {base.__module__}.{base.__qualname__}, which cannot be stored"
    return ""


def encode(value: Any, name: str = "value") -> tuple[Any, dict[str, np.ndarray]]:
    """``value`` as (JSON-ready tree, arrays by name); see the module docstring for what is storable.

    Args:
        value: The object (e.g. a fitted estimator).
        name: Its name in error messages (e.g. ``estimator['pm-atc']``).

    Raises:
        StateError: Something inside cannot be stored; the message names its attribute path.
    """
    encoder = _Encoder()
    tree = encoder.encode(value, name)
    return tree, encoder.arrays


# ------------------------------------------------------------------------------------------------ decode


def _class(name: Any) -> type:
    if not isinstance(name, str) or ":" not in name:
        raise StateError(f"bad class name {name!r}")
    module_name, qualname = name.split(":", 1)
    if not module_name.startswith(ALLOWED_PREFIX):
        raise StateError(f"class {name!r} is not a zeal_core class: refused")
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise StateError(f"class {name!r} no longer exists ({error})") from None
    if not isinstance(found, type) or _unstorable_class(found):
        raise StateError(f"{name!r} is not a storable zeal_core class")
    return found


def decode(tree: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """The object ``encode`` described (arrays are looked up by name in ``arrays``).

    Raises:
        StateError: The tree names a class outside zeal_core, a missing array, or is malformed.
    """
    if tree is None or type(tree) in (bool, int, float, str):
        return tree
    if type(tree) is not dict or len(tree) not in (1, 2):
        raise StateError(f"malformed stored value {str(tree)[:80]!r}")
    if "$float" in tree:
        text = tree["$float"]
        if text not in ("nan", "inf", "-inf"):
            raise StateError(f"bad stored float {text!r}")
        return float(text)
    if "$array" in tree or "$tensor" in tree:
        name = tree.get("$array", tree.get("$tensor"))
        if name not in arrays:
            raise StateError(f"stored array {name!r} is missing")
        if "$array" in tree:
            axes = tree.get("axes")
            if axes is None:
                return arrays[name]
            if sorted(axes) != list(range(arrays[name].ndim)):
                raise StateError(f"bad axes {axes!r} for stored array {name!r}")
            return arrays[name].transpose(axes)
        import torch

        return torch.from_numpy(np.array(arrays[name]))
    if "$scalar" in tree:
        value = decode(tree["value"], arrays)
        return np.dtype(tree["$scalar"]).type(value)
    for kind in (list, tuple, set, frozenset):
        key = f"${kind.__name__}"
        if key in tree:
            return kind(decode(item, arrays) for item in tree[key])
    if "$dict" in tree:
        return {_hashable(decode(key, arrays)): decode(item, arrays) for key, item in tree["$dict"]}
    if "$object" in tree:
        cls = _class(tree["$object"])
        state = tree.get("state")
        if type(state) is not dict:
            raise StateError(f"stored {cls.__qualname__} has no state")
        instance = object.__new__(cls)
        for name, item in state.items():
            object.__setattr__(instance, name, decode(item, arrays))  # frozen dataclasses too
        return instance
    raise StateError(f"unknown stored kind {sorted(tree)}")


def _hashable(key: Any) -> Any:
    try:
        hash(key)
    except TypeError:
        raise StateError(f"a stored dictionary key is not hashable: {key!r}") from None
    return key


# ----------------------------------------------------------------------------------------------- bundles


def _digest(meta: dict[str, Any], arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over the metadata (without its digest) and every array's name, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "digest"},
                                       sort_keys=True).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def write_bundle(path: Path, kind: str, key: Mapping[str, Any], tree: Any,
                 arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``tree`` and its ``arrays`` to ``path`` (one ``.npz``, atomically: readers never see half).

    Args:
        path: The target file.
        kind: What the bundle holds (checked on reading, e.g. "profile").
        key: JSON-ready identity of what it was fitted on (checked on reading: weights, dataset, settings).
        tree: The JSON-ready tree (from ``encode`` or built by hand).
        arrays: The arrays the tree names.
    """
    meta = {"format": BUNDLE_FORMAT, "kind": kind, "key": dict(key), "tree": tree}
    meta["digest"] = _digest(meta, arrays)
    entries = dict(arrays)
    entries[META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **entries)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_bundle(path: Path, kind: str, key: Mapping[str, Any]) -> tuple[Any, dict[str, np.ndarray]]:
    """The tree and arrays stored at ``path``, after checking they are whole, untouched and this key's.

    Raises:
        BundleRefused: No file, not a readable npz, wrong format or kind, another key (a changed model,
            dataset or setting), or content that does not match its digest (damaged or edited).
    """
    if not path.is_file():
        raise BundleRefused("no such file")
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
    except Exception as error:  # zip, npy or JSON errors of a damaged file all mean the same here
        raise BundleRefused(f"unreadable ({type(error).__name__}: {error})") from None
    if type(meta) is not dict or meta.get("format") != BUNDLE_FORMAT or meta.get("kind") != kind:
        raise BundleRefused(f"not a {kind!r} bundle of format {BUNDLE_FORMAT}")
    if meta.get("digest") != _digest(meta, arrays):
        raise BundleRefused("its content does not match its digest (damaged or edited)")
    if meta.get("key") != json.loads(json.dumps(dict(key))):
        raise BundleRefused("fitted for another model, dataset or settings")
    return meta.get("tree"), arrays
