"""Error messages of the command line name the value and the command that fixes it (exit 2, one line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeal_core.cli import main


def fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``argv`` with ``--json --quiet``: it must exit 2 with exactly one line on stderr, the reason.
    Returns the error message."""
    code = main([*argv, "--json", "--quiet"])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    payload = json.loads(captured.out)
    assert payload["ok"] is False
    return payload["error"]


@pytest.mark.parametrize(("setting", "wanted"), [
    ("window=abc", "window='abc' must be an integer, e.g. window=5"),
    ("window=2.5", "window=2.5 must be an integer"),
    ("enabled=maybe", "enabled='maybe' must be true or false"),
    ("margin=lots", "margin='lots' must be a number"),
])
def test_policy_settings_of_the_wrong_type_are_refused_and_nothing_is_saved(
        setting: str, wanted: str, capsys: pytest.CaptureFixture[str]) -> None:
    message = fails(["history", "policy", "--set", setting], capsys)
    assert wanted in message and "zeal history policy --set" in message
    assert main(["history", "policy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["policy"]["enabled"] is False  # unchanged


def test_an_unknown_model_points_to_the_command_that_lists_them(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    for index in range(3):
        Image.fromarray(np.full((8, 8, 3), index * 40, dtype=np.uint8)).save(tmp_path / f"{index}.png")
    message = fails(["check", str(tmp_path), "--model", "resnet-nope"], capsys)
    assert "no model version 'resnet-nope'" in message and "`zeal models list`" in message
    assert "list()" not in message


def test_one_readable_image_says_what_to_do_without_empty_parentheses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_cli_text import write_batch
    from zeal_core.models import ModelConfig, create_model
    from zeal_core.models.registry import ModelRegistry

    config = ModelConfig(arch="resnet18", num_classes=10, image_size=16)
    registry = ModelRegistry()
    registry.set_active(registry.save(create_model(config), model_config=config, dataset="digits",
                                      dataset_fingerprint="", recipe={}, metrics={}).version)
    write_batch(tmp_path / "one", 1)
    message = fails(["check", str(tmp_path / "one"), "--reference-n", "60"], capsys)
    assert "()" not in message and "at least 2 images" in message and "zeal check" in message


@pytest.mark.parametrize(("argv", "words"), [
    (["retrain", "--strategy", "magic", "--drift", "fog:1"], ["'magic'", "bn-adapt", "tent", "finetune"]),
    (["train", "--optimizer", "adagrad"], ["'adagrad'", "sgd", "adamw"]),
    (["history", "show"], ["zeal history show 3", "`zeal history`"]),
    (["history", "show", "999"], ["no check 999", "`zeal history`"]),
])
def test_bad_values_are_named_with_the_fix(argv: list[str], words: list[str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    message = fails(argv, capsys)
    assert all(word in message for word in words), message
