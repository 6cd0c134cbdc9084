"""One name -> entry table for every plug-in kind (corruptions, detectors, strategies, job kinds, ...).

Each kind keeps its own ``Registry`` and its own public functions (``register_corruption``,
``list_detectors``, ``strategy_info``, ...), as timm does for models; this class only holds the entries, keeps
their registration order, refuses a second entry under a taken name, and turns an unknown name into one
``ConfigError`` that lists every valid name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from zeal_core.errors import ConfigError

Entry = TypeVar("Entry")


class Registry(Generic[Entry]):
    """Entries by name, in registration order."""

    def __init__(self, kind: str) -> None:
        """An empty registry.

        Args:
            kind: What an entry is, for messages: "corruption", "detector", "strategy", ...
        """
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, entry: Entry) -> Entry:
        """Register ``entry`` as ``name``; registering the very same entry again is a no-op (a re-import).

        Raises:
            ConfigError: ``name`` is empty or already holds another entry.
        """
        if not name:
            raise ConfigError(f"a {self.kind} needs a name")
        if name in self._entries and self._entries[name] is not entry:
            raise ConfigError(f"{self.kind} {name!r} is registered twice: rename one of them")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> Entry:
        """The entry registered as ``name``.

        Raises:
            ConfigError: No such name (the message lists the registered ones).
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable "name" from a hand-written config
            known = ", ".join(self._entries)
            raise ConfigError(f"unknown {self.kind} {name!r}: choose one of {known}") from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:  # unhashable: certainly not a name
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
