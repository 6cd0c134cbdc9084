"""The benchmarks' harness (issue 32): one machine record, one ``--out``, one table writer."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import script_main
from benchmarks._actions import build_parser
from benchmarks._harness import Table, beside, caption, finished, json_path, listed, machine


def _actions() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    actions = next(action for action in parser._actions if action.dest == "action")
    assert actions.choices
    return actions.choices


def test_machine_record_has_one_shape() -> None:
    record = machine()
    wanted = {"cpu_count", "arch", "gpu", "torch_threads", "load_average", "under_load", "description"}
    assert wanted <= set(record)
    assert len(record["load_average"]) == 3 and str(record["cpu_count"]) in record["description"]


def test_every_action_records_its_machine_unless_it_has_its_own() -> None:
    for name, sub in _actions().items():
        assert getattr(sub.get_default("handler"), "__wrapped__", None) is not None, name
    assert "machine" in finished(lambda args: {"x": 1})(argparse.Namespace(out=None))
    assert finished(lambda args: {"machine": "own"})(None)["machine"] == "own"


def test_every_action_has_the_one_out_option_and_no_old_output_flag() -> None:
    for name, sub in _actions().items():
        options = {option for action in sub._actions for option in action.option_strings}
        assert {"--out", "--json"} <= options, name
        assert not options & {"--save", "--report", "--root"}, (name, options)
        assert sub.parse_args(["--out", "r/x.json"]).out == Path("r/x.json"), name


def test_out_writes_the_json_result_and_its_markdown_beside_it(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "bench_x"  # no suffix: .json is added, as for every --out
    handler = finished(lambda args: {"value": float("nan"), "markdown": "| a |\n|---|\n| 1 |"})
    handler(argparse.Namespace(out=out))
    written = json.loads((tmp_path / "reports" / "bench_x.json").read_text())
    assert written["value"] is None and "description" in written["machine"]
    assert (tmp_path / "reports" / "bench_x.md").read_text() == "| a |\n|---|\n| 1 |\n"
    finished(lambda args: {"value": 1})(argparse.Namespace(out=tmp_path / "plain.json"))
    assert json.loads((tmp_path / "plain.json").read_text())["value"] == 1
    assert not (tmp_path / "plain.md").exists(), "a result without tables writes no Markdown"
    assert beside(tmp_path / "d.json", "_digits_confusion.png") == tmp_path / "d_digits_confusion.png"
    assert json_path("r/x.md") == Path("r/x.md.json") and json_path("r/x.json") == Path("r/x.json")


def test_script_entry_point_has_the_same_out(tmp_path: Path, capsys) -> None:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--n", type=int, default=1)

    code = script_main("demo", add, lambda args: {"n": args.n, "markdown": "text"}, print,
                       ["--n", "3", "--json", "--out", str(tmp_path / "demo.json")])
    assert code == 0 and json.loads(capsys.readouterr().out)["n"] == 3
    assert json.loads((tmp_path / "demo.json").read_text())["n"] == 3 and (tmp_path / "demo.md").exists()


def test_one_table_writer_gives_markdown_and_csv_with_a_caption() -> None:
    line = caption("False-positive rate", machine_record={"description": "2 CPU cores"}, n=[50, 100],
                   trials=200, standard_error="± binomial SE")
    assert line == "False-positive rate; n = 50, 100; 200 trials; ± binomial SE; machine: 2 CPU cores:"
    table = Table(("detector", "n=50"), [("mmd", "0.050"), ("a|b", 1)], caption=line, align="lr")
    assert table.markdown().splitlines() == [line, "", "| detector | n=50 |", "|---|---:|",
                                             "| mmd | 0.050 |", "| a\\|b | 1 |"]
    assert table.csv() == "detector,n=50\nmmd,0.050\na|b,1\n"
    assert listed(int)("50, 100,") == (50, 100)


def test_a_benchmarks_markdown_prints_as_its_own_lines_without_json() -> None:
    from zeal_core.textreport import format_result

    shown = format_result("", {"markdown": "Caption:\n\n| a | b |\n|---|---|\n| 1 | 2 |", "n": 3},
                          columns=100)
    lines = [line.strip() for line in shown.splitlines()]
    assert "| a | b |" in lines and "| 1 | 2 |" in lines, shown
    assert "\\x0a" not in shown
