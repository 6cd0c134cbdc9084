"""``monitor``: run a simulated drifting stream through a model, a detector and a retrain policy."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add the ``monitor`` command."""
    command = subparsers.add_parser(
        "monitor", parents=[parent], help="simulate a drifting stream with detection and a retrain policy",
        description="Schedule: comma-separated spec*batches segments, e.g. clean*10,gaussian_noise:3*20; "
                    "a range ramps over a segment: gaussian_noise:1..5*10 (severity) or "
                    "contrast:4@0.1..1*10 (share of images).")
    command.add_argument("--model", default="active", help="starting version, or 'active' / 'latest'")
    command.add_argument("--schedule", required=True, help="e.g. clean*10,gaussian_noise:3*20")
    command.add_argument("--dataset", default=None, help="dataset name (default: the model's)")
    command.add_argument("--policy", default="bn-adapt",
                         help="retrain strategy the policy uses (zeal retrain --help lists them), or 'none' "
                              "to only observe")
    command.add_argument("--continual", action="store_true",
                         help="adapt online on every batch with the --policy strategy (a label-free one: "
                              "bn-adapt, tent, roid, ...) instead of retraining after alarms")
    command.add_argument("--alarms", type=int, default=3, help="k: alarms within the window that trigger it")
    command.add_argument("--window", type=int, default=5, help="batches the alarm count looks back over")
    command.add_argument("--cooldown", type=int, default=10, help="batches between two retrains, at least")
    command.add_argument("--detector", default="mmd", help="batch drift detector")
    command.add_argument("--stream-detector", default="page_hinkley", help="change detector, or 'none'")
    command.add_argument("--alpha", type=float, default=0.05, help="significance level of the batch test")
    command.add_argument("--batch-size", type=int, default=64, help="images per stream batch")
    command.add_argument("--reference-size", type=int, default=None,
                         help="clean held-out reference images (default: the whole reference half)")
    command.add_argument("--seed", type=int, default=0)
    command.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    command.add_argument("--batches", action="store_true", help="include every batch record in the output")
    command.add_argument("--background", action="store_true",
                         help="queue it as a job and return the job id at once")
    command.set_defaults(handler=_monitor)


def _monitor(args: argparse.Namespace) -> dict:
    from zeal_core.cli import stderr_progress
    from zeal_core.monitor import MonitorConfig, Schedule, simulate

    config = MonitorConfig(
        batch_size=args.batch_size, reference_size=args.reference_size, detector=args.detector,
        alpha=args.alpha, stream_detector=None if args.stream_detector == "none" else args.stream_detector,
        strategy=None if args.policy == "none" else args.policy, alarms_to_retrain=args.alarms,
        window=args.window, cooldown=args.cooldown, seed=args.seed, continual=args.continual)
    schedule = Schedule.parse(args.schedule)
    if args.background:
        from zeal_core.jobs import JobQueue

        job = JobQueue().submit("monitor", {"model": args.model, "dataset": args.dataset,
                                            "schedule": schedule.text, "config": config.to_dict(),
                                            "device": args.device})
        return {"job": job.id, "status": job.status, "log": job.log_path}
    result = simulate(args.model, args.dataset, schedule, config, device=args.device,
                      progress=stderr_progress)
    out = result.to_dict()
    if not args.batches:
        out.pop("batches")
    return out
