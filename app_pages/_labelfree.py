"""What the Drift Lab, Your own images and the Monitor show of a check's label-free parts: the estimated
accuracy and the diagnosis (``CheckReport.estimates`` / ``.diagnosis``), and the history of checks.

Nothing here computes an estimate or a diagnosis; ``FittedReference.check`` does. The diagnosis needs a
one-off warm-up per model (the shift bank, kept on disk): ``warm_panel`` starts it in the background and
shows its progress until the page can show the diagnosis.
"""

from __future__ import annotations

import html
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from app_pages import _lab
from app_pages._ui import md
from zeal_core.corruptions import DriftSpec, list_corruptions
from zeal_core.estimate import estimator_info
from zeal_core.reference import CheckReport, FittedReference

IMAGES_SHOWN = 6  # images that show the diagnosed shift best
IMAGES_PER_ROW = 3  # in the diagnosis's narrow column: wide enough for a file name under each
CAUSES_SHOWN = 3  # ranked causes listed
# Names the diagnosis gives a cause, for people.
CAUSE_NAMES = {"no_drift": "no drift", "label_shift": "label shift (class mix)", "unknown": "unknown shift"}


def _part(estimate: Any, name: str, default: Any = None) -> Any:
    """A field of an ``AccuracyEstimate`` or of its dict form (a recorded check's report)."""
    if isinstance(estimate, dict):
        return estimate.get(name, default)
    return getattr(estimate, name, default)


def extrapolation_reason(estimate: Any) -> str | None:
    """Why ``estimate`` is an extrapolation, when its estimator says it is (its ``extrapolation`` flag, or
    the same key in its details); None otherwise."""
    flag = _part(estimate, "extrapolation")
    if flag is None:
        flag = (_part(estimate, "details") or {}).get("extrapolation")
    if not flag:
        return None
    if isinstance(flag, str):
        return flag
    if isinstance(flag, dict) and flag.get("reason"):
        return str(flag["reason"])
    return "the sample lies outside the shifts the estimator was fitted on"


def estimate_caution(estimate: Any) -> str | None:
    """A warning to show beside an estimate whose interval claims more than it knows: an extrapolation,
    or an interval narrower than one image of the sample (e.g. "100 %-100 %" at n = 40)."""
    reason = extrapolation_reason(estimate)
    if reason:
        return f"Extrapolating: {reason}; a rough guess, the truth may lie outside the interval."
    low, high, n = _part(estimate, "low"), _part(estimate, "high"), int(_part(estimate, "n", 0) or 0)
    if n > 0 and low is not None and high is not None and high - low < 1.0 / n:
        return (f"Low information: {low:.0%}–{high:.0%} is narrower than one image in {n}: the estimator's "
                f"certainty, not what {n} images can tell.")
    return None


def estimate_metric(column: Any, report: CheckReport, *, true_accuracy: float | None = None) -> None:
    """The preferred label-free estimate as a metric: value, interval, (when known) the true accuracy, and a
    caution under it when the estimate extrapolates or its interval is implausibly narrow."""
    estimate = report.estimated_accuracy
    if estimate is None:
        column.metric("Estimated accuracy", "—", help="No estimate: the reference has no labels.")
        return
    caution = estimate_caution(estimate)
    interval = f"{estimate.level:.0%} interval {estimate.low:.0%}–{estimate.high:.0%}"
    known = "" if true_accuracy is None else \
        f" True accuracy (known here, the drift is simulated): {true_accuracy:.1%}."
    column.metric("Estimated accuracy", f"{estimate.accuracy:.1%}",
                  delta=("⚠ " + interval) if caution else interval,
                  delta_color="orange" if caution else "off", delta_arrow="off",
                  help=f"Estimated without labels by {estimate.estimator} on n = {estimate.n} images: "
                       f"{estimator_info(estimate.estimator).description}.{known} "
                       "Shown: shift-calibrated once the diagnosis has warmed up, pm-atc until then and "
                       "under a diagnosed label shift. Others: 'Accuracy estimates'.")
    if caution:
        column.caption(caution)


