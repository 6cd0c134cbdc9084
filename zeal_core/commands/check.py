"""``check``: test real image files against the model's fitted reference; exit 0 no drift, 1 drift, 2 error.

Made for cron and CI::

    python -m zeal_core check /data/incoming/2026-12-01/ --json > report.json || alert "drift"

Besides the decision it prints the model's estimated accuracy on the images (no labels needed) and a
diagnosis of the drift (which corruption and how strong, a change of class mix, or an unknown shift). The
whole flow is the check service's (``zeal_core.service.CheckService.check_files``): files that cannot be
images are left out before the model loads; the reference, the detectors' settings and the diagnosis's
warm-up are the lab's check profile's, kept on disk next to the model, so the first check of a model fits
them (about a minute for the digits on 2 CPU cores) and every later process loads them in well under a
second. ``--no-diagnosis`` skips the diagnosis.

Every check is recorded in the history (``python -m zeal_core history``) unless ``--no-record``; with the
retrain policy switched on, enough drifted checks queue an adaptation job, and a webhook set with
``python -m zeal_core settings --set webhook_url=...`` is told about drift. A check whose recording fails
(damaged, read-only or locked history) still prints its report and exits by its decision, with a warning
on stderr and ``"recorded": false``: a fault of the history is never read as drift.

A batch larger than ``--max-images`` (default ``ZEAL_MAX_CHECK_N``, 5,000) is checked on a seeded random
subset of that size (``"sampled"`` in the output, and the report's source says so).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add the ``check`` command."""
    command = subparsers.add_parser(
        "check", parents=[parent],
        help="test image files against the reference (exit 0 no drift, 1 drift, 2 error)",
        description="Decode the images (files, folders searched recursively, or globs), embed them with the "
                    "model and test them against its clean held-out reference with the lab's check profile "
                    "(`settings`). The decision corrects for testing several detectors (Bonferroni). Exit "
                    "code 0: no drift; 1: drift; 2: an error (bad input, no model).")
    command.add_argument("images", nargs="+", help="image files, folders or glob patterns ('*.png')")
    command.add_argument("--model", default="active", help="version id, 'active' (default) or 'latest'")
    command.add_argument("--profile", default=None,
                         help="check profile (standard, full, quick; default: the lab's, see `settings`)")
    command.add_argument("--reference-n", type=int, default=None,
                         help="override: reference size (default: the profile's)")
    command.add_argument("--detector", default=None,
                         help="override: detector name, comma-separated names, or 'all' (default: the "
                              "profile's)")
    command.add_argument("--alpha", type=float, default=None,
                         help="override: family-wise significance level of the decision (default: the "
                              "profile's, 0.05)")
    command.add_argument("--permutations", type=int, default=None,
                         help="override: permutations of the kernel tests (default: the profile's)")
    command.add_argument("--seed", type=int, default=None,
                         help="override: seeds the reference draw and the tests")
    command.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    command.add_argument("--per-image", action="store_true",
                         help="list every image (prediction, confidence, drift score) in the output")
    command.add_argument("--no-diagnosis", action="store_true",
                         help="skip the diagnosis (saves its one-off warm-up; the accuracy estimate stays)")
    command.add_argument("--no-record", action="store_true", help="do not record the check in the history")
    command.add_argument("--max-images", type=int, default=None,
                         help="check at most this many images, a seeded random subset of a larger batch "
                              "(default ZEAL_MAX_CHECK_N, 5000)")
    command.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    """Run the service's file check; the result's ``exit_code`` is 1 on drift."""
    from zeal_core.cli import stderr_progress
    from zeal_core.reference import PARTS
    from zeal_core.service import CheckService

    overrides = {"reference_n": args.reference_n, "alpha": args.alpha, "seed": args.seed,
                 "permutations": args.permutations, "detectors": _detectors(args.detector)}
    service = CheckService(args.profile, overrides=overrides, device=args.device, progress=stderr_progress)
    parts = [part for part in service.profile.parts if not (args.no_diagnosis and part == "diagnosis")]
    outcome = service.check_files(args.images, version=args.model, record=not args.no_record, origin="cli",
                                  parts=[part for part in PARTS if part in parts],
                                  max_images=args.max_images)
    output = _output(outcome.report, per_image=args.per_image)
    if outcome.diagnosis_error:
        output["cause"] = f"unavailable ({outcome.diagnosis_error})"
    output.update(outcome.to_dict())
    output["seconds"] = round(outcome.seconds or 0.0, 3)
    return output


def _detectors(text: str | None) -> tuple[str, ...] | None:
    """``--detector``: None keeps the profile's; "all" is every registered detector."""
    if text is None:
        return None
    from zeal_core.drift import parse_detector_names

    names = parse_detector_names(text)
    return () if text.strip() == "all" else tuple(names)


def _output(report: Any, *, per_image: bool) -> dict[str, Any]:
    from zeal_core.reference import estimate_text

    values = report.to_dict(per_image=per_image)
    decision = values["decision"]
    lines = []
    for result in values["detectors"]:
        flag = "DRIFT" if result["p_value"] < decision["threshold"] else "-"
        lines.append(f"  {result['detector']:<8} p={result['p_value']:<9.3g} {flag:<6}"
                     f"statistic={result['statistic']:<10.4g}")
    table = "\n".join(lines)
    return {"ok": True, "drift": decision["drift"], "exit_code": 1 if decision["drift"] else 0,
            "summary": report.summary(), "rule": decision["rule"], "table": "\n" + table,
            "estimated_accuracy": estimate_text(report.estimated_accuracy),
            "cause": report.diagnosis_summary, **values}
