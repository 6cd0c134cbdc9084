"""Class-mix drift kinds: which images a sample holds changes, not their pixels.

A class-mix kind turns a severity in [0, 5] (0 = the pool's own class mix) and, for some modes, a list of
named classes into **target class shares** for the sample; ``draw_class_mix`` then draws the sample from the
pool (the held-out half of a split) to follow them. Kinds register with ``@register_class_mix`` (like the
pixel kinds' ``register_corruption``); the registered ones are ``label_shift`` (zeal_core/corruptions/
label_shift.py) and ``unseen_classes`` (zeal_core/corruptions/unseen.py).

Text form of one step, inside a ``DriftSpec``::

    kind:severity                       e.g. label_shift:3 (a seeded random class prior)
    kind[mode=class/class/...]:severity e.g. label_shift[boost=0/3]:4, label_shift[drop=tench]:5

Classes are referred to by exact class name (a space written as ``_``: ``English_springer``) or by class
index (``0``); a name wins over an index when both could match. They are resolved against the dataset's
class names only when a sample is drawn. The list uses ``/`` between classes and never ``,`` ``*`` ``+``
``@`` ``:`` ``=`` ``[`` ``]`` or ``..`` (the monitor's schedule syntax), so ``label_shift[boost=0/3]:1..5*10``
still ramps the severity.

How a sample follows the target shares: the ``n`` images are split by the shares (largest-remainder
rounding, so the sample's shares are the targets to within 1/n); a class the pool cannot fill gives all its
images and its remaining share is spread over the other classes in proportion to their targets. Within a
class the images are a seeded uniform draw without replacement. Only classes the model knows (its
``ModelCard.class_names``) are drawn, except by a kind that is about unseen classes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from zeal_core.corruptions.registry import check_severity
from zeal_core.errors import ConfigError
from zeal_core.plugins import Registry

log = logging.getLogger(__name__)

CLASS_SEPARATOR = "/"  # between class references in a step's list
FORBIDDEN_IN_CLASS = frozenset(",*+@:=[]/")  # the spec's and the monitor's separators
_PRIOR_STREAM = 0x5EED_C1A5  # the random prior draws from (stream, seed): independent of the image draw


@dataclass(frozen=True)
class MixContext:
    """What a class-mix kind sees when it computes its target shares (``K`` = number of dataset classes)."""

    severity: float  # in (0, 5]
    mode: str | None  # the step's mode, or None for the kind's default
    chosen: np.ndarray  # int64 dataset class ids named in the step (resolved), empty when none
    pool_shares: np.ndarray  # K floats summing to 1: each class's share of the whole pool
    known: np.ndarray  # K bools: the classes the model predicts
    class_names: tuple[str, ...]  # the dataset's class names (for messages)
    rng: np.random.Generator  # seeded from the draw's seed, for kinds with a random prior


TargetFn = Callable[[MixContext], np.ndarray]  # -> K target shares (non-negative, summing to 1)


@dataclass(frozen=True)
class ClassMixInfo:
    """What the registry knows about one class-mix kind."""

    name: str  # registry key, e.g. "label_shift"
    description: str  # one line for menus and tooltips
    default: str  # what the kind does with no mode (no classes named)
    modes: tuple[tuple[str, str], ...]  # (mode, what severity means in it); each mode takes a class list
    unseen: bool  # True when the sample holds classes the model was not trained on


@dataclass(frozen=True)
class _Entry:
    info: ClassMixInfo  # metadata shown to users
    target: TargetFn  # the target class shares


_REGISTRY: Registry[_Entry] = Registry("class-mix kind")


def register_class_mix(description: str, default: str, modes: Sequence[tuple[str, str]] = (),
                       unseen: bool = False) -> Callable[[TargetFn], TargetFn]:
    """Decorator: add a class-mix kind under its function name.

    Args:
        description: One line for menus.
        default: What the kind does when no mode and no classes are given.
        modes: ``(mode, meaning)`` pairs; a step ``kind[mode=a/b]:s`` must use one of these modes.
        unseen: The kind draws classes the model does not know (the sampler keeps them in).
    """

    def decorator(function: TargetFn) -> TargetFn:
        name = function.__name__
        _REGISTRY.add(name, _Entry(ClassMixInfo(name, description, default, tuple(modes), unseen), function))
        return function

    return decorator


def list_class_mix_kinds() -> list[str]:
    """Registered class-mix kinds, in registration order."""
    return _REGISTRY.names()


def class_mix_info(name: str) -> ClassMixInfo:
    """Metadata of one class-mix kind.

    Raises:
        ConfigError: Not a registered class-mix kind (the message lists them).
    """
    return _REGISTRY.get(name).info


def is_class_mix_step(name: str) -> bool:
    """True when a step name is a class-mix kind, with or without a ``[mode=classes]`` list."""
    return isinstance(name, str) and name.partition("[")[0].strip() in _REGISTRY


def _check_class_reference(reference: str, step: str) -> str:
    text = "_".join(str(reference).split())  # inner spaces become "_", ends trimmed
    if not text:
        raise ConfigError(f"class-mix step {step!r}: an empty class in the list; write e.g. "
                          f"'label_shift[boost=0{CLASS_SEPARATOR}3]:4'")
    bad = sorted(set(text) & FORBIDDEN_IN_CLASS) + ([".."] if ".." in text else [])
    if bad or not text.isprintable():
        raise ConfigError(f"class-mix step {step!r}: class {text!r} holds {' '.join(bad) or 'a control'} "
                          "character(s), which the spec syntax reserves: refer to that class by its index")
    return text


@dataclass(frozen=True)
class ClassMix:
    """One class-mix step of a ``DriftSpec``: kind, severity and (for some modes) the named classes."""

    kind: str  # a registered class-mix kind (``list_class_mix_kinds()``)
    severity: float  # in (0, 5]; 0 is no class-mix step at all (``DriftSpec`` drops it)
    mode: str | None = None  # one of the kind's modes, or None for its default
    classes: tuple[str, ...] = ()  # class references: exact names (spaces as "_") or indices, as text

    def __post_init__(self) -> None:
        info = class_mix_info(self.kind)
        level = round(check_severity(self.severity, self.kind), 4)
        if isinstance(self.classes, str) or not isinstance(self.classes, (tuple, list)):
            raise ConfigError(f"class-mix step {self.kind}: classes must be a tuple of class names or "
                              f"indices, got {self.classes!r}")
        modes = [mode for mode, _ in info.modes]
        if self.mode is None and self.classes:
            raise ConfigError(f"class-mix step {self.kind}: classes need a mode; write "
                              f"{self.kind}[{'|'.join(modes) or 'mode'}=a{CLASS_SEPARATOR}b]:severity")
        if self.mode is not None:
            if self.mode not in modes:
                choices = ", ".join(modes) if modes else "none (write it without [...])"
                raise ConfigError(f"class-mix step {self.kind}: unknown mode {self.mode!r}: choose one of "
                                  f"{choices}")
            if not self.classes:
                raise ConfigError(f"class-mix step {self.kind}[{self.mode}=...]: name at least one class, "
                                  f"e.g. {self.kind}[{self.mode}=0{CLASS_SEPARATOR}3]:3")
        classes = tuple(_check_class_reference(reference, self.kind) for reference in self.classes)
        if len(set(classes)) != len(classes):
            raise ConfigError(f"class-mix step {self.kind}: class list {list(classes)} repeats a class")
        object.__setattr__(self, "severity", level)
        object.__setattr__(self, "classes", classes)

    @classmethod
    def parse(cls, name: str, severity: float) -> ClassMix:
        """A step from its name part (``label_shift`` or ``label_shift[boost=0/3]``) and its severity.

        Raises:
            ConfigError: Unknown kind or mode, a malformed list, or a bad severity.
        """
        head, bracket, rest = str(name).strip().partition("[")
        kind = head.strip()
        if not bracket:
            return cls(kind, severity)
        if not rest.endswith("]") or "[" in rest or "]" in rest[:-1]:
            raise ConfigError(f"class-mix step {name!r}: write kind[mode=class{CLASS_SEPARATOR}class]:"
                              "severity, e.g. label_shift[boost=0/3]:4")
        mode, equals, listed = rest[:-1].partition("=")
        if not equals or not mode.strip():
            raise ConfigError(f"class-mix step {name!r}: the list needs a mode, e.g. {kind}[boost=0/3]")
        return cls(kind, severity, mode.strip(), tuple(listed.split(CLASS_SEPARATOR)))

    @property
    def step_name(self) -> str:
        """The name part of the step's text: ``label_shift`` or ``label_shift[boost=0/3]``."""
        if self.mode is None:
            return self.kind
        return f"{self.kind}[{self.mode}={CLASS_SEPARATOR.join(self.classes)}]"

    @property
    def info(self) -> ClassMixInfo:
        """The kind's registry entry."""
        return class_mix_info(self.kind)


