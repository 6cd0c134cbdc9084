"""A simulated production stream: a drift schedule (schedule.py), the settings and records (results.py) and
the simulation (simulate.py), which checks every batch against the fitted reference and lets the retrain
policy act."""

from zeal_core.monitor.results import MonitorBatch, MonitorConfig, MonitorResult, RetrainEvent
from zeal_core.monitor.schedule import MAX_BATCHES, Schedule
from zeal_core.monitor.simulate import P_VALUE_FLOOR, RetrainHook, simulate

__all__ = [
    "MAX_BATCHES",
    "P_VALUE_FLOOR",
    "MonitorBatch",
    "MonitorConfig",
    "MonitorResult",
    "RetrainEvent",
    "RetrainHook",
    "Schedule",
    "simulate",
]
