"""A job's record: what it is, where it stands, what it produced (the content of ``<id>.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

# Job states; "queued" and "running" are live, the other three are final.
STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINAL_STATUSES = frozenset({"done", "failed", "cancelled"})
DEAD_WORKER_MESSAGE = "worker process died (killed?) — resubmit"


def now() -> str:
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