# ------------------------------------------------------------------------------------------- class lists


def _class_id(reference: str, names: Sequence[str]) -> int:
    """The dataset class id a reference names: an exact name, the name with spaces as "_", or an index.

    Raises:
        ConfigError: No class matches (the message lists the classes with their indices).
    """
    text = str(reference).strip()
    if text in names:
        return list(names).index(text)
    spelled = ["_".join(str(name).split()) for name in names]
    if "_".join(text.split()) in spelled:
        return spelled.index("_".join(text.split()))
    if text.isdigit() and int(text) < len(names):
        return int(text)
    listing = ", ".join(f"{index}={name}" for index, name in enumerate(spelled))
    raise ConfigError(f"unknown class {text!r}: use a class name or index of this dataset: {listing}")


def resolve_classes(references: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    """Sorted distinct dataset class ids of class references (exact names, spaces as "_", or indices).

    Raises:
        ConfigError: A reference matches no class (the message lists the classes with their indices).
    """
    names = [str(name) for name in class_names]
    return np.unique(np.asarray([_class_id(reference, names) for reference in references], dtype=np.int64))


def resolve_class_list(references: Sequence[str], class_names: Sequence[str]) -> tuple[str, ...]:
    """The dataset's class names that references point to, in the order given (e.g. for ``--classes``).

    Raises:
        ConfigError: A reference matches no class, or two references name the same class.
    """
    names = [str(name) for name in class_names]
    chosen = tuple(names[_class_id(reference, names)] for reference in references if str(reference).strip())
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"class list {list(references)} names a class twice: {list(chosen)}")
    return chosen