def estimates_frame(report: CheckReport, true_accuracy: float | None = None) -> pd.DataFrame:
    """One row per estimator: estimate, interval, and the error against the true accuracy when known."""
    rows = []
    for estimate in report.estimates:
        row = {"estimator": estimate.estimator, "estimate": f"{estimate.accuracy:.1%}",
               f"{estimate.level:.0%} interval": f"{estimate.low:.1%} – {estimate.high:.1%}"}
        if true_accuracy is not None:
            row["error (points)"] = f"{(estimate.accuracy - true_accuracy) * 100:+.1f}"
        caution = estimate_caution(estimate)
        row["caution"] = caution.split(":")[0] if caution else ""
        row["how"] = estimator_info(estimate.estimator).description
        rows.append(row)
    return pd.DataFrame(rows).set_index("estimator") if rows else pd.DataFrame()


def show_estimates(report: CheckReport, true_accuracy: float | None = None, *, key: str) -> None:
    """Every estimator's answer in an expander (the preferred one first)."""
    if not report.estimates:
        return
    with st.expander("Accuracy estimates (no labels used)", expanded=False):
        st.table(estimates_frame(report, true_accuracy))
        waiting = (" shift-calibrated joins once the diagnosis has warmed up."
                   if "estimates" in report.pending else "")
        st.caption("Fitted on the clean reference, whose labels are known; the sample's labels are never "
                   f"read. The first row is the one shown above.{waiting} Caution: “Extrapolating” — the "
                   "sample is unlike anything the estimator was fitted on; “Low information” — the interval "
                   "is narrower than one image of the sample. See docs/estimation.md.")


def expected_cause(spec: DriftSpec) -> set[str]:
    """Which diagnoses name the drift of ``spec``: its kinds (those the signatures know), label shift for
    a class mix, "unknown" for kinds outside the signatures, "no drift" for a clean spec."""
    known = set(list_corruptions())
    expected = {name if name in known else "unknown" for name, _ in spec.steps}
    if spec.class_mix is not None:
        expected.add("label_shift" if spec.class_mix.kind == "label_shift" else "unknown")
    return expected or {"no_drift"}


def causes_frame(diagnosis: Any) -> pd.DataFrame:
    """The best-ranked causes: kind, family, score, estimated severity and share of images affected."""
    rows = []
    for rank, cause in enumerate(diagnosis.top(CAUSES_SHOWN), start=1):
        share = cause.details.get("fraction") if cause.details else None
        rows.append({"rank": rank, "cause": CAUSE_NAMES.get(cause.kind, cause.kind), "family": cause.family,
                     "score": f"{cause.score:.2f}",
                     "severity": "—" if cause.severity is None else f"{cause.severity:.1f}",
                     "share affected": "—" if share is None else f"{share:.0%}"})
    return pd.DataFrame(rows).set_index("rank")


def proportions_figure(diagnosis: Any, class_names: tuple[str, ...], true_labels: Any = None) -> go.Figure:
    """Class shares: the reference's, the sample's as estimated without labels (BBSE), and the true ones."""
    before = diagnosis.reference_class_proportions or {}
    after = diagnosis.estimated_class_proportions or {}
    keys = sorted(set(before) | set(after), key=int)
    names = [class_names[int(key)] if int(key) < len(class_names) else str(key) for key in keys]
    figure = go.Figure()
    figure.add_bar(x=names, y=[before.get(key, 0.0) for key in keys], name="reference",
                   marker_color="#999999")
    figure.add_bar(x=names, y=[after.get(key, 0.0) for key in keys], name="sample, estimated (no labels)",
                   marker_color="#0072B2")
    if true_labels is not None:
        labels = np.asarray(true_labels)
        labels = labels[labels >= 0]
        if labels.size:
            figure.add_bar(x=names, y=[float(np.mean(labels == int(key))) for key in keys],
                           name="sample, true", marker_color="#E69F00", marker_pattern_shape="/")
    # Class names such as "0".."9" are names: a category axis labels every one (a numeric axis would
    # label only some ticks).
    figure.update_xaxes(type="category", tickmode="linear", dtick=1, title="class")
    figure.update_layout(height=300, barmode="group", margin={"l": 10, "r": 10, "t": 30, "b": 10},
                         title="Class shares", yaxis={"tickformat": ".0%", "title": "share of images"},
                         legend={"orientation": "h", "y": -0.35})
    return figure


