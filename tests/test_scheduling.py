"""Sharing one server (issue 30): identical questions are computed once, checks take bounded slots in
arrival order, and the job worker yields the CPU. Timings under load: ``python -m benchmarks load``."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import ROOT
from zeal_core.reference import FittedReference
from zeal_core.scheduling import CheckGate
from zeal_core.settings import load_settings


def _together(count: int, work) -> list:
    """Run ``work(index)`` in ``count`` threads released at the same moment; their results in order."""
    start = threading.Barrier(count)
    results: list = [None] * count

    def run(index: int) -> None:
        start.wait()
        results[index] = work(index)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results


@pytest.mark.parametrize(("same", "computations"), [(True, 1), (False, 2)])
def test_two_sessions_asking_the_same_question_cause_one_computation(
        reference: FittedReference, monkeypatch: pytest.MonkeyPatch, same: bool, computations: int) -> None:
    """Paired: the same spec, n and seed from two sessions at once -> one draw, one answer; two different
    seeds -> two. The draw is slowed so that both requests are in flight together."""
    drawn: list[str] = []
    original = reference.simulate_batch

    def slow_draw(spec, count, seed):
        drawn.append(spec.text)
        time.sleep(0.5)
        return original(spec, count, seed)

    monkeypatch.setattr(reference, "simulate_batch", slow_draw)
    spec = f"gaussian_noise:{2.5 if same else 3.5}"
    reports = _together(2, lambda index: reference.check(spec, n=40, seed=0 if same else index))
    assert len(drawn) == computations
    assert all(report is not None for report in reports)
    assert (reports[0] is reports[1]) == same


def test_a_failed_computation_is_not_cached_and_the_next_asker_computes_again(
        reference: FittedReference, monkeypatch: pytest.MonkeyPatch) -> None:
    original = reference.simulate_batch
    calls = []

    def failing_once(spec, count, seed):
        calls.append(seed)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return original(spec, count, seed)

    monkeypatch.setattr(reference, "simulate_batch", failing_once)
    with pytest.raises(RuntimeError):
        reference.check("contrast:2", n=40, seed=7)
    assert reference.check("contrast:2", n=40, seed=7).n == 40
    assert len(calls) == 2 and not reference._computing  # nothing left marked in flight


@pytest.mark.parametrize("slots", [1, 2])
def test_gate_runs_at_most_its_slots_at_once_in_arrival_order(slots: int) -> None:
    gate = CheckGate(slots)
    lock = threading.Lock()
    running, most, order = [0], [0], []

    def check(index: int) -> None:
        time.sleep(0.02 * index)  # arrive one after another
        with gate.slot():
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
                order.append(index)
            time.sleep(0.1)
            with lock:
                running[0] -= 1

    _together(6, check)
    assert most[0] == slots
    if slots == 1:
        assert order == sorted(order)  # first come, first served
    assert gate.busy == 0


def test_gate_is_reentrant_and_reports_the_wait() -> None:
    gate = CheckGate(1)
    timings: dict[str, float] = {}
    with gate.slot(timings):
        assert gate.busy == 1
        with gate.slot():  # a sweep's checks inside a check: no deadlock, no second slot
            assert gate.busy == 1
    assert timings["queued"] >= 0 and gate.busy == 0

    holder_in, release = threading.Event(), threading.Event()

    def holder() -> None:
        with gate.slot():
            holder_in.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    holder_in.wait(5)
    assert gate.busy == 1
    threading.Timer(0.3, release.set).start()
    waited: dict[str, float] = {}
    with gate.slot(waited):
        pass
    thread.join()
    assert waited["queued"] >= 0.2


def test_gate_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        CheckGate(0)


def test_slots_and_job_priority_settings_are_read_strictly() -> None:
    settings = load_settings({"ZEAL_CHECK_SLOTS": "3", "ZEAL_JOB_NICE": "7", "ZEAL_JOB_THREADS": "1"})
    assert (settings.check_slots, settings.job_nice, settings.job_threads) == (3, 7, 1)
    assert load_settings({}).job_nice == 10 and load_settings({"ZEAL_DEMO": "1"}).job_threads == 1
    with pytest.raises(Exception, match="ZEAL_JOB_NICE"):
        load_settings({"ZEAL_JOB_NICE": "40"})


def test_the_job_worker_runs_at_lower_priority_with_fewer_threads() -> None:
    """In a process of its own: ``os.nice`` cannot be undone."""
    code = ("import os, torch; from zeal_core.settings import lower_job_priority; "
            "before = os.nice(0); done = lower_job_priority(); "
            "print(os.nice(0) - before, torch.get_num_threads(), done['threads'])")
    env = {"PATH": "/usr/bin:/bin", "ZEAL_JOB_NICE": "5", "ZEAL_JOB_THREADS": "1", "HOME": "/tmp"}
    shown = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                           check=True, timeout=120).stdout.split()
    assert shown == ["5", "1", "1"]


def test_five_users_views_and_sweeps_stay_cached(reference: FittedReference,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Five Drift Lab views each ask for a check and a six-level sweep: 35 checks, all kept (a bound of 24
    entries once made every view recompute its sweep). Asking again draws nothing."""
    from zeal_core.reference.fitted import report_bytes

    questions = [(f"contrast:{level}", seed) for seed in range(5) for level in (0.5, 1, 2, 3, 4, 5, 1.5)]
    reports = [reference.check(spec, n=20, seed=seed, parts=("detectors",)) for spec, seed in questions]
    assert 0 < report_bytes(reports[0]) < 2**20
    drawn = []
    monkeypatch.setattr(reference, "simulate_batch", lambda *args: drawn.append(args))
    again = [reference.check(spec, n=20, seed=seed, parts=("detectors",)) for spec, seed in questions]
    assert not drawn and all(first is second for first, second in zip(reports, again, strict=True))


def test_background_work_yields_only_its_own_thread() -> None:
    """The UMAP and diagnosis warm-ups lower their own thread's priority, never the server's."""
    import os

    from zeal_core.scheduling import yield_to_checks

    seen: dict[str, int] = {}

    def background() -> None:
        seen["lowered"] = yield_to_checks(5)
        seen["thread"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, 0)
    thread = threading.Thread(target=background)
    thread.start()
    thread.join()
    assert seen["lowered"] and seen["thread"] == min(19, before + 5)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
