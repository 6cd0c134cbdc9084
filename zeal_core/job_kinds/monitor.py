"""Job kind ``monitor``: simulate a drifting stream with a detector and a retrain policy."""

from __future__ import annotations

from typing import Any

from zeal_core.jobs.params import MonitorParams
from zeal_core.progress import CancelToken, ProgressCallback


def run_monitor(params: dict[str, Any], progress: ProgressCallback, cancel: CancelToken) -> dict[str, Any]:
    """``zeal_core.monitor.simulate`` with the job's schedule and monitor settings."""
    from zeal_core.monitor import MonitorConfig, Schedule, simulate

    job = MonitorParams(**params)  # checked when the job was submitted
    config = MonitorConfig.from_dict(job.config)
    result = simulate(job.model, job.dataset, Schedule.parse(job.schedule), config, progress=progress,
                      cancel=cancel, device=job.device)
    return result.to_dict()