def show_diagnosis(report: CheckReport, reference: FittedReference, *, key: str,
                   chosen: DriftSpec | None = None) -> None:
    """The diagnosis of a check, or the warm-up's progress while the signatures are being learnt."""
    st.markdown("**Diagnosis: what kind of drift is this?**")
    if report.diagnosis is None:
        if "diagnosis" in report.pending:
            warm_panel(reference, key=key)
        return
    diagnosis = report.diagnosis
    st.markdown(f"#### {md(report.diagnosis_summary)}")
    if chosen is not None:
        expected = expected_cause(chosen)
        named = diagnosis.best.kind
        wanted = ", ".join(CAUSE_NAMES.get(kind, kind) for kind in sorted(expected))
        if named in expected:
            st.success(f"Names the drift you chose ({md(wanted)}).", icon=":material/check_circle:")
        else:
            first = md(CAUSE_NAMES.get(named, named))
            st.warning(f"You chose {md(wanted)}; the diagnosis ranks {first} first.",
                       icon=":material/help:")
        if "unknown" in expected:
            st.caption("The signatures cover the 19 ImageNet-C corruptions and label shift; other kinds "
                       "should come out as an unknown shift.")
    left, right = st.columns([3, 2], gap="medium")
    left.table(causes_frame(diagnosis))
    left.caption("Score: a calibrated posterior over the causes (no drift, label shift, each corruption); "
                 "severity on ImageNet-C's 0-5 scale. See docs/diagnosis.md.")
    ranked = diagnosis.top(CAUSES_SHOWN)
    if diagnosis.best.kind == "no_drift" and any(cause.score > diagnosis.best.score for cause in ranked):
        left.caption("No detector found drift, so “no drift” comes first whatever the scores; the scores "
                     "below it show what the diagnosis would name if the data had moved.")
    if diagnosis.verdict == "label shift" or (chosen is not None and chosen.class_mix is not None):
        true_labels = report.sample.labels if chosen is not None else None
        right.plotly_chart(proportions_figure(diagnosis, reference.class_names, true_labels),
                           key=f"{key}_proportions")
    show_diagnosed_images(report, right)


def show_diagnosed_images(report: CheckReport, where: Any) -> None:
    """The images that look most like the diagnosed shift (per-image scores of the diagnosis)."""
    scores = (report.diagnosis.details or {}).get("image_scores")
    if scores is None or report.images is None or len(scores) != report.n:
        return
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")[:IMAGES_SHOWN]
    best = report.diagnosis.best.kind
    where.markdown(f"Images that show **{CAUSE_NAMES.get(best, best)}** most, most typical first (by how "
                   "much likelier each image is under it than clean)")
    names = report.file_names
    captions = [_lab.short_name(names[row], 16) if names else f"#{int(report.sample.indices[row])}"
                for row in order]
    _lab.image_grid(where, [_lab.thumbnail(report, int(row)) for row in order], captions,
                    per_row=IMAGES_PER_ROW)


def warm_panel(reference: FittedReference, *, key: str) -> None:
    """The diagnosis's one-off warm-up: a button that starts it in the background (it costs about a minute
    of CPU, so a visit alone never starts it on a shared server), then its progress until it is done."""
    status = reference.label_free.status()
    if not (status.running or status.error):
        st.caption("The diagnosis first learns how this model reacts to 95 synthetic shifts (the 19 "
                   "ImageNet-C corruptions at 5 severities): about a minute on a laptop CPU for the digits, "
                   "several for Imagenette; seconds on a GPU. It happens once per model and is kept on disk: "
                   "every page, reference size and `zeal check` run, and later server starts, reuse it.")
        if st.button("Learn the drift signatures", key=f"{key}_warm", icon=":material/model_training:"):
            reference.warm_label_free(background=True)
        else:
            return

    @st.fragment(run_every=timedelta(seconds=2))
    def progress() -> None:
        status = reference.label_free.status()
        if status.ready:
            st.rerun(scope="app")  # the whole page, so the check is redone with the diagnosis
        if status.error:
            st.error(f"The diagnosis could not warm up: {md(status.error)}")
            return
        st.progress(status.fraction, text="Learning the signatures of 95 synthetic shifts, once per model "
                                          "and kept on disk (about a minute on a laptop CPU for the "
                                          f"digits): {status.message}")

    progress()


