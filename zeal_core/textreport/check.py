"""The ``check`` report in text: decision and rule, detectors, estimate, diagnosis, typical files, record.

It reads the dict ``check`` prints with ``--json`` (``CheckReport.to_dict`` plus the command's own keys), so
the text and the JSON cannot disagree; ``history show`` lays out a stored report with the same functions,
and ``drift`` (a simulated check) reuses the detector table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from zeal_core.textreport import TextOptions, register_formatter
from zeal_core.textreport.generic import render_entry
from zeal_core.textreport.layout import clip, number, percent, safe, table, wrap

TOP_CAUSES = 3  # causes named in the diagnosis sentence
TOP_FILES = 5  # drift-typical and skipped files listed without --verbose
# Keys of an estimate that are not extra notes (anything else short, e.g. a warning, is shown with it).
_ESTIMATE_KEYS = {"estimator", "accuracy", "low", "high", "level", "n", "details"}


@register_formatter("check")
def format_check(result: Mapping[str, Any], options: TextOptions) -> list[str]:
    """The lines of a check's text report."""
    lines = decision_lines(result, options)
    lines += ["", *detector_lines(result.get("detectors") or [], result.get("decision"), options)]
    lines += ["", *estimate_lines(result, options)]
    lines += diagnosis_lines(result, options)
    lines += typical_file_lines(result.get("most_drifted") or [], options)
    lines += skipped_lines(result.get("skipped") or [], options)
    if result.get("images"):
        lines += ["", "Every image (--per-image):",
                  *table(["file", "prediction", "confidence", "drift score"],
                         [[item.get("file") or f"#{item.get('row')}", item.get("prediction"),
                           percent(item.get("confidence")), number(item.get("drift_score"), 3)]
                          for item in result["images"]], options.columns, align="<>>>", stretch=0)]
    if options.verbose:
        lines += verbose_lines(result, options)
    lines += ["", *record_lines(result, options)]
    return lines


def decision_lines(result: Mapping[str, Any], options: TextOptions) -> list[str]:
    """The verdict in capitals, the rule behind it, and what was tested against what."""
    decision = result.get("decision") or {}
    detectors = result.get("detectors") or []
    flagged = decision.get("flagged") or []
    if not decision:
        headline = "NO DECISION: no detector ran"
    elif decision.get("drift"):
        headline = (f"DRIFT: {len(flagged)} of {len(detectors)} detectors flag this batch "
                    f"({', '.join(safe(name) for name in flagged)})")
    else:
        headline = f"NO DRIFT: none of the {len(detectors)} detectors flags this batch"
    if isinstance(result.get("exit_code"), int):
        headline += f"; exit code {result['exit_code']}"
    lines = wrap(headline, options.columns)
    if decision.get("rule"):
        lines += wrap(safe(decision["rule"]), options.columns, indent="      ", first="Rule: ")
    skipped = len(result.get("skipped") or [])
    batch = f"{number(result.get('n'))} images"
    if skipped:
        batch += f" ({skipped} file(s) skipped, listed below)"
    lines += wrap(f"{batch} from {safe(result.get('source') or '-')}", options.columns, indent="       ",
                  first="Batch: ")
    lines += wrap(f"{safe(result.get('version') or '-')} on {safe(result.get('dataset') or '-')}, against "
                  f"{number(result.get('reference_n'))} clean held-out reference images", options.columns,
                  indent="       ", first="Model: ")
    if result.get("spec"):
        lines.append(clip(f"Simulated drift: {safe(result['spec'])}", options.columns))
    return lines


def detector_lines(detectors: Sequence[Mapping[str, Any]], decision: Mapping[str, Any] | None,
                   options: TextOptions) -> list[str]:
    """One row per detector: p-value, statistic, effect size and whether it counts as drift."""
    if not detectors:
        return ["Detectors: none ran"]
    threshold = (decision or {}).get("threshold")
    title = "Detectors" + (f" (drift when p < {number(threshold, 3)})" if threshold is not None else "")
    header = ["detector", "p-value", "statistic", "effect size", "verdict"]
    rows = []
    for item in detectors:
        p_value = item.get("p_value")
        flagged = threshold is not None and isinstance(p_value, (int, float)) and p_value < threshold
        if threshold is None:
            flagged = bool(item.get("is_drift"))
        row = [item.get("detector"), number(p_value, 3), number(item.get("statistic"), 4),
               number(item.get("effect_size"), 3), "DRIFT" if flagged else "-"]
        if options.verbose:
            row.append(f"{item['runtime_s']:.3f} s" if isinstance(item.get("runtime_s"), float) else "-")
        rows.append(row)
    if options.verbose:
        header.append("time")
    return [title + ":", *table(header, rows, options.columns, align="<>>><>"[:len(header)], stretch=0)]


