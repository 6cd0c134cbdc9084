"""The ``history`` reports in text: the recorded checks as a table, one check's report, the retrain policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from zeal_core.textreport import TextOptions, register_formatter
from zeal_core.textreport.check import (
    decision_lines,
    detector_lines,
    diagnosis_lines,
    estimate_lines,
    skipped_lines,
    typical_file_lines,
)
from zeal_core.textreport.generic import records_table, scalar_text
from zeal_core.textreport.layout import clip, number, percent, safe, table, wrap


@register_formatter("history", "history list")
def format_history_list(result: Mapping[str, Any], options: TextOptions) -> list[str]:
    """The recorded checks, oldest first, one row each."""
    checks: Sequence[Mapping[str, Any]] = result.get("checks") or []
    count, shown = result.get("count", len(checks)), len(checks)
    where = f"History {safe(result.get('history') or '-')}"
    if not checks:
        return wrap(f"{where}: no checks recorded yet (zeal check FOLDER records one).", options.columns)
    lines = wrap(f"{where}: {count} check(s), the newest {shown} shown, oldest first", options.columns)
    several_models = len({item.get("model_version") for item in checks}) > 1
    header = ["id", "time (UTC)", "verdict", "n", "min p", "est. accuracy"]
    header += ["model"] if several_models or options.verbose else []
    header += ["diagnosis", "source"]
    rows = []
    for item in checks:
        row = [f"#{item.get('id')}", item.get("created") or "-", "DRIFT" if item.get("drift") else "ok",
               number(item.get("n")), number(item.get("min_p_value"), 3), _estimate_cell(item, options)]
        row += [item.get("model_version") or "-"] if several_models or options.verbose else []
        diagnosis = safe(item.get("diagnosis") or "-")
        row += [diagnosis if options.verbose else clip(diagnosis, 44), item.get("source") or "-"]
        rows.append(row)
    lines += table(header, rows, options.columns, align="><<>>>" + "<" * (len(header) - 6))
    if count > shown:
        lines.append(f"  ({count - shown} older check(s) not shown: --limit N)")
    lines.append("One check's full report: zeal history show ID")
    return lines


def _estimate_cell(item: Mapping[str, Any], options: TextOptions) -> str:
    accuracy = item.get("estimated_accuracy")
    if accuracy is None:
        return "-"
    if not options.verbose:
        return percent(accuracy)
    return f"{percent(accuracy)} ({percent(item.get('estimate_low'))}-{percent(item.get('estimate_high'))})"


@register_formatter("history show")
def format_history_show(result: Mapping[str, Any], options: TextOptions) -> list[str]:
    """One recorded check: its row, then the stored report laid out as ``check`` prints it."""
    report: Mapping[str, Any] = result.get("report") or {}
    lines = wrap(f"Check #{result.get('id')} of {safe(result.get('created') or '-')}, recorded by "
                 f"{safe(result.get('origin') or '-')} in {safe(result.get('history') or '-')}",
                 options.columns)
    if report:
        lines += decision_lines(report, options)
        lines += ["", *detector_lines(report.get("detectors") or [], report.get("decision"), options)]
        lines += ["", *estimate_lines(report, options)]
        lines += diagnosis_lines(report, options)
        lines += typical_file_lines(report.get("most_drifted") or [], options)
        lines += skipped_lines(report.get("skipped") or [], options)
    else:  # an old record without its report: the row's own columns
        verdict = "DRIFT" if result.get("drift") else "no drift"
        lines += [f"Verdict: {verdict}, n = {number(result.get('n'))}, "
                  f"smallest p-value {number(result.get('min_p_value'), 3)}",
                  f"Estimated accuracy: {percent(result.get('estimated_accuracy'))}",
                  f"Diagnosis: {safe(result.get('diagnosis') or '-')}"]
    if result.get("batch_file"):
        kept = f"The batch's images are kept as {safe(result['batch_file'])} (for an adaptation)."
        lines += ["", *wrap(kept, options.columns)]
    if not options.verbose:
        lines.append("More: --verbose (every estimator, cause and file) or --json (everything).")
    return lines


@register_formatter("history policy")
def format_history_policy(result: Mapping[str, Any], options: TextOptions) -> list[str]:
    """The retrain policy's settings and what it has done."""
    policy: Mapping[str, Any] = result.get("policy") or {}
    state = "ON" if policy.get("enabled") else "OFF"
    lines = wrap(f"Retrain policy: {state} (history {safe(result.get('history') or '-')})", options.columns)
    for key, value in policy.items():
        if key == "enabled":
            continue
        text = "-" if value is None else (scalar_text(key, value) if not isinstance(value, Mapping) else
                                           ", ".join(f"{safe(k)}={number(v)}" for k, v in value.items()))
        lines += wrap(text, options.columns, indent="      ", first=f"  {safe(key)}: ")
    lines.append("Change a setting: zeal history policy --set KEY=VALUE (e.g. --set enabled=true)")
    events = result.get("events") or []
    if events:
        lines += ["", f"What it did ({len(events)} event(s)):", *records_table(events, options)]
    return lines

