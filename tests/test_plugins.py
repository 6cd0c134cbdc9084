"""``zeal_core.plugins.Registry``, the name table behind every plug-in kind, and the kinds built on it."""

from __future__ import annotations

import pytest

from zeal_core.errors import ConfigError
from zeal_core.plugins import Registry


def test_entries_keep_registration_order_and_lookups_work() -> None:
    registry: Registry[int] = Registry("widget")
    registry.add("b", 2)
    registry.add("a", 1)
    assert registry.names() == ["b", "a"] and list(registry) == ["b", "a"] and len(registry) == 2
    assert registry.get("a") == 1 and "a" in registry and "c" not in registry and ["x"] not in registry


def test_unknown_and_duplicate_names_are_config_errors() -> None:
    registry: Registry[object] = Registry("widget")
    entry = object()
    registry.add("a", entry)
    assert registry.add("a", entry) is entry  # the same entry again (a re-import) is fine
    with pytest.raises(ConfigError, match="widget 'a' is registered twice"):
        registry.add("a", object())
    with pytest.raises(ConfigError, match=r"unknown widget 'zz': choose one of a$"):
        registry.get("zz")
    with pytest.raises(ConfigError, match="unknown widget"):
        registry.get(["not", "hashable"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs a name"):
        registry.add("", object())


@pytest.mark.parametrize(("lister", "getter", "kind"), [
    ("zeal_core.corruptions:list_corruptions", "zeal_core.corruptions:corruption_info", "corruption"),
    ("zeal_core.drift:list_detectors", "zeal_core.drift:detector_info", "detector"),
    ("zeal_core.drift:list_stream_detectors", "zeal_core.drift:stream_detector_info", "stream detector"),
    ("zeal_core.retrain:list_strategies", "zeal_core.retrain:strategy_info", "strategy"),
    ("zeal_core.jobs:list_job_kinds", "zeal_core.jobs:job_kind_info", "job kind"),
])
def test_each_plug_in_kind_names_all_choices_for_an_unknown_name(lister: str, getter: str, kind: str) -> None:
    import importlib

    def resolve(path: str):
        module, name = path.split(":")
        return getattr(importlib.import_module(module), name)

    names = resolve(lister)()
    assert names
    for name in names:
        assert resolve(getter)(name) is not None
    with pytest.raises(ConfigError) as caught:
        resolve(getter)("no-such-name")
    message = str(caught.value)
    assert message.startswith(f"unknown {kind} 'no-such-name'")
    assert all(name in message for name in names)