def history_figure(rows: list, current: int | None = None) -> go.Figure:
    """Recorded checks over time: the smallest detector p-value (top; drift and no drift differ in colour
    and shape) and the estimated accuracy with its interval (bottom); ``current`` (a check id) is
    starred."""
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                           row_heights=[0.55, 0.45],
                           subplot_titles=("smallest detector p-value (log scale)",
                                           "estimated accuracy, no labels (90 % interval)"))
    for drift, colour, symbol, name in ((False, "#0072B2", "circle", "no drift"),
                                        (True, "#D55E00", "x", "drift")):
        part = [row for row in rows if bool(row.drift) == drift]
        figure.add_scatter(
            x=[row.created for row in part], y=[max(row.min_p_value or 1.0, 1e-300) for row in part],
            mode="markers", name=name, marker={"color": colour, "size": 10, "symbol": symbol},
            # user text as Plotly text, not its HTML subset (Plotly shows &lt; as <)
            customdata=[[row.id, html.escape(row.source), row.n, html.escape(row.diagnosis or "")]
                        for row in part],
            hovertemplate="check #%{customdata[0]} (n = %{customdata[2]})<br>%{customdata[1]}<br>smallest p "
                          "%{y:.3g}<br>%{customdata[3]}<extra></extra>", row=1, col=1)
    estimated = [row for row in rows if row.estimated_accuracy is not None]
    lows = [row.estimate_low if row.estimate_low is not None else row.estimated_accuracy for row in estimated]
    highs = [row.estimate_high if row.estimate_high is not None else row.estimated_accuracy
             for row in estimated]
    if estimated:
        figure.add_scatter(
            x=[row.created for row in estimated], y=[row.estimated_accuracy for row in estimated],
            mode="markers", name="estimated accuracy (90 % interval)", legend="legend2",
            marker={"color": _lab.ESTIMATE_COLOUR, "symbol": "diamond", "size": 9},
            error_y={"type": "data", "symmetric": False, "color": "rgba(213, 94, 0, 0.5)",
                     "array": [high - row.estimated_accuracy for row, high in zip(estimated, highs,
                                                                                   strict=True)],
                     "arrayminus": [row.estimated_accuracy - low for row, low in zip(estimated, lows,
                                                                                      strict=True)]},
            customdata=[[row.id] for row in estimated],
            hovertemplate="check #%{customdata[0]}<br>estimated %{y:.1%}<extra></extra>", row=2, col=1)
    mine = [row for row in rows if row.id == current]
    if mine:
        figure.add_scatter(x=[mine[0].created], y=[max(mine[0].min_p_value or 1.0, 1e-300)], mode="markers",
                           name="this batch", marker={"symbol": "star", "size": 18, "color": "#F0E442",
                                                      "line": {"color": "#000000", "width": 1}}, row=1, col=1)
    _lab.style_p_value_and_accuracy(figure, "time (UTC)", height=440,
                                    accuracy_values=[*lows, *highs] if estimated else None)
    smallest = min((max(row.min_p_value or 1.0, 1e-300) for row in rows), default=1.0)
    figure.update_yaxes(range=[np.log10(smallest) - 0.5, 0.2], row=1, col=1)  # from p = 1 down
    return readable_time_axis(figure, [row.created for row in rows])


TIME_TICKS = [  # tick labels by zoom level (dtick in ms): seconds, minutes, hours, days
    {"dtickrange": [None, 60_000], "value": "%H:%M:%S"},
    {"dtickrange": [60_000, 86_400_000], "value": "%H:%M<br>%b %d"},
    {"dtickrange": [86_400_000, None], "value": "%b %d<br>%Y"}]


def readable_time_axis(figure: go.Figure, stamps: list[str]) -> go.Figure:
    """A time axis that spans the checks with a margin of a tenth of their span (at least 30 s either side,
    so a single check is not zoomed to milliseconds), labelled in seconds, minutes or days as the span
    needs."""
    times = pd.to_datetime(pd.Series(stamps), utc=True)
    if not times.empty:
        margin = max((times.max() - times.min()) / 10, pd.Timedelta(seconds=30))
        window = [times.min() - margin, times.max() + margin]
        figure.update_xaxes(range=[value.strftime("%Y-%m-%d %H:%M:%S") for value in window])
    figure.update_xaxes(tickformatstops=TIME_TICKS, row=2, col=1)
    return figure
