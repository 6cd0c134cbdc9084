"""One machine record for every benchmark result (issue 32): the shape, and that every action gets it."""

from __future__ import annotations

from benchmarks._actions import build_parser
from benchmarks._harness import machine, recorded


def test_machine_record_has_one_shape() -> None:
    record = machine()
    wanted = {"cpu_count", "arch", "gpu", "torch_threads", "load_average", "under_load", "description"}
    assert wanted <= set(record)
    assert len(record["load_average"]) == 3 and str(record["cpu_count"]) in record["description"]


def test_every_action_records_its_machine_unless_it_has_its_own() -> None:
    parser = build_parser()
    actions = next(action for action in parser._actions if action.dest == "action")
    assert actions.choices
    for name, sub in actions.choices.items():
        assert getattr(sub.get_default("handler"), "__wrapped__", None) is not None, name
    assert "machine" in recorded(lambda args: {"x": 1})(None)
    assert recorded(lambda args: {"machine": "own"})(None)["machine"] == "own"
