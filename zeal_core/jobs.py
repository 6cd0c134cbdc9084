"""Background jobs: long work (train, retrain, monitor) runs in a worker process, its state on disk.

Why a separate process: the app stays responsive, a browser refresh or a restarted page loses nothing, and a
crash in the work cannot take the app down. Layout under ``state_dir()/jobs``:

- ``<id>.json``: the job (kind, params, status, progress, message, result, error, times, pid), always
  replaced atomically (temp file + ``os.replace``), so a reader never sees half a file;
- ``<id>.log``: the job's log lines (progress, warnings, a traceback on failure);
- ``<id>.cancel``: present once somebody asked the job to stop; the worker polls it;
- ``worker.lock``: an exclusive ``fcntl.flock`` held by the one worker process while it runs jobs;
- ``worker.log``: the worker processes' own stdout/stderr.

Exactly one job runs at a time: ``submit`` writes a queued job and calls ``ensure_worker``, which starts
``python -m zeal_core.jobs worker`` when no worker holds the lock; the worker takes queued jobs oldest first
until none remain, then exits. A worker that dies (SIGKILL, out of memory) releases its lock with its last
breath; the next ``get``, ``list`` or ``ensure_worker`` sees a job still marked running while the lock is
free and marks it failed. Model registry writes are atomic, so a killed job never leaves half a model.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import secrets
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zeal_core import paths
from zeal_core.errors import Cancelled, ConfigError, ZealError
from zeal_core.fileio import atomic_write_bytes
from zeal_core.plugins import Registry
from zeal_core.progress import CancelToken, ProgressCallback, ProgressEvent

log = logging.getLogger(__name__)

# Job states; "queued" and "running" are live, the other three are final.
STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATUSES = frozenset({"done", "failed", "cancelled"})

PROGRESS_WRITE_INTERVAL_S = 0.25  # s between two progress writes of one job file (<= 4 writes per second)
CANCEL_POLL_INTERVAL_S = 0.1  # s between two looks for the cancel file
WORKER_LOCK_WAIT_S = 2.0  # s a starting worker waits for the lock (another process may hold it briefly)
DEAD_WORKER_MESSAGE = "worker process died (killed?) — resubmit"


def _now() -> str:
    """Current time as ISO 8601 UTC with milliseconds (sorts as text)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Job:
    """One unit of background work and everything known about it so far."""

    id: str  # safe name: creation time + kind + random suffix, sorts by creation
    kind: str  # registered job kind, e.g. "train", "retrain", "monitor"
    params: dict[str, Any]  # JSON-ready parameters for the kind's runner
    status: str = "queued"  # one of STATUSES
    progress: float = 0.0  # share done in [0, 1] of the current stage
    message: str = ""  # latest human-readable line
    result: dict[str, Any] | None = None  # JSON-ready result once done (e.g. the new model version)
    error: str | None = None  # one-line reason once failed
    log_path: str = ""  # absolute path of the job's log file
    created: str = ""  # ISO 8601 UTC
    started: str | None = None  # ISO 8601 UTC, when the worker took it
    finished: str | None = None  # ISO 8601 UTC, when it reached a final status
    pid: int | None = None  # worker process id while running
    stage: str = ""  # current stage name from the progress events, e.g. "train", "evaluate"
    metrics: dict[str, Any] = field(default_factory=dict)  # latest progress metrics (loss, accuracy, ...)

    @property
    def is_final(self) -> bool:
        """True when the job is done, failed or cancelled."""
        return self.status in FINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (also what the job file holds)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Job:
        """Inverse of ``to_dict``; unknown keys are ignored so older files still load."""
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        return cls(**known)


# ---------------------------------------------------------------------------------------------------------
# Job kinds: a small registry by name, like the strategies and detectors.

JobRunner = Callable[[dict[str, Any], ProgressCallback, CancelToken], dict[str, Any]]


@dataclass(frozen=True)
class JobKind:
    """A named kind of job and the function that runs it in the worker."""

    name: str  # e.g. "train"
    description: str  # one line for the app and ``--help``
    run: JobRunner  # (params, progress, cancel) -> JSON-ready result dict


