"""Job kind ``monitor``: simulate a drifting stream with a detector and a retrain policy."""

from __future__ import annotations

from typing import Any

from zeal_core.progress import CancelToken, ProgressCallback


def run_monitor(params: dict[str, Any], progress: ProgressCallback, cancel: CancelToken) -> dict[str, Any]:
    """``zeal_core.monitor.simulate`` with the job's schedule and monitor settings."""
    from zeal_core.monitor import MonitorConfig, Schedule, simulate

    config = MonitorConfig.from_dict(params.get("config") or {})
    result = simulate(params["model"], params.get("dataset"), Schedule.parse(params["schedule"]), config,
                      progress=progress, cancel=cancel, device=params.get("device", "auto"))
    return result.to_dict()