def estimate_text(estimate: Mapping[str, Any]) -> str:
    """``28.6% (90% interval 18.0%-39.5%, shift-calibrated)`` from an estimate's dict."""
    level = estimate.get("level")
    interval = f"{percent(level, 0)} interval " if isinstance(level, (int, float)) else "interval "
    return (f"{percent(estimate.get('accuracy'))} ({interval}{percent(estimate.get('low'))}-"
            f"{percent(estimate.get('high'))}, {safe(estimate.get('estimator') or '-')})")


def estimate_lines(result: Mapping[str, Any], options: TextOptions) -> list[str]:
    """The leading label-free estimate with its interval (every estimator with ``--verbose``)."""
    estimates = result.get("estimates") or []
    lines = []
    if isinstance(result.get("accuracy"), (int, float)):
        lines.append(f"Accuracy (the simulated batch's labels are known): {percent(result['accuracy'])}")
    if not estimates:
        return [*lines, "Estimated accuracy: none (no estimator could run on this batch)"]
    first = estimates[0]
    notes = [f"{label_of(key)}: {safe(value)}" for key, value in first.items()
             if key not in _ESTIMATE_KEYS and isinstance(value, (str, bool)) and value not in (False, "")]
    text = f"{estimate_text(first)} without labels" + (f"; {'; '.join(notes)}" if notes else "")
    lines += wrap(text, options.columns, indent="                    ", first="Estimated accuracy: ")
    if options.verbose and len(estimates) > 1:
        rows = [[item.get("estimator"), percent(item.get("accuracy")), percent(item.get("low")),
                 percent(item.get("high")), percent(item.get("level"), 0)] for item in estimates]
        lines += table(["estimator", "accuracy", "low", "high", "level"], rows, options.columns,
                       align="<>>>>", stretch=0)
    return lines


def label_of(key: Any) -> str:
    """A key as words."""
    return safe(str(key).replace("_", " "))


def cause_phrase(cause: Mapping[str, Any]) -> str:
    """``fog (weather, severity 4.9, score 0.98)``."""
    kind = str(cause.get("kind") or "?")
    family = cause.get("family")
    parts = [safe(family)] if family and str(family) not in kind else []  # not "label shift (label, ...)"
    if isinstance(cause.get("severity"), (int, float)):
        parts.append(f"severity {cause['severity']:.1f}")
    if isinstance(cause.get("score"), (int, float)):
        parts.append(f"score {number(cause['score'], 2)}")
    name = safe(kind.replace("_", " "))
    return f"{name} ({', '.join(parts)})" if parts else name


def diagnosis_sentence(diagnosis: Mapping[str, Any] | None, cause: Any = None) -> str:
    """The diagnosis as one sentence naming its verdict and its top causes."""
    if not diagnosis:
        return f"{safe(cause)}." if cause else "not run."
    verdict = safe(diagnosis.get("verdict") or "unknown")
    summary = safe(diagnosis.get("summary") or verdict)
    causes = [item for item in diagnosis.get("causes") or [] if isinstance(item, Mapping)][:TOP_CAUSES]
    if verdict == "no drift" or not causes:
        return f"{summary}."
    named = [cause_phrase(item) for item in causes]
    listed = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"
    lead = "The nearest known shifts" if verdict == "unknown shift" else "Most likely causes"
    # "covariate shift: fog, severity 2.6 (score 0.93)" names the first cause, which the list repeats.
    head = verdict if summary.startswith(f"{verdict}:") else summary
    return f"{head}. {lead}: {listed}."


def diagnosis_lines(result: Mapping[str, Any], options: TextOptions) -> list[str]:
    """The diagnosis sentence (and, with ``--verbose``, every cause and the class mix)."""
    diagnosis = result.get("diagnosis")
    cause = result.get("cause")
    if not diagnosis and not cause:
        return []
    lines = wrap(diagnosis_sentence(diagnosis, cause), options.columns, indent=" " * 11, first="Diagnosis: ")
    if options.verbose and diagnosis:
        causes = diagnosis.get("causes") or []
        rows = [[str(item.get("kind")), item.get("family") or "-", number(item.get("severity"), 2),
                 number(item.get("score"), 3)] for item in causes]
        if rows:
            lines += table(["cause", "family", "severity", "score"], rows, options.columns, align="<<>>",
                           stretch=0)
        lines += _class_mix_lines(diagnosis, options)
    return lines


def _class_mix_lines(diagnosis: Mapping[str, Any], options: TextOptions) -> list[str]:
    before = diagnosis.get("reference_class_proportions") or {}
    after = diagnosis.get("estimated_class_proportions") or {}
    if not before and not after:
        return []
    keys = dict.fromkeys([*before, *after])
    rows = [[key, percent(before.get(key)), percent(after.get(key))] for key in keys]
    return ["  Class mix (reference -> estimated in this batch):",
            *table(["class", "reference", "batch"], rows, options.columns, indent="    ", align="<>>",
                   stretch=0)]


