"""Background jobs: long work (train, retrain, monitor, ...) runs in a worker process, its state on disk.

``JobQueue`` (queue.py) holds the job files and starts the worker; the worker (worker.py) runs one job at
a time; a job kind (kinds.py) is a function registered by name, the built-in ones each in a module of
``zeal_core.job_kinds`` (train, retrain, adapt_history, monitor), named by import path so that nothing here
imports what the jobs do. See queue.py for the on-disk layout and how a killed worker is noticed.
"""

from zeal_core.jobs.job import DEAD_WORKER_MESSAGE, FINAL_STATUSES, STATUSES, Job
from zeal_core.jobs.kinds import (
    JobKind,
    card_summary,
    job_kind_info,
    list_job_kinds,
    register_job_kind,
    register_job_target,
)
from zeal_core.jobs.queue import JobQueue
from zeal_core.jobs.worker import run_worker

__all__ = [
    "DEAD_WORKER_MESSAGE",
    "FINAL_STATUSES",
    "STATUSES",
    "Job",
    "JobKind",
    "JobQueue",
    "card_summary",
    "job_kind_info",
    "list_job_kinds",
    "register_job_kind",
    "register_job_target",
    "run_worker",
]
