"""``check``: test real image files against the model's fitted reference; exit 0 no drift, 1 drift, 2 error.

Made for cron and CI::

    python -m zeal_core check /data/incoming/2026-12-01/ --json > report.json || alert "drift"

Besides the decision it prints the model's estimated accuracy on the images (no labels needed) and a
diagnosis of the drift (which corruption and how strong, a change of class mix, or an unknown shift). The
diagnosis learns the signatures of 95 synthetic shifts: the first run per model builds the shift bank (about
a minute for the digits on 2 CPU cores) and keeps it in the state folder; later runs load it and refit the
signatures (15-50 s for the digits). ``--no-diagnosis`` skips it.

Every check is recorded in the history (``python -m zeal_core history``) unless ``--no-record``; with the
retrain policy switched on, enough drifted checks queue an adaptation job. A check whose recording fails
(damaged, read-only or locked history) still prints its report and exits by its decision, with a warning
on stderr and ``"recorded": false``: a fault of the history is never read as drift.

A batch larger than ``--max-images`` (default ``ZEAL_MAX_CHECK_N``, 5,000) is checked on a seeded random
subset of that size (``"sampled"`` in the output, and the report's source says so).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from zeal_core.errors import Cancelled, DataError, ZealError


def register(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    """Add the ``check`` command."""
    command = subparsers.add_parser(
        "check", parents=[parent],
        help="test image files against the reference (exit 0 no drift, 1 drift, 2 error)",
        description="Decode the images (files, folders searched recursively, or globs), embed them with the "
                    "model and test them against its clean held-out reference with every detector. The "
                    "decision corrects for testing several detectors (Bonferroni). Exit code 0: no drift; "
                    "1: drift; 2: an error (bad input, no model).")
    command.add_argument("images", nargs="+", help="image files, folders or glob patterns ('*.png')")
    command.add_argument("--model", default="active", help="version id, 'active' (default) or 'latest'")
    command.add_argument("--reference-n", type=int, default=None,
                         help="reference size (default: the whole clean held-out reference half)")
    command.add_argument("--detector", default="all", help="detector name, comma-separated names, or 'all'")
    command.add_argument("--alpha", type=float, default=0.05,
                         help="family-wise significance level of the decision (default 0.05)")
    command.add_argument("--seed", type=int, default=0, help="seeds the reference draw and the tests")
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
    """Find, decode, check and record; the result's ``exit_code`` is 1 on drift."""
    from zeal_core.cli import stderr_progress
    from zeal_core.data.files import decode_paths, find_images, sample_paths
    from zeal_core.drift import parse_detector_names
    from zeal_core.models.registry import ModelRegistry
    from zeal_core.reference import PARTS, ReferenceConfig, get_reference

    start = time.perf_counter()
    names = parse_detector_names(args.detector)
    config = ReferenceConfig(reference_n=args.reference_n, seed=args.seed, alpha=args.alpha,
                             detectors=tuple(names))
    paths, problems = find_images(args.images)
    if not paths:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in problems) or "nothing given"
        raise DataError(f"no image files to check ({reasons}): name files, folders or globs such as "
                        "'incoming/*.jpg'")
    paths, sampled = sample_paths(paths, _max_images(args), args.seed)
    registry = ModelRegistry()
    reference = get_reference(args.model, config=config, device=args.device, registry=registry,
                              progress=stderr_progress)
    decode_start = time.perf_counter()
    images, kept, skipped = decode_paths(paths, reference.image_size, progress=stderr_progress)
    decode_seconds = time.perf_counter() - decode_start
    skipped = problems + skipped
    if images.shape[0] < 2:
        listed = "; ".join(f"{name}: {reason}" for name, reason in skipped[:5])
        unread = f" ({listed})" if listed else ""
        raise DataError(f"only {images.shape[0]} image(s) could be read from the {len(paths)} file(s) given"
                        f"{unread}: a check needs at least 2 images, 30 or more for power; name more files, "
                        "folders or globs, e.g. `zeal check incoming/`")
    parts = [part for part in PARTS if not (args.no_diagnosis and part == "diagnosis")]
    diagnosis_error = _warm_diagnosis(reference) if "diagnosis" in parts else None
    if diagnosis_error:
        parts.remove("diagnosis")
    report = reference.check(images, file_names=kept, skipped=skipped, timings={"decode": decode_seconds},
                             parts=parts, source=sampled["source"] if sampled else None)
    output = _output(report, per_image=args.per_image)
    output["sampled"] = sampled
    if diagnosis_error:
        output["cause"] = f"unavailable ({diagnosis_error})"
    output.update({"recorded": False} if args.no_record else _record(report, images, reference))
    output["seconds"] = round(time.perf_counter() - start, 3)
    return output


def _warm_diagnosis(reference: Any) -> str | None:
    """Fit the diagnosis (once per model; the bank is kept on disk). A check never fails because the
    diagnosis could not be fitted: the reason is returned and logged, and the check goes on without it."""
    from zeal_core.cli import log, stderr_progress

    try:
        reference.warm_label_free(progress=stderr_progress)
    except (KeyboardInterrupt, Cancelled):
        raise
    except Exception as error:  # the decision and the estimate do not depend on it
        log.warning("diagnosis unavailable: %s: %s", type(error).__name__, error)
        return f"{type(error).__name__}: {error}"
    return None


def _max_images(args: argparse.Namespace) -> int:
    from zeal_core.errors import ConfigError
    from zeal_core.settings import get_settings

    limit = args.max_images if args.max_images is not None else get_settings().max_check_n
    if limit < 2:
        raise ConfigError(f"--max-images {limit}: a check needs at least 2 images (30 or more for power)")
    return limit


def _record(report: Any, images: Any, reference: Any) -> dict[str, Any]:
    """Record the check; a failure (damaged, read-only or locked history) is a warning, never the result."""
    from zeal_core.cli import log, unexpected_error_text
    from zeal_core.history import HistoryStore, record_check

    try:
        store = HistoryStore()
        check_id, action = record_check(report, images=images, origin="cli", store=store,
                                        max_side=reference.source.card.model_config.image_size)
    except (KeyboardInterrupt, Cancelled):
        raise
    except Exception as error:  # the decision stands: the exit code must not say otherwise
        reason = str(error) if isinstance(error, ZealError) else unexpected_error_text(error)
        log.warning("warning: the check was not recorded in the history: %s", reason)
        return {"recorded": False, "record_error": reason}
    return {"recorded": True, "check_id": check_id, "history": str(store.path), "policy": action}


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
