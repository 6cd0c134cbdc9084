"""Job kinds: a registry by name, like the strategies and detectors; each kind lives in a module of its own.

A kind is ``function(params, progress, cancel) -> JSON-ready result`` registered with
``@register_job_kind(name, description)``; the worker process looks the kind up by the job's ``kind``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeal_core.plugins import Registry
from zeal_core.progress import CancelToken, ProgressCallback

JobRunner = Callable[[dict[str, Any], ProgressCallback, CancelToken], dict[str, Any]]


@dataclass(frozen=True)
class JobKind:
    """A named kind of job and the function that runs it in the worker."""

    name: str  # e.g. "train"
    description: str  # one line for the app and ``--help``
    run: JobRunner  # (params, progress, cancel) -> JSON-ready result dict


_KINDS: Registry[JobKind] = Registry("job kind")


def register_job_kind(name: str, description: str) -> Callable[[JobRunner], JobRunner]:
    """Decorator: make ``function(params, progress, cancel) -> dict`` runnable as jobs of kind ``name``."""

    def decorate(function: JobRunner) -> JobRunner:
        _KINDS.add(name, JobKind(name=name, description=description, run=function))
        return function

    return decorate


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
