"""How one server shares its CPU between the people using it: a bounded pool of check slots.

Five sessions that each run a check with torch's full thread pool, beside a retrain, oversubscribe two
cores many times over: every check slows down together, and the last one finishes after all of them. The
gate lets ``slots`` checks run at once (their torch threads add up to the cores) and queues the rest in
arrival order, so a check's wall time is its own compute plus the checks queued before it, and a page can
say how many are ahead (``CheckGate.busy``). Identical requests are merged one level up, in the fitted
reference's check cache (``FittedReference._check_spec``): a queued duplicate finds the answer ready.

The gate is re-entrant per thread: a severity sweep that runs checks inside a check takes one slot. Work
that can wait (the Drift Lab's severity sweeps, ``zeal_core.reference.background``) runs its checks inside
``CheckGate.background()``: such a check takes a free slot only while no interactive check is waiting, so a
person moving a slider waits at most for the one background check already running.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator


class CheckGate:
    """At most ``slots`` checks run at once in this process; the others wait their turn (first come)."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a check gate needs at least one slot, got {slots}")
        self.slots = slots
        self._turns = threading.Condition()
        self._running = 0
        self._queue: list[int] = []  # ticket numbers of waiting interactive checks, oldest first
        self._later: list[int] = []  # ticket numbers of waiting background checks, oldest first
        self._tickets = 0
        self._depth = threading.local()  # slots this thread already holds (re-entrant use)
        self._mode = threading.local()  # whether this thread's checks are background work
        self._last_active = time.monotonic()  # when a check last started or ended

    @property
    def busy(self) -> int:
        """Checks running or waiting right now, background ones waiting not counted (0 = idle)."""
        with self._turns:
            return self._running + len(self._queue)

    @property
    def waiting_background(self) -> int:
        """Background checks waiting for a slot."""
        with self._turns:
            return len(self._later)

    def wait_until_quiet(self, quiet_s: float) -> None:
        """Block until no check has run or waited for ``quiet_s`` seconds (work that can wait, such as a
        compile, starts in a lull instead of slowing the people checking)."""
        with self._turns:
            while True:
                idle_for = time.monotonic() - self._last_active
                if not (self._running or self._queue or self._later) and idle_for >= quiet_s:
                    return
                self._turns.wait(timeout=max(0.05, quiet_s - idle_for))

    @contextlib.contextmanager
    def background(self) -> Iterator[None]:
        """Checks this thread starts inside the block wait until no interactive check is waiting."""
        previous = getattr(self._mode, "background", False)
        self._mode.background = True
        try:
            yield
        finally:
            self._mode.background = previous

    @contextlib.contextmanager
    def slot(self, timings: dict[str, float] | None = None) -> Iterator[None]:
        """Hold one slot while the block runs; ``timings["queued"]`` gets the seconds spent waiting."""
        depth = getattr(self._depth, "value", 0)
        if depth:  # a nested check of a check holding a slot already
            self._depth.value = depth + 1
            try:
                yield
            finally:
                self._depth.value = depth
            return
        waited = self._acquire()
        if timings is not None:
            timings["queued"] = waited
        self._depth.value = 1
        try:
            yield
        finally:
            self._depth.value = 0
            self._release()

    def _acquire(self) -> float:
        start = time.perf_counter()
        background = getattr(self._mode, "background", False)
        line = self._later if background else self._queue
        with self._turns:
            ticket = self._tickets
            self._tickets += 1
            line.append(ticket)
            while self._running >= self.slots or line[0] != ticket or (background and self._queue):
                self._turns.wait()
            line.pop(0)
            self._running += 1
            self._last_active = time.monotonic()
            self._turns.notify_all()  # the next in line may fit too when several slots are free
        return time.perf_counter() - start

    def _release(self) -> None:
        with self._turns:
            self._running -= 1
            self._last_active = time.monotonic()
            self._turns.notify_all()


_GATE: CheckGate | None = None
_GATE_LOCK = threading.Lock()


def check_gate() -> CheckGate:
    """The process's gate, sized once from the settings (``ZEAL_CHECK_SLOTS``; default the cores divided by
    torch's threads)."""
    global _GATE
    with _GATE_LOCK:
        if _GATE is None:
            _GATE = CheckGate(default_slots())
        return _GATE


def default_slots() -> int:
    """Checks at once: ``ZEAL_CHECK_SLOTS``, else enough that their torch threads fill the cores once."""
    import torch

    from zeal_core.settings import cpu_cores, get_settings

    chosen = get_settings().check_slots
    return chosen or max(1, cpu_cores() // max(1, torch.get_num_threads()))


BACKGROUND_NICE = 10  # nice increment of a server's background threads (UMAP compile, diagnosis warm-up)


def yield_to_checks(increment: int = BACKGROUND_NICE) -> bool:
    """Lower the calling thread's CPU priority, for background work inside a server process.

    Linux schedules threads one by one, so ``setpriority`` on the thread's own id makes just this thread
    yield the cores to the sessions' checks (a profile of five users showed UMAP's numba compile taking
    four tenths of the server's CPU in its first minutes). Returns False where that is not possible
    (other systems, or a refused call); the work then runs at normal priority.
    """
    if not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return False
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + increment))
    except OSError:
        return False
    return True
