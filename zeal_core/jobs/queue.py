"""The job queue: submit, inspect and cancel jobs on disk, and start the worker process that runs them.

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

import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from zeal_core import paths
from zeal_core.errors import Cancelled, ConfigError, ZealError
from zeal_core.fileio import atomic_write_bytes
from zeal_core.jobs.job import DEAD_WORKER_MESSAGE, Job, now
from zeal_core.jobs.kinds import job_kind_info
from zeal_core.jobs.locking import FileCancelToken, try_lock
from zeal_core.progress import ProgressEvent

log = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL_S = 0.25  # s between two progress writes of one job file (<= 4 writes per second)

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

    def save(self, job: Job) -> None:
        """Write the job's current state (atomically: readers see the old or the new state)."""
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
            params: JSON-ready parameters for the kind, checked by its parameters dataclass
                (``zeal_core.jobs.params``) and stored with its defaults filled in.
            start_worker: Start a worker process if none is running (False only for tests and tools that
                run ``run_worker`` themselves).

        Raises:
            ConfigError: Unknown kind, parameters the kind does not take or of the wrong type, or not
                JSON-ready.
        """
        info = job_kind_info(kind)
        params = dict(params or {})
        if info.check is not None:  # the kind's parameters dataclass: a typo fails here, not in the worker
            params = info.check(params)
        try:
            json.dumps(params)
        except TypeError as error:
            raise ConfigError(f"job parameters must be JSON-ready (str, numbers, lists, dicts): {error}"
                              ) from None
        created = now()
        stamp = datetime.fromisoformat(created).strftime("%Y%m%d-%H%M%S-%f")
        job_id = f"{stamp}-{kind}-{secrets.token_hex(2)}"
        job = Job(id=job_id, kind=kind, params=params, created=created, message="queued",
                  log_path=str(self.root / f"{job_id}.log"))
        self.save(job)
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
        atomic_write_bytes(self._cancel_path(job.id), now().encode())
        with try_lock(self.lock_path) as locked:
            # Only while no worker runs may this process change a live job's status itself.
            if locked:
                current = self._read(self._job_path(job.id)) or job
                if current.status == "queued":
                    self.save(replace(current, status="cancelled", message="cancelled before start",
                                        finished=now()))
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
        with try_lock(self.lock_path) as locked:
            return not locked

    def reap_dead(self, start_next: bool = True) -> list[Job]:
        """Mark failed every job still "running" although no worker holds the lock; returns those jobs.

        Args:
            start_next: Start a worker for jobs still queued behind a dead one (else they would wait for
                the next submit or page render).
        """
        _reap_children()
        reaped = []
        with try_lock(self.lock_path) as locked:
            if not locked:
                return []  # a live worker owns every running job
            for job in self._read_all():
                if job.status == "running":
                    dead = replace(job, status="failed", error=DEAD_WORKER_MESSAGE,
                                   message=DEAD_WORKER_MESSAGE, finished=now(), pid=None)
                    self.save(dead)
                    _append_log(Path(job.log_path), f"{now()} {DEAD_WORKER_MESSAGE}")
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

    # -- the worker side (only the process holding the worker lock calls these) ------------------------
    def next_queued(self) -> Job | None:
        """The oldest queued job, or None."""
        return next((job for job in self._read_all() if job.status == "queued"), None)

    def run_job(self, job: Job) -> Job:
        """Run one queued job in this process (the caller holds the worker lock); returns its final state."""
        log_path = Path(job.log_path or self.root / f"{job.id}.log")
        cancel_path = self._cancel_path(job.id)
        if cancel_path.exists():
            final = replace(job, status="cancelled", message="cancelled before start", finished=now())
            self.save(final)
            return final
        job = replace(job, status="running", started=now(), pid=os.getpid(), message="starting",
                      log_path=str(log_path))
        self.save(job)
        handler = logging.FileHandler(log_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root_logger = logging.getLogger()
        root_logger.addHandler(handler)
        reporter = JobProgress(self, job, log_path)
        token = FileCancelToken(cancel_path)
        try:
            log.info("job %s (%s) started with params %s", job.id, job.kind, json.dumps(job.params))
            result = job_kind_info(job.kind).run(job.params, reporter, token)
            final = replace(reporter.job, status="done", progress=1.0, result=result, message="done",
                            finished=now())
        except Cancelled:
            final = replace(reporter.job, status="cancelled", message="cancelled by request", finished=now())
        except ZealError as error:
            log.error("job %s failed: %s", job.id, error)
            final = replace(reporter.job, status="failed", error=str(error), message=str(error),
                            finished=now())
        except Exception as error:  # any bug in the work: keep the worker alive for the next job
            log.error("job %s crashed:\n%s", job.id, traceback.format_exc())
            reason = f"{type(error).__name__}: {error}"
            final = replace(reporter.job, status="failed", error=reason, message=reason, finished=now())
        finally:
            root_logger.removeHandler(handler)
            handler.close()
        final = replace(final, pid=None)
        self.save(final)
        reason = f": {final.error}" if final.error else ""
        _append_log(log_path, f"{final.finished} job {final.status}{reason}")
        return final


class JobProgress:
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
        clock = time.monotonic()
        final_step = fraction is not None and fraction >= 1.0
        if final_step or clock - self._last_write >= PROGRESS_WRITE_INTERVAL_S:
            self._last_write = clock
            self.queue.save(self.job)
            line = f"[{event.stage}] {event.message}".rstrip()
            if line != self._last_line:
                self._last_line = line
                _append_log(self.log_path, f"{now()} {line}")


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

