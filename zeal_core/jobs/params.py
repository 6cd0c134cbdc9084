"""The parameters of the built-in job kinds, one frozen dataclass each, checked when a job is submitted.

A job's parameters are stored as JSON in its file and read by the worker; checking them at ``submit``
(``config.build``: unknown keys and wrong types are a ``ConfigError`` naming the kind and the field) means
a typo fails in the page or command that made it, not minutes later in the worker. Defaults are written
here once; the runners in ``zeal_core.job_kinds`` read the checked dataclass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from zeal_core.config import build
from zeal_core.policy import MAX_CLEAN_DROP


@dataclass(frozen=True)
class RetrainParams:
    """``retrain``: adapt a model to a drift spec (the Retrain button, ``zeal retrain --background``)."""

    model: str  # parent version ("active", "latest" or an id)
    strategy: str  # a registered strategy (``retrain.list_strategies()``)
    drift: str  # the drift spec to adapt to (labelled strategies draw from it)
    dataset: str | None = None  # the model's dataset when None
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    options: dict[str, Any] = field(default_factory=dict)  # the strategy's own options, e.g. {"epochs": 2}
    guard: dict[str, Any] | None = None  # the guard's margins (``GuardConfig`` fields); None: its defaults
    activate: bool = False  # make the result active, only when the guard passed it


@dataclass(frozen=True)
class AdaptHistoryParams:
    """``adapt-history``: adapt on the stored images of drifted checks (the history's retrain policy)."""

    model: str  # the version the checks were made with
    strategy: str  # a label-free strategy
    check_ids: list[int]  # the drifted checks whose images to adapt on
    history: str  # the history database's path
    dataset: str | None = None  # the model's dataset when None
    promote: str = "manual"  # "auto": make the result active when the guard passed it; "manual": never
    margin: float = MAX_CLEAN_DROP  # share: the guard's clean margin (clean >= parent's minus this)
    options: dict[str, Any] = field(default_factory=dict)  # the strategy's own options
    device: str = "auto"  # where to adapt


@dataclass(frozen=True)
class MonitorParams:
    """``monitor``: simulate a drifting stream with a detector and a retrain policy."""

    model: str  # the deployed version at the start
    schedule: str  # the stream (``monitor.Schedule`` text)
    config: dict[str, Any] = field(default_factory=dict)  # ``MonitorConfig`` fields
    dataset: str | None = None  # the model's dataset when None
    device: str = "auto"  # where to check and adapt


def checked(cls: type, params: dict[str, Any], kind: str) -> dict[str, Any]:
    """``params`` built strictly into ``cls`` (defaults filled in), back as a JSON-ready dict."""
    return dataclasses.asdict(build(cls, params, f"{kind} job parameters"))


def check_train_params(params: dict[str, Any]) -> dict[str, Any]:
    """``train``: ``dataset``, ``device``, ``activate``, ``classes``, and the rest ``TrainConfig`` overrides,
    checked against the dataset's default recipe (``config.override``: unknown fields are an error)."""
    from zeal_core.config import override
    from zeal_core.train import default_config

    overrides = {key: value for key, value in params.items()
                 if key not in ("dataset", "device", "activate", "classes")}
    override(default_config(str(params.get("dataset", "digits"))), overrides, "train job parameters")
    return dict(params)
