"""Progress on stderr: one tqdm bar on a terminal, a handful of lines in a log, nothing with --quiet."""

from __future__ import annotations

import io
import logging
import time

import pytest

from zeal_core import cli_progress
from zeal_core.cli_progress import TerminalProgress
from zeal_core.progress import ProgressEvent


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def check_events(images: int = 150) -> list[ProgressEvent]:
    """The events a first ``check`` of ``images`` files sends (reference, decode per image, diagnosis)."""
    messages = ["loading v1", "embedding 450 clean val images", "fitting detectors", "reference ready"]
    events = [ProgressEvent("reference", step, 3, message) for step, message in enumerate(messages)]
    events.append(ProgressEvent("decode", 0, images, f"decoding {images} images on 2 threads"))
    events += [ProgressEvent("decode", done, images, f"{done} / {images} images")
               for done in range(1, images + 1)]
    events += [ProgressEvent("shift-bank", done, 95, f"embedded spec {done}") for done in range(1, 96)]
    events += [ProgressEvent("diagnosis", 0, 1, "learning the signatures of 95 shifts"),
               ProgressEvent("diagnosis", 1, 1, "diagnosis ready in 57 s")]
    return events


def test_a_log_gets_a_handful_of_lines_for_150_images() -> None:
    stream = io.StringIO()
    progress = TerminalProgress(stream)
    for event in check_events(150):
        progress(event)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) <= 20, lines
    assert "\r" not in stream.getvalue()  # plain lines: a log file or CI shows them as they are
    decode = [line for line in lines if line.startswith("[decode]")]
    assert decode[0] == "[decode]   0.0% decoding 150 images on 2 threads"
    assert decode[-1] == "[decode] 100.0% 150 / 150 images" and len(decode) == 5  # start + each quarter
    assert lines[-1] == "[diagnosis] 100.0% diagnosis ready in 57 s"


def test_a_log_of_a_big_folder_stays_short() -> None:
    stream = io.StringIO()
    progress = TerminalProgress(stream, mode="lines")
    for done in [*range(0, 100_000, 7), 100_000]:
        progress(ProgressEvent("decode", done, 100_000, f"{done} / 100000 images"))
    assert len(stream.getvalue().splitlines()) == 5


def test_status_messages_of_unknown_length_are_each_shown_once() -> None:
    stream = io.StringIO()
    progress = TerminalProgress(stream, mode="lines")
    for message in ("reading a.pth", "reading a.pth", "checking a.pth against resnet18", "evaluating"):
        progress(ProgressEvent("import", 0, None, message))
    for done in range(1, 50):  # bytes of a download without a known size: no line per chunk
        progress(ProgressEvent("download", done * 1_000_000, None, f"{done} MB"))
    assert stream.getvalue().splitlines() == [
        "[import] reading a.pth", "[import] checking a.pth against resnet18", "[import] evaluating",
        "[download] 1 MB"]


def test_a_terminal_gets_one_updating_bar_that_is_cleared_at_the_end() -> None:
    stream = FakeTerminal()
    progress = TerminalProgress(stream)
    for event in check_events(150):
        progress(event)
    drawn = stream.getvalue()
    assert "decode: " in drawn and "%|" in drawn and "diagnosis ready" in drawn  # stage, bar, message
    assert "\r" in drawn and drawn.count("\n") == 0  # redrawn in place, never a new line per image
    progress.close()
    assert stream.getvalue().count("\n") <= 1  # cleared: only the answer stays on screen


def test_a_log_message_during_a_bar_does_not_break_it() -> None:
    stream = FakeTerminal()
    progress = TerminalProgress(stream)
    progress(ProgressEvent("decode", 10, 100, "10 / 100 images"))
    progress.write("diagnosis unavailable: out of memory")
    progress(ProgressEvent("decode", 100, 100, "100 / 100 images"))
    progress.close()
    assert "diagnosis unavailable: out of memory\n" in stream.getvalue()


def test_quiet_writes_nothing() -> None:
    stream = FakeTerminal()
    progress = TerminalProgress(stream, mode="quiet")
    for event in check_events(20):
        progress(event)
    progress.close()
    assert stream.getvalue() == ""


def test_hostile_stage_messages_are_escaped() -> None:
    stream = io.StringIO()
    TerminalProgress(stream)(ProgressEvent("import", 0, None, "reading \x1b]0;owned\x07evil.pth"))
    assert stream.getvalue() == "[import] reading \\x1b]0;owned\\x07evil.pth\n"


def test_log_handler_goes_through_the_current_display(capsys: pytest.CaptureFixture[str]) -> None:
    cli_progress.start()
    handler = cli_progress.ProgressLogHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.emit(logging.makeLogRecord({"msg": "fitting the reference", "levelno": logging.INFO}))
    assert capsys.readouterr().err == "fitting the reference\n"
    cli_progress.start(quiet=True)
    cli_progress.stderr_progress(ProgressEvent("decode", 1, 2, "1 / 2 images"))
    assert capsys.readouterr().err == ""
    cli_progress.start()


def test_the_bar_shows_the_new_stage_at_once() -> None:
    """A long stage that starts with a status event (the diagnosis fit) shows its own name and message, not
    the finished stage's."""
    stream = FakeTerminal()
    progress = TerminalProgress(stream)
    for done in range(1, 96):
        progress(ProgressEvent("shift-bank", done, 95, f"embedded spec {done}"))
    progress(ProgressEvent("diagnosis", 0, 1, "learning the signatures of 95 shifts"))
    last_frame = stream.getvalue().rsplit("\r", 1)[-1]
    assert last_frame.startswith("diagnosis:") and "learning the signatures" in last_frame
    progress.close()


def test_an_idle_bar_keeps_its_clock_running() -> None:
    stream = FakeTerminal()
    progress = TerminalProgress(stream)
    progress(ProgressEvent("diagnosis", 0, 1, "learning the signatures of 95 shifts"))
    frames = stream.getvalue().count("\r")
    time.sleep(2.5)  # one step of a minute: the ticker redraws the bar (its elapsed time) every second
    assert stream.getvalue().count("\r") >= frames + 2
    progress.close()
    after = stream.getvalue()
    time.sleep(1.5)
    assert stream.getvalue() == after  # the ticker stops with the bar


def test_milestones_get_a_line_of_their_own() -> None:
    """Each epoch's result is kept in a log and above the bar; the steps between are not."""
    log, terminal = io.StringIO(), FakeTerminal()
    for stream in (log, terminal):
        progress = TerminalProgress(stream)
        for epoch in range(1, 9):
            for step in range(1, 43):
                progress(ProgressEvent("train", (epoch - 1) * 42 + step, 336, f"epoch {epoch} step {step}"))
            progress(ProgressEvent("train", epoch * 42, 336, f"epoch {epoch}: val accuracy 9{epoch}%",
                                   milestone=True))
        progress.close()
    lines = log.getvalue().splitlines()
    assert [line for line in lines if "val accuracy" in line] == [
        f"[train] {epoch / 8:6.1%} epoch {epoch}: val accuracy 9{epoch}%" for epoch in range(1, 9)]
    assert len(lines) <= 8 + 5  # the milestones, the start and the quarters
    for epoch in range(1, 9):  # kept above the bar, each on a line of its own
        assert f"[train] epoch {epoch}: val accuracy 9{epoch}%\n" in terminal.getvalue()
