"""Exit codes of ``python -m zeal_core``: 0 ok, 1 when a check ran and reported problems, 2 on user error."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from zeal_core import cli
from zeal_core.errors import ConfigError


def parser_with(handler: Any) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=handler)
    return parser


@pytest.mark.parametrize(("result", "code"), [({"ok": True, "x": 1}, 0), ({"x": 1}, 0), ({"ok": False}, 1)])
def test_exit_code_follows_the_result(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                      result: dict[str, Any], code: int) -> None:
    monkeypatch.setattr(cli, "build_parser", lambda: parser_with(lambda args: result))
    assert cli.main(["--json"]) == code
    assert json.loads(capsys.readouterr().out) == result


def test_user_error_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    def fail(args: argparse.Namespace) -> dict[str, Any]:
        raise ConfigError("bad value 'x': use one of a, b")

    monkeypatch.setattr(cli, "build_parser", lambda: parser_with(fail))
    assert cli.main(["--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"ok": False, "error": "bad value 'x': use one of a, b"}
    assert captured.err.strip() == "error: bad value 'x': use one of a, b"
