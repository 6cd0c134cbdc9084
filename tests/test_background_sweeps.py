"""Work that can wait (issue 30): the Drift Lab's severity sweeps run in the background, behind every
interactive check, and a page gets them without waiting."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from zeal_core.corruptions import DriftSpec
from zeal_core.errors import ConfigError
from zeal_core.reference import (
    BackgroundSweeps,
    FittedReference,
    severity_sweep,
)
from zeal_core.scheduling import CheckGate

LEVELS = (0.0, 2.0, 4.0)  # a short sweep keeps the tests quick


@pytest.mark.parametrize("first_is_background", [True, False])
def test_an_interactive_check_goes_before_waiting_background_checks(first_is_background: bool) -> None:
    """One slot held; a check queues first, an interactive one second. Background first: the interactive
    one overtakes it. Paired: two interactive checks keep their arrival order."""
    gate, order = CheckGate(1), []
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with gate.slot():
            holding.set()
            release.wait(10)

    def check(name: str, background: bool) -> None:
        with gate.background() if background else contextlib.nullcontext(), gate.slot():
            order.append(name)

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    holding.wait(10)
    for name, background, queued in (("first", first_is_background, 2), ("second", False, 3)):
        threads.append(threading.Thread(target=check, args=(name, background)))
        threads[-1].start()
        while gate.waiting_background + gate.busy < queued:  # wait until it is in line
            time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(10)
    assert order == (["second", "first"] if first_is_background else ["first", "second"])


def test_background_checks_are_not_counted_as_busy() -> None:
    gate = CheckGate(1)
    assert gate.busy == 0 and gate.waiting_background == 0
    with gate.background(), gate.slot():
        assert gate.busy == 1  # running counts: a person's check waits for it
    assert gate.busy == 0


def test_a_sweep_is_computed_once_in_the_background_and_matches_the_direct_one(
        reference: FittedReference) -> None:
    sweeps = BackgroundSweeps()
    spec = DriftSpec.parse("gaussian_noise:3")
    asked = [sweeps.get(reference, spec, "gaussian_noise", n=40, severities=LEVELS) for _ in range(3)]
    assert asked == [None, None, None]  # not ready at once, and asked three times it is queued once
    assert sweeps.pending() == 1
    assert sweeps.wait(300)
    ready = sweeps.get(reference, spec, "gaussian_noise", n=40, severities=LEVELS)
    direct = severity_sweep(reference, spec, "gaussian_noise", n=40, severities=LEVELS)
    assert ready is not None and ready.severities == LEVELS
    assert ready.p_values() == direct.p_values() and ready.accuracy() == direct.accuracy()
    assert all(report.images is None for report in ready.reports)  # kept slim


def test_a_newer_request_of_the_same_owner_replaces_its_waiting_one(reference: FittedReference) -> None:
    """A drag: the owner's requests while the first runs collapse into the last one; another owner's
    request is kept."""
    sweeps = BackgroundSweeps()
    specs = [DriftSpec.parse(f"gaussian_noise:3+contrast:{level}") for level in (1, 2, 3, 4)]
    for spec in specs:
        sweeps.get(reference, spec, "gaussian_noise", n=30, severities=LEVELS, owner="me")
    other = DriftSpec.parse("gaussian_noise:3+contrast:5")
    sweeps.get(reference, other, "gaussian_noise", n=30, severities=LEVELS, owner="someone else")
    assert sweeps.pending() <= 3  # the running one, my last one, the other owner's
    assert sweeps.wait(300)
    assert sweeps.get(reference, specs[-1], "gaussian_noise", n=30, severities=LEVELS, owner="me") is not None
    assert sweeps.get(reference, other, "gaussian_noise", n=30, severities=LEVELS) is not None


def test_moving_the_swept_step_asks_for_the_same_sweep(reference: FittedReference) -> None:
    """The sweep of a step does not depend on that step's own severity: one computation serves them all."""
    sweeps = BackgroundSweeps()
    sweeps.get(reference, DriftSpec.parse("contrast:1"), "contrast", n=30, severities=LEVELS)
    assert sweeps.wait(300)
    moved = DriftSpec.parse("contrast:4.5")
    assert sweeps.get(reference, moved, "contrast", n=30, severities=LEVELS) is not None