def typical_file_lines(items: Sequence[Mapping[str, Any]], options: TextOptions) -> list[str]:
    """The most drift-typical files, highest score first (the top few without ``--verbose``)."""
    if not items:
        return []
    shown = items if options.verbose else items[:TOP_FILES]
    rows = [[_score(item.get("score")), item.get("file") or f"image #{item.get('row')}"] for item in shown]
    more = f" (top {len(shown)} of {len(items)})" if len(shown) < len(items) else ""
    return ["", f"Most drift-typical files{more}, score 1 = least like the reference:",
            *table(["score", "file"], rows, options.columns, align="><")]


def _score(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def skipped_lines(items: Sequence[Mapping[str, Any]], options: TextOptions) -> list[str]:
    """Files that could not be read, each with its reason."""
    if not items:
        return []
    shown = items if options.verbose else items[:TOP_FILES]
    lines = ["", f"Skipped {len(items)} file(s) that could not be read:"]
    for item in shown:
        lines += wrap(f"{safe(item.get('file'))}: {safe(item.get('reason'))}", options.columns,
                      indent="      ", first="  - ")
    if len(shown) < len(items):
        lines.append(f"  ... and {len(items) - len(shown)} more (--verbose or --json for all)")
    return lines


def verbose_lines(result: Mapping[str, Any], options: TextOptions) -> list[str]:
    """What only ``--verbose`` shows: the decision's numbers and where the time went."""
    decision = result.get("decision") or {}
    lines = [""]
    if decision:
        lines.append(f"Smallest p-value {number(decision.get('min_p_value'), 3)}, Bonferroni-adjusted "
                     f"{number(decision.get('adjusted_p_value'), 3)}, family-wise alpha "
                     f"{number(decision.get('alpha'))}")
    if result.get("pending"):
        lines.append(f"Still warming up: {', '.join(safe(item) for item in result['pending'])}")
    if result.get("timings"):
        lines += render_entry("timings (s)", result["timings"], options, "", 0)
    return lines


def record_lines(result: Mapping[str, Any], options: TextOptions) -> list[str]:
    """Where the check was recorded, what the retrain policy did, and how long it took."""
    lines = []
    if result.get("check_id") is not None:
        lines += wrap(f"Recorded as check #{result['check_id']} in {safe(result.get('history'))} "
                      f"(zeal history show {result['check_id']})", options.columns, indent="  ", first="")
    elif result.get("record_error"):  # the history could not be written: the result above still stands
        lines += wrap(f"NOT recorded in the history: {safe(result['record_error'])}", options.columns,
                      indent="  ", first="")
    elif "check_id" not in result and "exit_code" in result:
        lines.append("Not recorded in the history (--no-record).")
    policy = result.get("policy")
    if isinstance(policy, Mapping) and policy.get("job"):
        checks = ", ".join(map(str, policy.get("check_ids") or []))
        lines += wrap(f"Retrain policy: queued job {safe(policy['job'])} ({safe(policy.get('strategy'))} on "
                      f"checks {checks})", options.columns, indent="  ", first="")
    alert = result.get("alert")
    if isinstance(alert, Mapping):
        target, error = safe(alert.get("target")), safe(alert.get("error"))
        text = f"Alert sent to {target}." if alert.get("sent") else \
            f"Alert NOT sent to {target} after {alert.get('attempts')} attempt(s): {error}."
        lines += wrap(text, options.columns, indent="  ", first="")
    footer = f"Took {result['seconds']:.1f} s." if isinstance(result.get("seconds"), (int, float)) else ""
    if not options.verbose:
        footer += " More: --verbose (every estimator, cause and file) or --json (everything)."
    return [*lines, *wrap(footer.strip(), options.columns)] if footer.strip() else lines


@register_formatter("drift")
def format_drift(result: Mapping[str, Any], options: TextOptions) -> list[str]:
    """The ``drift`` command (a simulated drift against the reference): decision, accuracy, detectors."""
    decision = result.get("decision") or {}
    verdict = "DRIFT" if decision.get("drift") else "NO DRIFT"
    lines = wrap(f"{verdict}: {safe(result.get('drift'))} on {number(result.get('n'))} held-out images of "
                 f"{safe(result.get('dataset'))} (model {safe(result.get('version'))}, reference "
                 f"{number(result.get('reference_n'))})", options.columns)
    if decision.get("rule"):
        lines += wrap(safe(decision["rule"]), options.columns, indent="      ", first="Rule: ")
    lines.append(f"Accuracy: {percent(result.get('sample_accuracy'))} on the drifted sample, "
                 f"{percent(result.get('clean_sample_accuracy'))} on the same images clean, "
                 f"{percent(result.get('reference_accuracy'))} on the reference")
    lines += ["", *detector_lines(result.get("results") or [], decision, options)]
    if isinstance(result.get("seconds"), (int, float)):
        lines += ["", f"Took {result['seconds']:.1f} s."]
    return lines