_KINDS: Registry[JobKind] = Registry("job kind")


def register_job_kind(name: str, description: str) -> Callable[[JobRunner], JobRunner]:
    """Decorator: make ``function(params, progress, cancel) -> dict`` runnable as jobs of kind ``name``."""

    def decorate(function: JobRunner) -> JobRunner:
        _KINDS.add(name, JobKind(name=name, description=description, run=function))
        return function

    return decorate


def list_job_kinds() -> list[str]:
    """Names of the registered job kinds."""
    return sorted(_KINDS.names())


def job_kind_info(name: str) -> JobKind:
    """The registered kind ``name``.

    Raises:
        ConfigError: No such kind.
    """
    return _KINDS.get(name)


def _card_summary(card: Any) -> dict[str, Any]:
    """The JSON-ready part of a model card a job result needs."""
    return {
        "version": card.version,
        "dataset": card.dataset,
        "parent": card.parent,
        "strategy": card.strategy,
        "drift_spec": card.drift_spec,
        "metrics": card.metrics,
    }


@register_job_kind("train", "train a model and register it (params: dataset, activate, TrainConfig fields)")
def _run_train(params: dict[str, Any], progress: ProgressCallback, cancel: CancelToken) -> dict[str, Any]:
    from zeal_core.train import default_config, train_and_register

    options = dict(params)
    dataset_name = options.pop("dataset", "digits")
    device = options.pop("device", "auto")
    activate = bool(options.pop("activate", False))
    config = default_config(dataset_name)
    unknown = sorted(set(options) - set(config.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"train job: unknown training settings {unknown}; "
                          f"known: {sorted(config.__dataclass_fields__)}")
    if isinstance(options.get("augmentations"), list):
        options["augmentations"] = tuple(options["augmentations"])
    config = replace(config, **options)
    card = train_and_register(dataset_name, config, device=device, progress=progress, cancel=cancel)
    if activate:
        from zeal_core.models.registry import ModelRegistry

        ModelRegistry().set_active(card.version)
    return _card_summary(card)


@register_job_kind("retrain", "adapt a model to a drift (params: model, strategy, drift, dataset, options, "
                              "activate)")
def _run_retrain(params: dict[str, Any], progress: ProgressCallback, cancel: CancelToken) -> dict[str, Any]:
    from zeal_core.retrain import adapt

    card = adapt(
        params["strategy"], params["model"], params.get("dataset"), params["drift"],
        device=params.get("device", "auto"), progress=progress, cancel=cancel,
        options=params.get("options") or None,
    )
    if params.get("activate"):
        from zeal_core.models.registry import ModelRegistry

        ModelRegistry().set_active(card.version)
    return _card_summary(card)


@register_job_kind("monitor", "simulate a drifting stream with detector and retrain policy (params: model, "
                              "schedule, config)")
def _run_monitor(params: dict[str, Any], progress: ProgressCallback, cancel: CancelToken) -> dict[str, Any]:
    from zeal_core.monitor import MonitorConfig, Schedule, simulate

    config = MonitorConfig.from_dict(params.get("config") or {})
    result = simulate(params["model"], params.get("dataset"), Schedule.parse(params["schedule"]), config,
                      progress=progress, cancel=cancel, device=params.get("device", "auto"))
    return result.to_dict()


# ---------------------------------------------------------------------------------------------------------
# Locking and the cancel token.


@contextlib.contextmanager
def _try_lock(path: Path, wait_s: float = 0.0) -> Iterator[bool]:
    """Hold an exclusive flock on ``path`` if it can be had within ``wait_s`` s; yields whether it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - closed in finally; the lock lives as long as the handle
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    locked = False
                    break
                time.sleep(0.05)
        yield locked
    finally:
        handle.close()  # closing the file releases the lock


class _FileCancelToken(CancelToken):
    """A cancel token that also becomes set when the job's cancel file appears (checked at most 10x/s)."""

    def __init__(self, cancel_path: Path) -> None:
        super().__init__()
        self._path = cancel_path
        self._last_check = 0.0

    @property
    def cancelled(self) -> bool:
        """True once ``cancel`` was called or the cancel file exists."""
        if not self._event.is_set():
            now = time.monotonic()
            if now - self._last_check >= CANCEL_POLL_INTERVAL_S:
                self._last_check = now
                if self._path.exists():
                    self._event.set()
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise ``Cancelled`` if the job was asked to stop."""
        if self.cancelled:
            raise Cancelled("cancelled by request")


# ---------------------------------------------------------------------------------------------------------
# The queue.

# Worker processes started by this process, kept so that finished ones are reaped (no zombies).
_STARTED_WORKERS: list[subprocess.Popen] = []


class JobQueue:
    """The job folder: submit, inspect and cancel jobs; start the worker that runs them."""

    def __init__(self, root: Path | str | None = None) -> None:
        """Open (and create) the job folder.

        Args:
            root: The folder; defaults to ``paths.state_dir() / "jobs"``.
        """
        self.root = Path(root) if root is not None else paths.state_dir() / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock_path = self.root / "worker.lock"

    # -- files ----------------------------------------------------------------------------------------
    def _job_path(self, job_id: str) -> Path:
        return self.root / f"{paths.safe_name(job_id, 'job id')}.json"

    def _cancel_path(self, job_id: str) -> Path:
        return self.root / f"{job_id}.cancel"

    def _write(self, job: Job) -> None:
        atomic_write_bytes(self._job_path(job.id), json.dumps(job.to_dict(), indent=1, default=str).encode())

    def _read(self, path: Path) -> Job | None:
        try:
            return Job.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None  # vanished or unreadable: skip rather than break the whole list

    def _read_all(self) -> list[Job]:
        jobs = [self._read(path) for path in self.root.glob("*.json")]
        return sorted((job for job in jobs if job is not None), key=lambda job: (job.created, job.id))

    # -- public API -----------------------------------------------------------------------------------
    def submit(self, kind: str, params: dict[str, Any] | None = None, *, start_worker: bool = True) -> Job:
        """Queue a job and make sure a worker will run it.

        Args:
            kind: A registered job kind (``list_job_kinds()``).
            params: JSON-ready parameters for the kind.
            start_worker: Start a worker process if none is running (False only for tests and tools that
                run ``run_worker`` themselves).

        Raises:
            ConfigError: Unknown kind, or parameters that are not JSON-ready.
        """
        job_kind_info(kind)
        params = dict(params or {})
        try:
            json.dumps(params)
        except TypeError as error:
            raise ConfigError(f"job parameters must be JSON-ready (str, numbers, lists, dicts): {error}"
                              ) from None
        created = _now()
        stamp = datetime.fromisoformat(created).strftime("%Y%m%d-%H%M%S-%f")
        job_id = f"{stamp}-{kind}-{secrets.token_hex(2)}"
        job = Job(id=job_id, kind=kind, params=params, created=created, message="queued",
                  log_path=str(self.root / f"{job_id}.log"))
        self._write(job)
        log.info("job %s queued (%s)", job.id, kind)
        if start_worker:
            self.ensure_worker()
        return job

    def get(self, job_id: str) -> Job:
        """The current state of job ``job_id`` (a dead worker's running job is reported failed).

        Raises:
            ConfigError: No such job.
        """
        path = self._job_path(job_id)
        job = self._read(path)
        if job is None:
            raise ConfigError(f"no job {job_id!r} in {self.root}: see the job list for ids")
        if job.status == "running":
            self.reap_dead()
            job = self._read(path) or job
        return job

    def list(self) -> list[Job]:
        """All jobs, newest first (dead workers' running jobs are marked failed first)."""
        jobs = self._read_all()
        if any(job.status == "running" for job in jobs):
            self.reap_dead()
            jobs = self._read_all()
        return list(reversed(jobs))

    def cancel(self, job_id: str) -> Job:
        """Ask job ``job_id`` to stop: a queued job is cancelled at once, a running one at its next check.

        Returns:
            The job's state right after the request (a running job may still show "running" briefly).
        """
        job = self.get(job_id)
        if job.is_final:
            return job
        atomic_write_bytes(self._cancel_path(job.id), _now().encode())
        with _try_lock(self.lock_path) as locked:
            # Only while no worker runs may this process change a live job's status itself.
            if locked:
                current = self._read(self._job_path(job.id)) or job
                if current.status == "queued":
                    self._write(replace(current, status="cancelled", message="cancelled before start",
                                        finished=_now()))
        return self.get(job.id)

    def wait(self, job_id: str, timeout_s: float = 600.0, poll_s: float = 0.2) -> Job:
        """Block until job ``job_id`` is final or ``timeout_s`` seconds have passed; returns its state."""
        deadline = time.monotonic() + timeout_s
        job = self.get(job_id)
        while not job.is_final and time.monotonic() < deadline:
            time.sleep(poll_s)
            job = self.get(job_id)
        return job

    def read_log(self, job_id: str, max_chars: int = 20_000) -> str:
        """The last ``max_chars`` characters of the job's log ("" before it starts)."""
        path = self.root / f"{paths.safe_name(job_id, 'job id')}.log"
        if not path.exists():
            return ""
        text = path.read_text(errors="replace")
        return text[-max_chars:]

    def worker_running(self) -> bool:
        """True while a worker process holds the lock."""
        with _try_lock(self.lock_path) as locked:
            return not locked

    def reap_dead(self, start_next: bool = True) -> list[Job]:
        """Mark failed every job still "running" although no worker holds the lock; returns those jobs.

        Args:
            start_next: Start a worker for jobs still queued behind a dead one (else they would wait for
                the next submit or page render).
        """
        _reap_children()
        reaped = []
        with _try_lock(self.lock_path) as locked:
            if not locked:
                return []  # a live worker owns every running job
            for job in self._read_all():
                if job.status == "running":
                    dead = replace(job, status="failed", error=DEAD_WORKER_MESSAGE,
                                   message=DEAD_WORKER_MESSAGE, finished=_now(), pid=None)
                    self._write(dead)
                    _append_log(Path(job.log_path), f"{_now()} {DEAD_WORKER_MESSAGE}")
                    reaped.append(dead)
        if reaped and start_next:
            self.ensure_worker()
        return reaped

    def ensure_worker(self) -> bool:
        """Start a worker process when jobs are queued and none is running.

        Returns:
            True if a new worker process was started.
        """
        self.reap_dead(start_next=False)
        if not any(job.status == "queued" for job in self._read_all()):
            return False
        if self.worker_running():
            return False
        env = dict(os.environ)
        # Idle OpenMP threads sleep instead of spinning: on a shared CPU spinning makes torch steps many
        # times slower; on a quiet one it costs next to nothing. An explicit setting is kept.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        with open(self.root / "worker.log", "ab") as worker_log:
            process = subprocess.Popen(
                [sys.executable, "-m", "zeal_core.jobs", "worker", "--root", str(self.root)],
                stdin=subprocess.DEVNULL, stdout=worker_log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # survives the app's process group (Ctrl+C, page reloads)
                cwd=str(paths.PROJECT_ROOT),
            )
        _STARTED_WORKERS.append(process)
        log.info("started job worker pid %d", process.pid)
        return True

    # -- the worker side ------------------------------------------------------------------------------
    def _next_queued(self) -> Job | None:
        return next((job for job in self._read_all() if job.status == "queued"), None)

    def _execute(self, job: Job) -> Job:
        """Run one queued job in this process (the caller holds the worker lock); returns its final state."""
        log_path = Path(job.log_path or self.root / f"{job.id}.log")
        cancel_path = self._cancel_path(job.id)
        if cancel_path.exists():
            final = replace(job, status="cancelled", message="cancelled before start", finished=_now())
            self._write(final)
            return final
        job = replace(job, status="running", started=_now(), pid=os.getpid(), message="starting",
                      log_path=str(log_path))
        self._write(job)
        handler = logging.FileHandler(log_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root_logger = logging.getLogger()
        root_logger.addHandler(handler)
        reporter = _JobProgress(self, job, log_path)
        token = _FileCancelToken(cancel_path)
        try:
            log.info("job %s (%s) started with params %s", job.id, job.kind, json.dumps(job.params))
            result = job_kind_info(job.kind).run(job.params, reporter, token)
            final = replace(reporter.job, status="done", progress=1.0, result=result, message="done",
                            finished=_now())
        except Cancelled:
            final = replace(reporter.job, status="cancelled", message="cancelled by request", finished=_now())
        except ZealError as error:
            log.error("job %s failed: %s", job.id, error)
            final = replace(reporter.job, status="failed", error=str(error), message=str(error),
                            finished=_now())
        except Exception as error:  # any bug in the work: keep the worker alive for the next job
            log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
            reason = f"{type(error).__name__}: {error}"
            final = replace(reporter.job, status="failed", error=reason, message=reason, finished=_now())
        finally:
            root_logger.removeHandler(handler)
            handler.close()
        final = replace(final, pid=None)
        self._write(final)
        reason = f": {final.error}" if final.error else ""
        _append_log(log_path, f"{final.finished} job {final.status}{reason}")
        return final


class _JobProgress:
    """Progress callback of a running job: updates the job file at most 4 times a second and logs lines."""

    def __init__(self, queue: JobQueue, job: Job, log_path: Path) -> None:
        self.queue = queue
        self.job = job
        self.log_path = log_path
        self._last_write = 0.0
        self._last_line = ""

    def __call__(self, event: ProgressEvent) -> None:
        fraction = event.fraction
        self.job = replace(
            self.job,
            progress=self.job.progress if fraction is None else round(fraction, 4),
            message=event.message or self.job.message,
            stage=event.stage,
            metrics={key: value for key, value in event.metrics.items() if _is_json_scalar(value)},
        )
        now = time.monotonic()
        final_step = fraction is not None and fraction >= 1.0
        if final_step or now - self._last_write >= PROGRESS_WRITE_INTERVAL_S:
            self._last_write = now
            self.queue._write(self.job)
            line = f"[{event.stage}] {event.message}".rstrip()
            if line != self._last_line:
                self._last_line = line
                _append_log(self.log_path, f"{_now()} {line}")


def _is_json_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


def _append_log(path: Path, line: str) -> None:
    with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


def _reap_children() -> None:
    """Collect the exit status of finished worker processes this process started (avoids zombies)."""
    for process in list(_STARTED_WORKERS):
        if process.poll() is not None:
            _STARTED_WORKERS.remove(process)


def run_worker(root: Path | str | None = None, lock_wait_s: float = WORKER_LOCK_WAIT_S) -> int:
    """Run queued jobs oldest first until none remain; returns how many ran (0 if another worker runs).

    Holds the queue's lock throughout, so two workers never run at once. After the queue looks empty the
    lock is released and the queue looked at once more: a job submitted in between (whose ``ensure_worker``
    saw the lock held) is then still picked up.
    """
    queue = JobQueue(root)
    ran = 0
    wait_s = lock_wait_s
    while True:
        with _try_lock(queue.lock_path, wait_s=wait_s) as locked:
            if not locked:
                return ran
            while (job := queue._next_queued()) is not None:
                queue._execute(job)
                ran += 1
        if queue._next_queued() is None:
            return ran
        # A job arrived just as the lock was let go; if another worker took the lock meanwhile, it runs it.


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zeal_core.jobs", description="Zeal job worker")
    actions = parser.add_subparsers(dest="action", required=True)
    worker = actions.add_parser("worker", help="run queued jobs until none remain")
    worker.add_argument("--root", default=None, help="job folder (default: state_dir()/jobs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    ran = run_worker(args.root)
    log.info("worker %d exits after %d job(s)", os.getpid(), ran)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