def test_a_bad_choice_is_refused_at_once_and_a_failed_sweep_reaches_the_next_asker(
        reference: FittedReference, monkeypatch: pytest.MonkeyPatch) -> None:
    sweeps = BackgroundSweeps()
    spec = DriftSpec.parse("gaussian_noise:3")
    with pytest.raises(ConfigError, match="cannot sweep"):
        sweeps.get(reference, spec, "not_a_step", n=30, severities=LEVELS)

    def out_of_memory(*args, **kwargs):
        raise MemoryError("out of memory")

    monkeypatch.setattr(reference, "check", out_of_memory)
    assert sweeps.get(reference, spec, "gaussian_noise", n=31, severities=LEVELS) is None
    assert sweeps.wait(300)
    with pytest.raises(MemoryError):
        sweeps.get(reference, spec, "gaussian_noise", n=31, severities=LEVELS)
    monkeypatch.undo()
    assert sweeps.get(reference, spec, "gaussian_noise", n=31, severities=LEVELS) is None  # queued again
    assert sweeps.wait(300)
    assert sweeps.get(reference, spec, "gaussian_noise", n=31, severities=LEVELS) is not None


def test_wait_until_quiet_waits_for_a_lull_after_the_last_check() -> None:
    """Paired: an idle gate answers at once (after its quiet time); a check running makes it wait until that
    check ended and the quiet time passed."""
    gate = CheckGate(1)
    gate._last_active -= 10  # long idle
    start = time.monotonic()
    gate.wait_until_quiet(0.2)
    assert time.monotonic() - start < 0.15
    ended: list[float] = []

    def check() -> None:
        with gate.slot():
            time.sleep(0.4)
        ended.append(time.monotonic())

    worker = threading.Thread(target=check)
    worker.start()
    time.sleep(0.05)
    gate.wait_until_quiet(0.3)
    quiet_at = time.monotonic()
    worker.join(5)
    assert ended and quiet_at - ended[0] >= 0.28


def test_the_umap_warm_up_starts_only_in_a_lull(monkeypatch: pytest.MonkeyPatch) -> None:
    from zeal_core import projection, scheduling

    calls: list[str] = []
    gate = CheckGate(1)
    monkeypatch.setattr(scheduling, "_GATE", gate)
    monkeypatch.setattr(gate, "wait_until_quiet", lambda quiet_s: calls.append(f"quiet {quiet_s}"))
    monkeypatch.setattr(scheduling, "yield_to_checks", lambda: calls.append("yield") or True)
    monkeypatch.setattr(projection, "_warm", lambda: calls.append("warm"))
    projection._warm_in_background()
    assert calls == [f"quiet {projection.QUIET_BEFORE_WARM_S}", "yield", "warm"]


def test_stop_drops_the_queue_and_ends_the_worker_between_checks(reference: FittedReference) -> None:
    """At exit the worker must not be inside torch when the interpreter goes (that aborts the process):
    stop() empties the queue, the worker ends after the check it runs, and later requests are ignored."""
    sweeps = BackgroundSweeps()
    for level in (1, 2, 3):
        sweeps.get(reference, DriftSpec.parse(f"gaussian_noise:3+contrast:{level}"), "gaussian_noise", n=30,
                   severities=LEVELS, owner=f"user {level}")
    sweeps.stop(timeout=300)
    assert sweeps.pending() == 0 and (sweeps._thread is None or not sweeps._thread.is_alive())
    assert sweeps.get(reference, DriftSpec.parse("gaussian_noise:2"), "gaussian_noise", n=30,
                      severities=LEVELS) is None and sweeps.pending() == 0
