"""``retrain``: adapt a model to a drift with a strategy and save the result as a new version."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add the ``retrain`` command."""
    from zeal_core.commands import describe_lazily

    command = subparsers.add_parser(
        "retrain", parents=[parent], help="adapt a model to a drift with a registered strategy (bn-adapt, "
                                          "tent, roid, finetune, retrain, ...)")
    describe_lazily(command, _describe_strategies)
    command.add_argument("--model", default="active", help="parent version, or 'active' / 'latest'")
    command.add_argument("--strategy", default="bn-adapt",
                         help="a registered strategy (default bn-adapt; the list: zeal retrain --help)")
    command.add_argument("--drift", required=True, help="drift spec, e.g. gaussian_noise:3 or contrast:4@0.5")
    command.add_argument("--dataset", default=None, help="dataset name (default: the model's)")
    command.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    command.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                         help="strategy option (repeatable), e.g. --option epochs=2; VALUE is JSON or text")
    command.add_argument("--max-clean-drop", type=float, default=None, metavar="SHARE",
                         help="the guard's clean-accuracy margin, e.g. 0.02 (2 points; the default)")
    command.add_argument("--require-gain", action="store_true",
                         help="the guard also declines a version that is not credibly better on the drifted "
                              "images by the label-free estimate (one-sided 95 %%); the parent keeps serving")
    command.add_argument("--activate", action="store_true",
                         help="make the new version active if (and only if) the guard passed it")
    command.add_argument("--background", action="store_true",
                         help="queue it as a job (see the app's Jobs panel) and return the job id at once")
    command.set_defaults(handler=_retrain)


def _describe_strategies() -> str:
    from zeal_core.retrain import list_strategies, strategy_info

    return ("Strategies: " + "; ".join(f"{name}: {strategy_info(name).description}"
                                       for name in list_strategies())
            + ". Every new version passes the guard: its clean accuracy and its estimated accuracy on the "
              "drifted images are compared with the parent's; a refused version is saved, marked, and never "
              "activated automatically.")


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=2", "lr=0.001"]`` -> ``{"epochs": 2, "lr": 0.001}`` (values read as JSON, else text)."""
    from zeal_core.config import parse_pairs

    return parse_pairs(pairs, "option", "epochs=2")


def guard_settings(args: argparse.Namespace) -> dict[str, Any] | None:
    """The guard's settings from ``--max-clean-drop`` and ``--require-gain`` (None: its defaults)."""
    from zeal_core.retrain.guard import CREDIBLE_GAIN_Z

    guard: dict[str, Any] = {}
    if args.max_clean_drop is not None:
        guard["max_clean_drop"] = args.max_clean_drop
    if args.require_gain:
        guard["min_gain_z"] = CREDIBLE_GAIN_Z
    return guard or None


def _retrain(args: argparse.Namespace) -> dict:
    from zeal_core.cli import stderr_progress
    from zeal_core.retrain import strategy_info

    strategy_info(args.strategy)  # an unknown name fails here, listing the registered ones
    options = parse_options(args.option)
    guard = guard_settings(args)
    if args.background:
        from zeal_core.jobs import JobQueue

        params = {"model": args.model, "strategy": args.strategy, "drift": args.drift,
                  "dataset": args.dataset, "device": args.device, "options": options, "guard": guard,
                  "activate": args.activate}
        job = JobQueue().submit("retrain", params)
        return {"job": job.id, "status": job.status, "log": job.log_path}
    from zeal_core.models.registry import ModelRegistry
    from zeal_core.retrain import adapt, verdict_of

    card = adapt(args.strategy, args.model, args.dataset, args.drift, device=args.device,
                 progress=stderr_progress, options=options or None, guard=guard)
    verdict = verdict_of(card)
    activated = args.activate and verdict is not None and verdict.passed
    if activated:
        ModelRegistry().set_active(card.version)
    metrics = card.metrics
    return {
        "version": card.version, "parent": card.parent, "strategy": card.strategy,
        "drift_spec": card.drift_spec,
        "clean_before": metrics["clean_before"], "clean_after": metrics["clean_after"],
        "drifted_before": metrics["drifted_before"], "drifted_after": metrics["drifted_after"],
        "recovered_share": metrics["recovered_share"], "seconds": metrics["seconds"],
        "cpu_seconds": metrics.get("cpu_seconds"),
        "details": metrics.get("details", {}),
        "guard_passed": verdict.passed if verdict else None,
        "guard": verdict.summary if verdict else None,
        "activated": activated,
    }