def known_class_mask(class_names: Sequence[str], known_classes: Sequence[str] | None) -> np.ndarray:
    """Which dataset classes the model predicts (all when ``known_classes`` is None).

    Raises:
        ConfigError: The model knows none of the dataset's classes.
    """
    if known_classes is None:
        return np.ones(len(class_names), dtype=bool)
    known = {str(name) for name in known_classes}
    mask = np.array([str(name) in known for name in class_names], dtype=bool)
    if not mask.any():
        raise ConfigError(f"the model predicts {sorted(known)}, none of which is a class of the dataset "
                          f"({list(class_names)}): pick a model trained on this dataset")
    return mask


def supports_unseen_classes(class_names: Sequence[str], known_classes: Sequence[str] | None) -> bool:
    """True when a model (its ``ModelCard.class_names``) leaves out some of the dataset's classes.

    Only such models can be shown an ``unseen_classes`` drift: train one with
    ``python -m zeal_core train --dataset NAME --classes a,b,c``.
    """
    return bool(known_classes is not None and not known_class_mask(class_names, known_classes).all())


# ------------------------------------------------------------------------------------------------ drawing


def _check_pool(pool_labels: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    labels = np.asarray(pool_labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ConfigError(f"pool labels must be a 1-d array of class ids, got shape {labels.shape} "
                          f"and dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ConfigError(f"pool labels must be class ids in [0, {len(class_names)}), got "
                          f"{int(labels.min())} to {int(labels.max())}: pass the dataset's labels and names")
    return labels


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def target_proportions(mix: ClassMix, pool_labels: np.ndarray, class_names: Sequence[str], seed: int,
                       known_classes: Sequence[str] | None = None) -> np.ndarray:
    """The class shares a ``mix`` sample is meant to have (K floats summing to 1, K = len(class_names)).

    Args:
        mix: The class-mix step.
        pool_labels: Dataset class ids of the pool the sample is drawn from.
        class_names: The dataset's class names (index = class id).
        seed: Seeds a random prior (``label_shift`` without classes); the same seed, the same prior.
        known_classes: The classes the model predicts (``ModelCard.class_names``); None = all.

    Raises:
        ConfigError: Bad labels, classes the dataset does not have, or a mix the model cannot take.
    """
    labels = _check_pool(pool_labels, class_names)
    if labels.size == 0:
        raise ConfigError("the pool to draw the sample from is empty")
    context = MixContext(
        severity=mix.severity, mode=mix.mode, chosen=resolve_classes(mix.classes, class_names),
        pool_shares=np.bincount(labels, minlength=len(class_names)) / labels.size,
        known=known_class_mask(class_names, known_classes), class_names=tuple(class_names),
        rng=np.random.default_rng((_PRIOR_STREAM, _check_seed(seed))))
    shares = np.asarray(_REGISTRY.get(mix.kind).target(context), dtype=np.float64)
    total = shares.sum()
    if shares.shape != (len(class_names),) or not math.isfinite(total) or total <= 0 or (shares < 0).any():
        raise ConfigError(f"class-mix kind {mix.kind} gave no valid class shares for this pool")
    if not mix.info.unseen:
        shares = np.where(context.known, shares, 0.0)
    return shares / shares.sum()


def _largest_remainder(ideal: np.ndarray, total: int) -> np.ndarray:
    """Integers summing to ``total``, each the floor of ``ideal`` or one more (largest fractions first)."""
    counts = np.floor(ideal).astype(np.int64)
    left = int(total - counts.sum())
    if left > 0:
        order = np.argsort(-(ideal - counts), kind="stable")  # ties: lower class id first
        counts[order[:left]] += 1
    return counts


def allocate(target: np.ndarray, available: np.ndarray, n: int) -> np.ndarray:
    """Images per class: ``n`` split by ``target``, capped at ``available``, the rest renormalised.

    Raises:
        ConfigError: The classes with a positive target hold fewer than ``n`` images in all.
    """
    open_classes = (target > 0) & (available > 0)
    supply = int(available[open_classes].sum())
    if supply < n:
        raise ConfigError(f"n = {n} images asked for, but the classes this drift draws from hold only "
                          f"{supply} in the pool: use n <= {supply}")
    counts = np.zeros(len(target), dtype=np.int64)
    remaining = n
    while remaining > 0:
        shares = np.where(open_classes, target, 0.0)
        ideal = remaining * shares / shares.sum()
        short = open_classes & (ideal > available)
        if not short.any():
            counts += np.where(open_classes, _largest_remainder(ideal, remaining), 0)
            break
        counts[short] = available[short]  # the pool gives all it has of these classes
        remaining -= int(available[short].sum())
        open_classes &= ~short
    return counts


def draw_class_mix(mix: ClassMix, pool_labels: np.ndarray, n: int, seed: int, class_names: Sequence[str],
                   known_classes: Sequence[str] | None = None) -> np.ndarray:
    """``n`` distinct sorted positions into the pool whose classes follow ``mix``'s target shares.

    Raises:
        ConfigError: ``n`` below 1, or more than the classes drawn from hold (see ``allocate``).
    """
    labels = _check_pool(pool_labels, class_names)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"n must be a positive number of images, got {n!r}")
    target = target_proportions(mix, labels, class_names, seed, known_classes)
    available = np.bincount(labels, minlength=len(class_names))
    if mix.info.unseen:  # round the unseen share as a whole first, then split it over the unseen classes
        known = known_class_mask(class_names, known_classes)
        counts = np.zeros(len(target), dtype=np.int64)
        group_target = np.array([target[known].sum(), target[~known].sum()])
        wanted = target > 0
        group_supply = np.array([available[known & wanted].sum(), available[~known & wanted].sum()])
        for members, total in zip((known, ~known), allocate(group_target, group_supply, int(n)), strict=True):
            if total:
                counts[members] = allocate(target[members], available[members], int(total))
    else:
        counts = allocate(target, available, int(n))
    short = np.flatnonzero(target * int(n) - counts >= 1.0)  # classes the pool could not fill
    if short.size:
        log.info("%s: the pool holds too few images of %s for n = %d; their share went to the other classes",
                 mix.step_name, ", ".join(str(class_names[index]) for index in short), n)
    rng = np.random.default_rng(_check_seed(seed))
    chosen = [rng.choice(np.flatnonzero(labels == index), size=int(count), replace=False)
              for index, count in enumerate(counts) if count]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def uniform_draw(pool_labels: np.ndarray, n: int, seed: int, class_names: Sequence[str],
                 known_classes: Sequence[str] | None = None) -> np.ndarray:
    """``n`` distinct sorted positions drawn uniformly from the pool's images of known classes.

    With every class known this is ``np.random.default_rng(seed).choice(len(pool), n, replace=False)``,
    sorted: the draw ``zeal_core.embed.draw_positions`` has always made, so cached views stay the same.

    Raises:
        ConfigError: ``n`` below 1 or larger than the known part of the pool.
    """
    labels = _check_pool(pool_labels, class_names)
    known = known_class_mask(class_names, known_classes)
    eligible = np.arange(labels.size) if known.all() else np.flatnonzero(known[labels])
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= eligible.size:
        part = "pool" if known.all() else "part of the pool the model knows the classes of"
        raise ConfigError(f"n = {n} images asked for, but the {part} holds {eligible.size}: "
                          f"use 1 <= n <= {eligible.size}")
    chosen = np.random.default_rng(_check_seed(seed)).choice(eligible.size, size=int(n), replace=False)
    return np.sort(eligible[chosen]).astype(np.int64)
