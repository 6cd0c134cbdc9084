"""Job kinds: a registry by name, like the strategies and detectors; each kind lives in a module of its own.

A kind is ``function(params, progress, cancel) -> JSON-ready result``. The built-in kinds are registered
below by the function's import path (``"module:function"``, resolved only when a job of the kind runs, as
task queues such as Celery name their tasks), and live in ``zeal_core.job_kinds``: the queue and worker
here stay below everything a job does (training, retraining, the monitor, the check service), so no
package imports back into them. ``@register_job_kind(name, description)`` registers a function directly
(plug-ins and tests).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeal_core.jobs.params import (
    AdaptHistoryParams,
    MonitorParams,
    RetrainParams,
    check_train_params,
    checked,
)
from zeal_core.plugins import Registry
from zeal_core.progress import CancelToken, ProgressCallback

JobRunner = Callable[[dict[str, Any], ProgressCallback, CancelToken], dict[str, Any]]


@dataclass(frozen=True)
class JobKind:
    """A named kind of job and the function that runs it in the worker."""

    name: str  # e.g. "train"
    description: str  # one line for the app and ``--help``
    target: str | JobRunner  # "module:function" (imported when a job runs) or the function itself
    check: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # params -> checked params, at submit

    def runner(self) -> JobRunner:
        """The function that runs jobs of this kind."""
        if callable(self.target):
            return self.target
        module, _, function = self.target.partition(":")
        return getattr(importlib.import_module(module), function)

    def run(self, params: dict[str, Any], progress: ProgressCallback, cancel: CancelToken) -> dict[str, Any]:
        """Run one job of this kind; returns its JSON-ready result."""
        return self.runner()(params, progress, cancel)


_KINDS: Registry[JobKind] = Registry("job kind")


def register_job_kind(name: str, description: str) -> Callable[[JobRunner], JobRunner]:
    """Decorator: make ``function(params, progress, cancel) -> dict`` runnable as jobs of kind ``name``."""

    def decorate(function: JobRunner) -> JobRunner:
        _KINDS.add(name, JobKind(name=name, description=description, target=function))
        return function

    return decorate


def register_job_target(name: str, description: str, target: str,
                        params: type | Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
    """Register kind ``name`` run by the function at ``target`` ("module:function").

    ``params``: the kind's parameters dataclass (submitted params are built into it strictly, defaults
    filled in), or a function that checks them; None accepts any JSON-ready params.
    """
    if ":" not in target:
        raise ValueError(f"job kind {name!r}: target {target!r} must be 'module:function'")
    check = params
    if isinstance(params, type):
        def check(values: dict[str, Any], cls: type = params) -> dict[str, Any]:
            return checked(cls, values, name)
    _KINDS.add(name, JobKind(name=name, description=description, target=target, check=check))


# The built-in kinds (each in its own module of zeal_core.job_kinds): name -> (target, description, params).
BUILT_IN_KINDS = {
    "train": ("zeal_core.job_kinds.train:run_train",
              "train a model and register it (params: dataset, activate, classes, device, TrainConfig "
              "fields)", check_train_params),
    "retrain": ("zeal_core.job_kinds.retrain:run_retrain",
                "adapt a model to a drift (params: model, strategy, drift, dataset, options, guard, "
                "activate)", RetrainParams),
    "adapt-history": ("zeal_core.job_kinds.adapt_history:run_adapt_history",
                      "adapt a model on the stored images of drifted checks (params: model, dataset, "
                      "strategy, check_ids, history, promote, margin, options)", AdaptHistoryParams),
    "monitor": ("zeal_core.job_kinds.monitor:run_monitor",
                "simulate a drifting stream with detector and retrain policy (params: model, schedule, "
                "config)", MonitorParams),
}
for _name, (_target, _description, _params) in BUILT_IN_KINDS.items():
    register_job_target(_name, _description, _target, _params)


def list_job_kinds() -> list[str]:
    """Names of the registered job kinds."""
    return sorted(_KINDS.names())


def job_kind_info(name: str) -> JobKind:
    """The registered kind ``name``.

    Raises:
        ConfigError: No such kind.
    """
    return _KINDS.get(name)


def card_summary(card: Any) -> dict[str, Any]:
    """The JSON-ready part of a model card a job result needs."""
    return {
        "version": card.version,
        "dataset": card.dataset,
        "parent": card.parent,
        "strategy": card.strategy,
        "drift_spec": card.drift_spec,
        "metrics": card.metrics,
    }
