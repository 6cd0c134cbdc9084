"""Background jobs: long work (train, retrain, monitor, ...) runs in a worker process, its state on disk.

``JobQueue`` (queue.py) holds the job files and starts the worker; the worker (worker.py) runs one job at
a time; a job kind (kinds.py) is a function registered by name, each in a module of its own
(train_job.py, retrain_job.py, monitor_job.py). See queue.py for the on-disk layout and how
a killed worker is noticed.
"""

# Importing the kind modules registers them.
from zeal_core.jobs import monitor_job as _monitor_job  # noqa: F401
from zeal_core.jobs import retrain_job as _retrain_job  # noqa: F401
from zeal_core.jobs import train_job as _train_job  # noqa: F401
from zeal_core.jobs.job import DEAD_WORKER_MESSAGE, FINAL_STATUSES, STATUSES, Job
from zeal_core.jobs.kinds import JobKind, card_summary, job_kind_info, list_job_kinds, register_job_kind
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
    "run_worker",
]
