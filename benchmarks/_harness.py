"""What every benchmark shares: one record of the machine a number was measured on.

``machine()`` is the one shape: cores, architecture, accelerator, torch threads, load average (a shared
machine is stated as such) and a one-line description for tables. ``python -m benchmarks`` adds it to every
result that does not carry its own (``recorded``), so every ``reports/bench/*.json`` states its machine the
same way.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Callable
from typing import Any

BUSY_SHARE = 0.75  # a 1-minute load average above this share of the cores is stated as "under load"


def machine() -> dict[str, Any]:
    """CPU, threads, accelerator and load now: what every table states."""
    import torch

    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else [float("nan")] * 3
    cores = os.cpu_count() or 1
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    busy = load[0] > BUSY_SHARE * cores
    description = (f"{cores} CPU cores {platform.machine()}, {'GPU ' + gpu if gpu else 'no GPU'}, torch "
                   f"{torch.get_num_threads()} threads" + (f", under load (load average {load[0]:.1f})"
                                                           if busy else ""))
    return {"cpu_count": cores, "arch": platform.machine(), "platform": platform.platform(), "gpu": gpu,
            "torch_threads": torch.get_num_threads(), "load_average": load, "under_load": busy,
            "description": description}


def recorded(handler: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    """``handler`` whose result also holds ``machine`` (taken when it ends) unless it has its own."""

    @functools.wraps(handler)
    def run(args: Any) -> dict[str, Any]:
        result = handler(args)
        if isinstance(result, dict):
            result.setdefault("machine", machine())
        return result

    return run
