"""The fitted reference kept on disk, next to its model version: a new process loads it instead of refitting.

A model version ``V`` in the registry folder gets a folder ``V.fitted/`` beside ``V.safetensors`` (or, when
the registry folder cannot be written, ``state_dir()/fitted/<registry>/V``). It holds three kinds of
bundle (``zeal_core.reference.state``: one ``.npz`` each, arrays + JSON, never a pickle), each keyed by what
it was fitted on, so a changed model, dataset or setting simply names another file:

- ``split``: the whole clean validation split as the model sees it (features, logits, softmax; the two
  halves are cut from it), the dataset's class names, working size and fingerprint. Per model and dataset.
- ``warm``: the slow warm-up of the label-free parts: the diagnoser's signatures and calibration and the
  bank-fitted estimators (``shift-calibrated``), plus the positions of the reference images the shift bank
  was made of (the bank itself is a ``bank`` bundle in the same folder). Per model, dataset, bank size and
  seed: it does not depend on the reference size, so it is paid once per model for every caller.
- ``profile``: what depends on the check settings: the reference draw, the per-image scores' reference
  distances, the PCA map and every bank-free estimator (temperature, thresholds, bootstrap replicates).

Detectors are refitted from the stored reference embeddings on load (their fit only copies the reference
and, for the kernel tests, takes one median of distances: milliseconds, deterministic), so they are not
stored. A UMAP map is not stored either (its fitted model is not arrays + JSON); it refits in about a second
once warm, and checks fall back to the stored PCA map meanwhile.

Writers take a lock file (``fcntl.flock``) around "look, fit, write", and every write is atomic: two
processes warming the same model at once fit it once and leave one valid copy. A bundle that is damaged,
edited, foreign (another key) or from an older layout is refused with a logged reason and refitted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zeal_core.embed import Embeddings
from zeal_core.jsonable import to_jsonable
from zeal_core.paths import state_dir
from zeal_core.reference.state import BundleRefused, StateError, decode, encode, read_bundle, write_bundle

log = logging.getLogger(__name__)

STORE_FORMAT = 1  # bumped when what a bundle means changes (keys include it, so old files are refitted)
FOLDER_SUFFIX = ".fitted"  # <version>.fitted/ next to <version>.safetensors
KINDS = ("split", "warm", "profile")
_EMBEDDING_FIELDS = ("features", "probs", "preds", "labels", "indices", "logits")


def _key_hash(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(to_jsonable(dict(key)), sort_keys=True).encode()).hexdigest()[:20]


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


class ReferenceStore:
    """The fitted bundles of one model version (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        """Args:
        folder: Where this version's bundles live (created on the first write).
        """
        self.folder = Path(folder)
        self._refused: set[tuple[str, int, int]] = set()  # (path, mtime, size) already reported

    @classmethod
    def for_version(cls, registry_root: Path, version: str) -> ReferenceStore:
        """The store beside ``version``'s weights, or under the state folder when that is read-only."""
        beside = Path(registry_root) / f"{version}{FOLDER_SUFFIX}"
        if beside.is_dir() or _writable(Path(registry_root)):
            return cls(beside)
        root_hash = hashlib.sha256(str(Path(registry_root).resolve()).encode()).hexdigest()[:8]
        return cls(state_dir() / "fitted" / f"{root_hash}-{version}")

    def path(self, kind: str, key: Mapping[str, Any]) -> Path:
        """The bundle file of ``kind`` fitted on ``key``."""
        return self.folder / f"{kind}-{_key_hash(key)}.npz"

    def read(self, kind: str, key: Mapping[str, Any]) -> tuple[Any, dict[str, np.ndarray]] | None:
        """The stored (tree, arrays), or None when there is none or it is refused (the reason is logged)."""
        path = self.path(kind, key)
        if not path.exists():
            return None
        try:
            return read_bundle(path, kind, to_jsonable(dict(key)))
        except BundleRefused as reason:
            self.refused(path, str(reason))
            return None

    def refused(self, path: Path, reason: str) -> None:
        """Log that ``path`` cannot be used (once per state of the file)."""
        try:
            stat = path.stat()
            state = (str(path), stat.st_mtime_ns, stat.st_size)
        except OSError:
            state = (str(path), 0, 0)
        if state not in self._refused:
            self._refused.add(state)
            log.warning("refused the fitted reference file %s: %s; refitting it", path, reason)

    def write(self, kind: str, key: Mapping[str, Any], tree: Any, arrays: Mapping[str, np.ndarray]) -> None:
        """Store a bundle (atomically). A store that cannot be written is logged, never an error: keeping
        the fit is a speed-up, the check does not depend on it."""
        path = self.path(kind, key)
        try:
            write_bundle(path, kind, to_jsonable(dict(key)), tree, arrays)
        except OSError as error:
            log.warning("could not keep the fitted reference file %s (%s): the next process refits it",
                        path, error)

    @contextlib.contextmanager
    def lock(self, kind: str, key: Mapping[str, Any]) -> Iterator[None]:
        """Hold an exclusive lock for fitting this bundle (other processes wait, then read the result)."""
        path = self.path(kind, key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle = open(self.folder / f".{path.stem}.lock", "a+")  # noqa: SIM115 - closed below
        except OSError:  # a read-only folder: fit without a lock (and do not keep the result)
            yield
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield
        finally:
            handle.close()  # releases the lock

    def files(self) -> list[Path]:
        """The bundles stored, sorted by name."""
        return sorted(self.folder.glob("*.npz")) if self.folder.is_dir() else []


# ------------------------------------------------------------------------------------ the split bundle


@dataclass(frozen=True)
class SplitState:
    """The clean split as the model sees it, and what the dataset's name stood for when it was embedded."""

    clean: Embeddings  # the whole split (labels in the model's output space, -1 for unseen classes)
    split_labels: np.ndarray  # int64 dataset label per split image
    class_names: tuple[str, ...]  # the dataset's classes
    image_size: int  # the dataset's working size (px): real images are decoded to it
    fingerprint: str  # the dataset's content fingerprint


def encode_split(state: SplitState) -> tuple[Any, dict[str, np.ndarray]]:
    """A ``SplitState`` as a bundle tree and its arrays."""
    arrays = {name: np.asarray(getattr(state.clean, name)) for name in _EMBEDDING_FIELDS
              if getattr(state.clean, name) is not None}
    arrays["split_labels"] = np.asarray(state.split_labels, dtype=np.int64)
    tree = {"class_names": list(state.class_names), "image_size": int(state.image_size),
            "fingerprint": state.fingerprint, "fields": sorted(arrays)}
    return tree, arrays


def decode_split(tree: Any, arrays: dict[str, np.ndarray]) -> SplitState:
    """The ``SplitState`` of a bundle.

    Raises:
        StateError: Arrays missing or of the wrong shape.
    """
    try:
        values = {name: arrays.get(name) for name in _EMBEDDING_FIELDS}
        clean = Embeddings(**values)
        return SplitState(clean=clean, split_labels=arrays["split_labels"],
                          class_names=tuple(str(name) for name in tree["class_names"]),
                          image_size=int(tree["image_size"]), fingerprint=str(tree["fingerprint"]))
    except Exception as error:  # a bundle whose digest matched but whose content does not fit
        raise StateError(f"the split bundle does not hold a valid split: {error}") from None


# ---------------------------------------------------------------------------------- object bundles


def encode_objects(values: Mapping[str, Any]) -> tuple[Any, dict[str, np.ndarray]]:
    """Fitted objects by name (estimators, a diagnoser, projectors, arrays) as one bundle tree.

    Raises:
        StateError: One of them holds something that cannot be stored (its attribute path is named).
    """
    return encode(dict(values), "fitted")


def decode_objects(tree: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The objects of ``encode_objects``.

    Raises:
        StateError: The tree is malformed or names a class outside zeal_core.
    """
    values = decode(tree, arrays)
    if not isinstance(values, dict):
        raise StateError("a fitted bundle must hold a dictionary of objects")
    return values


def load_or_fit(store: ReferenceStore | None, kind: str, key: Mapping[str, Any], fit: Any,
                to_bundle: Any, from_bundle: Any) -> tuple[Any, bool]:
    """The stored value of ``kind``/``key``, or ``fit()`` (stored for the next process).

    Under the store's lock, so a second process fitting the same bundle waits and then reads it.

    Args:
        store: The store; None fits every time.
        kind: Bundle kind.
        key: What it is fitted on.
        fit: () -> value.
        to_bundle: value -> (tree, arrays).
        from_bundle: (tree, arrays) -> value (raises StateError when the content is unusable).

    Returns:
        (value, True when it was loaded rather than fitted).
    """
    if store is None:
        return fit(), False
    loaded = _load(store, kind, key, from_bundle)
    if loaded is not None:
        return loaded, True
    with store.lock(kind, key):
        loaded = _load(store, kind, key, from_bundle)  # another process may have fitted it meanwhile
        if loaded is not None:
            return loaded, True
        value = fit()
        try:
            tree, arrays = to_bundle(value)
        except StateError as error:  # an attribute that cannot be stored: a bug, never a failed check
            log.error("cannot keep the fitted %s bundle (%s): every process will refit it", kind, error)
            return value, False
        store.write(kind, key, tree, arrays)
    # The fitting process uses what later processes will load (the same arrays, the same memory layout),
    # so its results are bit-identical to theirs.
    return from_bundle(json.loads(json.dumps(tree)), arrays), False


def _load(store: ReferenceStore, kind: str, key: Mapping[str, Any], from_bundle: Any) -> Any:
    stored = store.read(kind, key)
    if stored is None:
        return None
    try:
        return from_bundle(*stored)
    except StateError as error:
        store.refused(store.path(kind, key), str(error))
        return None


# -------------------------------------------------------------------------------- dataset identity


def dataset_fingerprint(name: str) -> str:
    """The content fingerprint of dataset ``name`` as it is on disk now, read cheaply where possible.

    Imagenette and image folders keep it in their decoded cache's JSON (read without loading a gigabyte of
    pixels); the embedded digits are rebuilt deterministically by code, so their fingerprint is computed
    once and kept under the state folder, keyed by that code and scikit-learn's version. Anything else is
    loaded.

    Raises:
        DataError: The dataset is unknown or not prepared.
    """
    from zeal_core.data import FOLDER_PREFIX

    if name == "digits":
        return _digits_fingerprint()
    if name == "imagenette":
        from zeal_core.data.imagenette import cache_path
        from zeal_core.data.settings import imagenette_settings

        stored = _cached_fingerprint(cache_path(imagenette_settings(None)))
        if stored:
            return stored
    elif name.startswith(FOLDER_PREFIX):
        stored = _folder_fingerprint(name)
        if stored:
            return stored
    from zeal_core.data import shared_dataset

    return shared_dataset(name).fingerprint


def _cached_fingerprint(cache: Path) -> str | None:
    try:
        meta = json.loads(cache.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    fingerprint = meta.get("fingerprint") if isinstance(meta, dict) else None
    ready = cache.with_suffix(".safetensors").is_file()
    return str(fingerprint) if fingerprint and ready else None


def _folder_fingerprint(name: str) -> str | None:
    from zeal_core.data.folder import _listing_key, folder_cache_path, folder_path, scan_folder
    from zeal_core.data.settings import folder_settings

    folder = folder_path(name)
    settings = folder_settings(None)
    images, _, _ = scan_folder(folder)
    key = _listing_key(folder, [path for _, _, path in images], settings)
    return _cached_fingerprint(folder_cache_path(folder, settings, key))


def _digits_fingerprint() -> str:
    from importlib.metadata import version

    import zeal_core.data.dataset as dataset_module
    import zeal_core.data.digits as digits_module

    code = hashlib.sha256()
    for module in (digits_module, dataset_module):
        code.update(Path(module.__file__).read_bytes())
    code.update(version("scikit-learn").encode())
    key = code.hexdigest()
    memo = state_dir() / "fitted" / "digits-fingerprint.json"
    try:
        stored = json.loads(memo.read_text())
        if stored.get("code") == key:
            return str(stored["fingerprint"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    from zeal_core.data import shared_dataset

    fingerprint = shared_dataset("digits").fingerprint
    try:
        from zeal_core.fileio import atomic_write_text

        atomic_write_text(memo, json.dumps({"code": key, "fingerprint": fingerprint}))
    except OSError:
        pass
    return fingerprint
