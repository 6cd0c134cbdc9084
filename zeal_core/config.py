"""The one strict way to build or override a frozen config dataclass from a mapping.

Every settings object of the lab (training recipes, strategy options, monitor and policy settings, pipeline
parameters) is a frozen dataclass with a comment per field. Values from outside (job parameters, params.yaml,
``--option KEY=VALUE``, a page form) go through ``build`` or ``override``: unknown keys are an error that
names the known ones, lists become tuples where the field holds a tuple, a flag takes exactly true/false,
yes/no, on/off or 1/0 (any case: ``enabled=no`` switches it off), and a value of the wrong type
(``window=abc`` for an integer, ``enabled=maybe`` for a flag) is a ``ConfigError`` that names the setting,
the value and an example, rather than a ``TypeError`` deep inside or a wrong value silently kept. Reading a
stored card or recipe, where old keys may linger, uses ``known_fields`` to keep only what the current class
knows.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from zeal_core.errors import ConfigError

Config = TypeVar("Config")


def field_names(cls: type) -> list[str]:
    """The dataclass's field names, in declaration order."""
    return [item.name for item in dataclasses.fields(cls)]


def check_keys(cls: type, values: Mapping[str, Any], where: str) -> None:
    """Raise ``ConfigError`` when ``values`` holds a key that is not a field of ``cls``.

    Args:
        cls: A dataclass.
        values: The settings given.
        where: What the settings are, for the message (e.g. "strategy 'tent'", "params.yaml: train.digits").
    """
    if not isinstance(values, Mapping):
        kind = type(values).__name__
        raise ConfigError(f"{where}: settings must be a mapping of name -> value, got {kind}")
    known = field_names(cls)
    unknown = sorted(str(key) for key in values if key not in known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")


def _tuple_fields(cls: type) -> set[str]:
    hints = typing.get_type_hints(cls)
    tuples = set()
    for name in field_names(cls):
        hint = hints.get(name)
        origins = {typing.get_origin(hint)} | {typing.get_origin(arg) for arg in typing.get_args(hint)}
        if tuple in origins or hint is tuple:
            tuples.add(name)
    return tuples


# The words a flag accepts besides JSON's true/false (compared in lower case); nothing else is a flag.
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def _flag_fields(cls: type) -> set[str]:
    """Fields of ``cls`` typed ``bool`` or ``bool | None``."""
    hints = typing.get_type_hints(cls)
    found = set()
    for name in field_names(cls):
        hint = hints.get(name)
        arguments = set(typing.get_args(hint))
        if hint is bool or (bool in arguments and arguments <= {bool, type(None)}):
            found.add(name)
    return found


def _flags_read(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with each flag's word (``"no"``, ``"On"``, ``1``) read as a bool; other values are left for
    ``check_types`` to refuse (so ``enabled=maybe`` is an error, never a truthy string)."""
    flags = _flag_fields(cls)
    read = dict(values)
    for name in flags & set(read):
        value = read[name]
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
            read[name] = value.strip().lower() in TRUE_WORDS
        elif isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
            read[name] = bool(value)
    return read


def _type_problem(hint: Any, value: Any) -> str | None:
    """None when ``value`` fits the type ``hint``, else what it should be (``"an integer"``); types this
    does not know (classes, callables) are left to the dataclass itself."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        problems = [_type_problem(argument, value) for argument in arguments]
        return None if None in problems else " or ".join(dict.fromkeys(problems))  # type: ignore[arg-type]
    if origin is typing.Literal:
        return None if value in arguments else f"one of {', '.join(map(repr, arguments))}"
    checks: list[tuple[Any, bool, str]] = [
        (type(None), value is None, "empty (null)"),
        (bool, isinstance(value, bool), f"true or false ({'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)})"),
        (int, isinstance(value, numbers.Integral) and not isinstance(value, bool), "an integer"),
        (float, isinstance(value, numbers.Real) and not isinstance(value, bool), "a number"),
        (str, isinstance(value, str), "text"),
    ]
    for kind, fits, wanted in checks:
        if hint is kind:
            return None if fits else wanted
    if tuple in (hint, origin) or list in (hint, origin):
        return None if isinstance(value, (list, tuple)) else "a list"
    if dict in (hint, origin) or origin is Mapping:
        return None if isinstance(value, Mapping) else "a mapping of name -> value"
    return None


def check_types(cls: type, values: Mapping[str, Any], where: str) -> None:
    """Raise ``ConfigError`` when a value in ``values`` does not fit its field's type in ``cls``.

    Args:
        cls: A dataclass.
        values: The settings given (keys already checked).
        where: What the settings are and how they were given, for the message (e.g. "zeal history policy
            --set").
    """
    hints = typing.get_type_hints(cls)
    defaults = {item.name: item.default for item in dataclasses.fields(cls)}
    for name, value in values.items():
        wanted = _type_problem(hints.get(name, Any), value)
        if wanted is None:
            continue
        default = defaults.get(name, dataclasses.MISSING)
        example = "" if default in (dataclasses.MISSING, None) else f", e.g. {name}={json.dumps(default)}"
        raise ConfigError(f"{where}: {name}={value!r} must be {wanted}{example}")


def _converted(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    tuples = _tuple_fields(cls)
    return {key: tuple(value) if key in tuples and isinstance(value, list) else value
            for key, value in values.items()}


def build(cls: type[Config], values: Mapping[str, Any] | None, where: str) -> Config:
    """``cls(**values)``, strictly: unknown keys and wrong types raise ``ConfigError`` naming ``where``."""
    values = dict(values or {})
    check_keys(cls, values, where)
    values = _flags_read(cls, values)
    check_types(cls, values, where)
    try:
        return cls(**_converted(cls, values))
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from None


def override(config: Config, values: Mapping[str, Any] | None, where: str) -> Config:
    """A copy of ``config`` with ``values`` replacing its fields, strictly (see ``build``)."""
    values = dict(values or {})
    check_keys(type(config), values, where)
    values = _flags_read(type(config), values)
    check_types(type(config), values, where)
    try:
        return dataclasses.replace(config, **_converted(type(config), values))
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from None


def known_fields(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """Only the keys of ``values`` that ``cls`` knows, tuples restored: for reading stored recipes and cards
    written by an older or newer version of the lab (never for user input: use ``build``)."""
    names = set(field_names(cls))
    return _converted(cls, {key: value for key, value in values.items() if key in names})


def parse_pairs(pairs: Sequence[str], flag: str, example: str) -> dict[str, Any]:
    """Command-line ``KEY=VALUE`` pairs as a dict, each value read as JSON (``2``, ``true``, ``[1, 2]``)
    or else kept as text: what ``build`` / ``override`` then check against a config's fields (a flag then
    takes ``true/false/yes/no/on/off/1/0`` and nothing else).

    Args:
        pairs: The flag's values, e.g. ``["epochs=2", "lr=0.001"]``.
        flag: The flag, for the message (``--option``, ``--set``).
        example: One valid pair, for the message.

    Raises:
        ConfigError: A pair without ``=`` or without a key.
    """
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {pair!r} must look like KEY=VALUE, e.g. {example}")
        try:
            values[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            values[key.strip()] = value
    return values
