"""The worker process: ``python -m zeal_core.jobs worker`` runs queued jobs oldest first until none remain."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from zeal_core.jobs.locking import try_lock
from zeal_core.jobs.queue import JobQueue
from zeal_core.settings import lower_job_priority

log = logging.getLogger(__name__)

WORKER_LOCK_WAIT_S = 2.0  # s a starting worker waits for the lock (another process may hold it briefly)


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
        with try_lock(queue.lock_path, wait_s=wait_s) as locked:
            if not locked:
                return ran
            while (job := queue.next_queued()) is not None:
                queue.run_job(job)
                ran += 1
        if queue.next_queued() is None:
            return ran
        # A job arrived just as the lock was let go; if another worker took the lock meanwhile, it runs it.


def main(argv: list[str] | None = None) -> int:
    """The worker's command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m zeal_core.jobs", description="Zeal job worker")
    actions = parser.add_subparsers(dest="action", required=True)
    worker = actions.add_parser("worker", help="run queued jobs until none remain")
    worker.add_argument("--root", default=None, help="job folder (default: state_dir()/jobs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    # Jobs run beside people waiting on pages: they take the CPU those leave (settings.lower_job_priority).
    log.info("worker %d runs with %s", os.getpid(), lower_job_priority())
    ran = run_worker(args.root)
    log.info("worker %d exits after %d job(s)", os.getpid(), ran)
    return 0
