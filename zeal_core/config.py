"""The one strict way to build or override a frozen config dataclass from a mapping.

Every settings object of the lab (training recipes, strategy options, monitor and policy settings, pipeline
parameters) is a frozen dataclass with a comment per field. Values from outside (job parameters, params.yaml,
``--option KEY=VALUE``, a page form) go through ``build`` or ``override``: unknown keys are an error that
names the known ones, lists become tuples where the field holds a tuple, a boolean field takes exactly
true/false, yes/no, on/off or 1/0 (any case; anything else is an error, so ``enabled=no`` switches a thing
off and ``enabled=maybe`` is refused), and a wrong type becomes a ``ConfigError`` rather than a
``TypeError`` deep inside. Reading a stored card or recipe, where old keys may
linger, uses ``known_fields`` to keep only what the current class knows.
"""

from __future__ import annotations

import dataclasses
import json
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


# The words a boolean setting accepts (compared in lower case); nothing else is a boolean.
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def parse_bool(value: Any, where: str) -> bool:
    """``value`` as a boolean: a bool, 0 or 1, or one of ``TRUE_WORDS`` / ``FALSE_WORDS`` (any case).

    Raises:
        ConfigError: Anything else (``"maybe"``, 2, None), naming ``where`` and the accepted words.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ConfigError(f"{where}: {value!r} is not a boolean; use one of "
                      f"{'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)}")


def _bool_fields(cls: type) -> dict[str, bool]:
    """Boolean fields of ``cls`` -> whether the field also takes None (``bool | None``)."""
    hints = typing.get_type_hints(cls)
    found = {}
    for name in field_names(cls):
        hint = hints.get(name)
        args = set(typing.get_args(hint))
        if hint is bool or (bool in args and args <= {bool, type(None)}):
            found[name] = type(None) in args
    return found


def _converted(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    tuples = _tuple_fields(cls)
    return {key: tuple(value) if key in tuples and isinstance(value, list) else value
            for key, value in values.items()}


def _strict(cls: type, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``_converted`` plus the strict reading of boolean fields (user input only)."""
    converted = _converted(cls, values)
    for name, optional in _bool_fields(cls).items():
        if name in converted and not (optional and converted[name] is None):
            converted[name] = parse_bool(converted[name], f"{where}: {name}")
    return converted


def build(cls: type[Config], values: Mapping[str, Any] | None, where: str) -> Config:
    """``cls(**values)``, strictly: unknown keys and wrong types raise ``ConfigError`` naming ``where``."""
    values = dict(values or {})
    check_keys(cls, values, where)
    try:
        return cls(**_strict(cls, values, where))
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from None


def override(config: Config, values: Mapping[str, Any] | None, where: str) -> Config:
    """A copy of ``config`` with ``values`` replacing its fields, strictly (see ``build``)."""
    values = dict(values or {})
    check_keys(type(config), values, where)
    try:
        return dataclasses.replace(config, **_strict(type(config), values, where))
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from None


def known_fields(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """Only the keys of ``values`` that ``cls`` knows, tuples restored: for reading stored recipes and cards
    written by an older or newer version of the lab (never for user input: use ``build``)."""
    names = set(field_names(cls))
    return _converted(cls, {key: value for key, value in values.items() if key in names})


def parse_pairs(pairs: Sequence[str], flag: str, example: str) -> dict[str, Any]:
    """Command-line ``KEY=VALUE`` pairs as a dict, each value read as JSON (``2``, ``true``, ``[1, 2]``)
    or else kept as text: what ``build`` / ``override`` then check against a config's fields (a boolean
    field then takes ``true/false/yes/no/on/off/1/0`` and nothing else; see ``parse_bool``).

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
