"""The command line's text output: reports for people, no JSON, no line over 160 columns, names escaped.

``tests/data/check_report_fog.json`` is the ``--json`` object of a real ``check`` of 150 fogged digits (with
the diagnosis), its file names replaced by hostile ones: ANSI colour and title escapes, a carriage return,
a 200-character name and a name of wide (two-column) characters.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from zeal_core.cli import main
from zeal_core.corruptions import DriftSpec
from zeal_core.data import load_dataset
from zeal_core.embed import part_positions
from zeal_core.models import ModelConfig, create_model
from zeal_core.models.registry import ModelRegistry
from zeal_core.textreport import format_result
from zeal_core.textreport.layout import MAX_WIDTH, clip, clip_middle, safe, table, width

FIXTURE = Path(__file__).parent / "data" / "check_report_fog.json"
JSON_SIGNS = re.compile(r'[{\[]\s*"|"\s*:\s|\}\s*,\s*\{')  # {"  ["  "key": value  },{


def assert_plain_report(text: str) -> None:
    """No JSON, no control character, no line wider than the maximum."""
    for line in text.splitlines():
        assert width(line) <= MAX_WIDTH, f"{width(line)} columns: {line!r}"
        assert not JSON_SIGNS.search(line), f"JSON in the text output: {line!r}"
        assert all(char.isprintable() for char in line), f"a control character reached the output: {line!r}"


@pytest.fixture()
def fog_report() -> dict:
    return json.loads(FIXTURE.read_text())


def test_check_report_reads_like_a_report(fog_report: dict) -> None:
    text = format_result("check", fog_report)
    assert_plain_report(text)
    lines = text.splitlines()
    assert lines[0].startswith("DRIFT: 7 of 7 detectors") and "exit code 1" in lines[0]
    rule = "Rule: drift when any of the 7 detector(s) has p < 0.05 / 7"
    assert any(line.startswith(rule) for line in lines)
    # The detector table: one row per detector with its p-value and verdict.
    for detector in ("mmd", "ks", "cvm", "bbsd", "c2st", "mmd-fuse", "mmd-agg"):
        assert re.search(rf"^  {re.escape(detector)} +\S+ .*DRIFT$", text, re.M), detector
    assert "Estimated accuracy: 28.6% (90% interval 18.0%-39.5%, shift-calibrated) without labels" in text
    # The diagnosis in a sentence with its top 3 causes (and not the other 17).
    paragraph = text.split("Diagnosis: ", 1)[1].split("\n\n")[0]
    diagnosis = " ".join(line.strip() for line in paragraph.splitlines())
    assert diagnosis.startswith("covariate shift. Most likely causes: fog (weather, severity 4.9, score 0.98")
    assert "spatter" in diagnosis and "label shift" in diagnosis and "gaussian noise" not in diagnosis
    assert "Most drift-typical files (top 5 of 12)" in text and "img_000.png" in text
    assert "Skipped 2 file(s)" in text and "not an image file name ending (.txt)" in text
    assert "Recorded as check #7 in /srv/zeal/.zeal/history/history.sqlite" in text
    assert "queued job adapt-history-20261201-1 (bn-adapt on checks 5, 6, 7)" in text
    assert "--verbose" in lines[-1]


def test_hostile_file_names_are_escaped_and_long_ones_cut(fog_report: dict) -> None:
    text = format_result("check", fog_report, verbose=True)
    assert_plain_report(text)
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    assert "evil\\x1b[31mRED\\x1b[0m\\x0dspoof.png" in text  # shown, not obeyed
    assert "bad\\x1b]0;owned\\x07.jpg" in text
    assert "…" in text  # the 200-character and the wide names are cut to fit
    assert "很长的文件名" in text


def test_verbose_shows_every_estimator_cause_and_the_class_mix(fog_report: dict) -> None:
    short, verbose = format_result("check", fog_report), format_result("check", fog_report, verbose=True)
    assert_plain_report(verbose)
    for estimator in ("pm-atc", "atc-mc", "average-confidence", "doc"):
        assert estimator in verbose and estimator not in short
    assert "saturate" in verbose and "saturate" not in short  # the 20th cause
    assert "Class mix (reference -> estimated in this batch)" in verbose and "timings (s)" in verbose
    assert len(verbose.splitlines()) > len(short.splitlines()) + 30


@pytest.mark.parametrize("columns", [60, 100, 160, 400])
def test_no_line_is_wider_than_the_columns_given(fog_report: dict, columns: int) -> None:
    for verbose in (False, True):
        text = format_result("check", fog_report, verbose=verbose, columns=columns)
        assert max(width(line) for line in text.splitlines()) <= min(columns, MAX_WIDTH)


def test_history_show_and_list_lay_out_a_stored_report(fog_report: dict) -> None:
    row = {"id": 7, "created": "2026-12-01T06:00:00Z", "model_version": fog_report["version"],
           "dataset": "digits", "source": fog_report["source"], "origin": "cli", "n": 151, "drift": True,
           "min_p_value": 5.9e-71,
           "p_values": {"mmd": 0.001}, "alpha": 0.05, "estimator": "shift-calibrated",
           "estimated_accuracy": 0.286, "estimate_low": 0.18, "estimate_high": 0.395,
           "diagnosis": fog_report["cause"], "batch_file": "7.safetensors"}
    shown = format_result("history", {"history": "/h.sqlite", **row, "report": fog_report}, action="show")
    assert_plain_report(shown)
    assert shown.startswith("Check #7 of 2026-12-01T06:00:00Z, recorded by cli in /h.sqlite")
    assert "DRIFT: 7 of 7 detectors" in shown and "Most likely causes: fog" in shown
    listed = format_result("history", {"history": "/h.sqlite", "count": 60, "shown": 50,
                                       "table": "\n  pre-rendered rows", "checks": [row] * 50}, action="list")
    assert_plain_report(listed)
    assert "pre-rendered rows" not in listed  # the old one-line table is not repeated
    assert len(re.findall(r"^ *#7 ", listed, re.M)) == 50 and "10 older check(s) not shown" in listed


def test_generic_output_has_no_json_for_nested_values() -> None:
    result = {"version": "v1", "val_accuracy": 0.9844, "seconds": 12.345,
              "per_class_accuracy": {str(index): 0.9 for index in range(10)},
              "confusion": [[index * column for column in range(10)] for index in range(10)],
              "details": {"fit": {"weights": {"a": 1.0}}, "bootstrap": 500},
              "versions": [{"version": f"v{index}", "created": "2026", "card": {"x": 1}}
                           for index in range(30)],
              "notes": "\x1b[2Jcleared"}
    text = format_result("evaluate", result)
    assert_plain_report(text)
    assert "val accuracy: 98.4%" in text and "seconds: 12.3 s" in text
    assert "... and 20 more (--verbose or --json for all)" in text and "\\x1b[2Jcleared" in text
    verbose = format_result("evaluate", result, verbose=True)
    assert_plain_report(verbose)
    assert "v29" in verbose and "weights" in verbose


def test_layout_helpers() -> None:
    assert safe("a\x1bb\nc\u202ed\udcff") == "a\\x1bb\\x0ac\\u202ed\\xff"
    assert safe("ordinary name é 漢字.png") == "ordinary name é 漢字.png"
    assert width("漢字ab") == 6 and width(clip("漢字" * 50, 11)) <= 11
    cut = clip_middle("/a/very/long/path/to/the/file_name.png", 20)
    assert cut.startswith("/a/") and "…" in cut and cut.endswith("file_name.png") and width(cut) == 20
    lines = table(["name", "value"], [["x" * 300, 1.5], ["y", 2]], 80)
    assert all(width(line) <= 80 for line in lines) and lines[0].split() == ["name", "value"]


# End to end: a real check run in text mode ----------------------------------------------------------------


@pytest.fixture()
def random_digits_model() -> str:
    config = ModelConfig(arch="resnet18", num_classes=10, image_size=32)
    torch.manual_seed(0)
    registry = ModelRegistry()
    card = registry.save(create_model(config), model_config=config, dataset="digits",
                         dataset_fingerprint=load_dataset("digits").fingerprint, recipe={}, metrics={})
    registry.set_active(card.version)
    return card.version


def write_batch(folder: Path, count: int, spec: str | None = None) -> None:
    """``count`` held-out digits as PNG files (drifted by ``spec``), plus one with an escape in its name."""
    images, _ = load_dataset("digits").split("val")
    chosen = images[torch.from_numpy(part_positions(images.shape[0], "sample")[:count])]
    if spec:
        chosen = DriftSpec.parse(spec).apply(chosen, seed=0)
    folder.mkdir(parents=True)
    for index, image in enumerate(chosen):
        name = "\x1b[31mred.png" if index == 0 else f"img_{index:03d}.png"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / name)


@pytest.mark.slow
def test_check_and_history_in_text_mode(random_digits_model: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    write_batch(tmp_path / "batch", 150, "gaussian_noise:5")
    code = main(["check", str(tmp_path / "batch"), "--reference-n", "120", "--no-diagnosis"])
    captured = capsys.readouterr()
    assert code == 1
    assert_plain_report(captured.out)
    assert captured.out.startswith("DRIFT: ") and "Estimated accuracy: " in captured.out
    assert "\\x1b[31mred.png" in captured.out and "Recorded as check #1" in captured.out
    # stderr is not a terminal here: a handful of progress lines, not one per image.
    progress = [line for line in captured.err.splitlines() if line.startswith("[")]
    assert 3 <= len(progress) <= 20, captured.err
    assert any(line.startswith("[decode] 100.0%") for line in progress)

    for argv in (["history"], ["history", "show", "1"], ["history", "show", "1", "--verbose"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert_plain_report(out)  # the escape in the file name is shown escaped (the list cuts long sources)
        assert "#1" in out and ("red.png" in out or argv == ["history"])

    assert main(["check", str(tmp_path / "batch"), "--reference-n", "120", "--no-diagnosis", "--quiet"]) == 1
    assert capsys.readouterr().err == ""  # --quiet: no progress, no log lines


def test_a_result_of_an_unexpected_shape_still_shows(fog_report: dict) -> None:
    fog_report["detectors"] = "not a list"  # a handler that changed its output: the outline, not a crash
    text = format_result("check", fog_report)
    assert_plain_report(text)
    assert "estimated accuracy: 28.6%" in text and "detectors: not a list" in text
    assert format_result("history", {"history": "/h.sqlite", "count": 0, "shown": 0, "checks": []}) == \
        "History /h.sqlite: no checks recorded yet (zeal check FOLDER records one)."
