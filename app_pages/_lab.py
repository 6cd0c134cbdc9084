"""What the Drift Lab, Your own images and the Monitor's history view share: the check service and the
frames and figures drawn from a ``CheckReport``.

Every page checks through ``zeal_core.service.CheckService`` under the lab's check profile (the same one
``check`` on the command line, the monitor and the benchmarks use), so a batch gets the same p-values and
decision here as from cron. The service's reference is fitted once per model, kept on disk next to the
model and shared read-only by every session; each reference keeps its recent simulated checks. Nothing here
computes a drift check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app_pages._ui import device, md
from zeal_core.drift import detector_info
from zeal_core.drift.base import DriftResult, p_value_floor
from zeal_core.embed import part_positions
from zeal_core.monitor import P_VALUE_FLOOR
from zeal_core.reference import CheckReport, FittedReference
from zeal_core.scheduling import check_gate
from zeal_core.service import CheckService
from zeal_core.settings import get_settings

SIZES = (50, 100, 200, 300, 500, 1000)  # sample sizes offered (capped by the held-out half and demo mode)
DOMAIN_COLOURS = {"reference": "#64748b", "corrupted": "#dc2626", "sample, clean": "#f59e0b",
                  "upload": "#2563eb"}
DOMAIN_SYMBOLS = {"reference": "circle", "corrupted": "x", "sample, clean": "diamond", "upload": "x"}
# Colours of class labels (Plotly's Safe palette, then Dark24 for more than 11 classes).
CLASS_COLOURS = ("#88CCEE", "#CC6677", "#DDCC77", "#117733", "#332288", "#AA4499", "#44AA99", "#999933",
                 "#882255", "#661100", "#6699CC", "#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF")


def service() -> CheckService:
    """The check service under the lab's profile (its settings are read afresh on every rerun)."""
    return CheckService(device=device())


@contextlib.contextmanager
def busy_notice(where: Any = None) -> Iterator[None]:
    """Say so while this session's check waits behind other users' (``zeal_core.scheduling``), then clear.

    Shown only when checks are already running or queued when this one starts; a cached answer clears it
    at once. ``where``: the container to write into (default: the page).
    """
    ahead = check_gate().busy
    notice = (where or st).empty()
    if ahead:
        notice.info(f"The server is busy: {ahead} other check{'s are' if ahead > 1 else ' is'} running or "
                    "waiting. Yours follows them; what is ready stays on the page meanwhile.",
                    icon=":material/hourglass_top:")
    try:
        yield
    finally:
        notice.empty()


def reference_for(version: str) -> FittedReference:
    """The fitted reference of ``version`` under the lab's profile (loaded from disk or fitted once, then
    shared by every session)."""
    return service().reference(version)


def profile_caption(report: CheckReport) -> str:
    """The settings a check used, in one line (the lab's profile, and any override)."""
    settings = report.settings or {}
    overrides = settings.get("overrides") or []
    changed = f" (changed: {', '.join(overrides)})" if overrides else ""
    return (f"Check profile “{settings.get('profile', '?')}”{changed}: reference of {report.reference_n} "
            f"clean held-out images, {len(settings.get('detectors') or [])} detectors, "
            f"{settings.get('permutations', '?')} permutations, α = {settings.get('alpha', '?')}; the same "
            "settings as `zeal check` (`zeal settings` changes them).")


def sample_sizes(dataset: Any) -> list[int]:
    """Sample sizes offered for a dataset: up to its held-out half and the demo mode's cap."""
    half = len(part_positions(int(dataset.is_val.sum()), "sample"))
    largest = min(half, get_settings().max_n)
    sizes = [size for size in SIZES if size <= largest]
    return sizes or [largest]


def reading(name: str) -> str:
    """The plain-language line of a detector."""
    return detector_info(name).reading


def p_value_text(result: Any) -> str:
    """A p-value for people: fixed for ordinary values, powers of ten for tiny ones, and the floor said.

    ``result`` is a ``DriftResult`` or its dict form (a recorded check's ``detectors`` entries), so every page
    shows the same text for the same test."""
    if isinstance(result, dict):
        result = DriftResult(detector=str(result.get("detector", "")), statistic=float("nan"),
                             p_value=float(result["p_value"]), is_drift=bool(result.get("is_drift")),
                             effect_size=float("nan"), runtime_s=0.0, details=result.get("details") or {})
    floor = p_value_floor(result)
    if floor and result.p_value <= floor * (1 + 1e-9):
        return f"≤ {floor:.3g} (floor)"
    return f"{result.p_value:.3f}" if result.p_value >= 0.001 else f"{result.p_value:.1e}"


def detector_frame(report: CheckReport) -> pd.DataFrame:
    """One row per detector: what it compares, p-value, decision at the corrected level, effect size."""
    threshold = report.decision.threshold
    rows = [{"detector": result.detector, "what it compares": reading(result.detector),
             "p-value": p_value_text(result),
             "verdict": "drift" if result.p_value < threshold else "no drift",
             "effect size": f"{result.effect_size:.3g}"} for result in report.results]
    return pd.DataFrame(rows, columns=["detector", "what it compares", "p-value", "verdict",
                                       "effect size"]).set_index("detector")


def decision_caption(report: CheckReport) -> str:
    """The decision rule, and what a floor p-value means when one is shown."""
    return f"Verdict per detector at α/k; overall: {report.decision.rule}. {floor_note(report.results)}"


def floor_note(results: list[Any]) -> str:
    """What a floor p-value means, when one of ``results`` (``DriftResult``s or their dicts) is at it."""
    if not any(p_value_text(result).endswith("(floor)") for result in results):
        return ""
    return ("“≤ … (floor)”: a permutation test with B permutations cannot give a p-value below 1/(B+1); "
            "the true value may be far smaller.")


def _natural(text: str) -> tuple[int, int | str]:
    return (0, int(text)) if text.isdigit() else (1, text)


def scatter_figure(frame: pd.DataFrame, colour: str) -> go.Figure:
    """Reference vs sample points: colour by domain, true label or prediction; one legend entry per colour.

    The domain is always the marker shape, so colouring by class still shows which points were tested. The
    legend sits under the plot and lists each class (or domain) once, whatever the combinations.
    """
    figure = go.Figure()
    groups = list(DOMAIN_COLOURS) if colour == "domain" else sorted(set(frame[colour]), key=_natural)
    for position, group in enumerate(groups):
        part = frame[frame[colour] == group]
        if part.empty:
            continue
        colour_value = DOMAIN_COLOURS[group] if colour == "domain" else \
            CLASS_COLOURS[position % len(CLASS_COLOURS)]
        figure.add_scattergl(
            x=part["x"], y=part["y"], mode="markers", name=str(group), legendgroup=str(group),
            marker={"color": colour_value, "size": 7, "opacity": 0.75,
                    "symbol": [DOMAIN_SYMBOLS.get(domain, "circle") for domain in part["domain"]]},
            customdata=part[["domain", "row", "index", "label", "prediction"]].to_numpy(),
            hovertemplate="%{customdata[0]} #%{customdata[2]}<br>label %{customdata[3]}, prediction "
                          "%{customdata[4]}<extra></extra>")
    if colour != "domain":  # the shapes' meaning, once
        for domain in dict.fromkeys(frame["domain"]):
            figure.add_scattergl(x=[None], y=[None], mode="markers", name=f"shape: {domain}",
                                 marker={"color": "#475569", "symbol": DOMAIN_SYMBOLS.get(domain, "circle")})
    figure.update_layout(height=470, margin={"l": 10, "r": 10, "t": 10, "b": 10}, legend_title_text="",
                         xaxis={"title": None, "showticklabels": False},
                         yaxis={"title": None, "showticklabels": False},
                         legend={"orientation": "h", "yanchor": "top", "y": -0.02, "x": 0})
    return figure


def thumbnail(report: CheckReport, row: int) -> np.ndarray:
    """The tested image of ``row`` as the model saw it (HWC uint8), from the report itself."""
    return report.images[row].permute(1, 2, 0).numpy()


def short_name(name: str, limit: int = 18) -> str:
    """A file name short enough for a thumbnail caption: its start and its end (extension kept) around an
    ellipsis, so captions never wrap in the middle of a word."""
    if len(name) <= limit:
        return name
    tail = max(4, limit // 2 - 1)
    return f"{name[:limit - tail - 1]}…{name[-tail:]}"


def image_grid(where: Any, images: list[np.ndarray], captions: list[str], per_row: int) -> None:
    """Thumbnails ``per_row`` to a row in ``where`` (a container or column), each with its caption."""
    for start in range(0, len(images), per_row):
        columns = where.columns(per_row, gap="small")
        for column, image, caption in zip(columns, images[start:start + per_row],
                                          captions[start:start + per_row], strict=False):
            column.image(image, caption=md(caption), width="stretch")  # captions hold file names: as text


def reference_thumbnail(reference: FittedReference, row: int) -> np.ndarray:
    """The clean reference image of ``row`` (HWC uint8)."""
    position = int(reference.reference.indices[row])
    return reference.source.split_images[position].permute(1, 2, 0).numpy()


# ------------------------------------------------------------------------------------------------ figures

# Okabe & Ito's colour-blind-safe palette (black is kept for the truth and the thresholds). Each series also
# gets its own dash and marker, so no two look alike in grey or to a colour-blind reader.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot", "8px,3px,2px,3px,2px,3px")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star", "triangle-down")
TRUTH_COLOUR = "#000000"  # true accuracy, thresholds
ESTIMATE_COLOUR = "#D55E00"  # the label-free estimate (vermillion), its interval a pale band of it
ESTIMATE_BAND = "rgba(213, 94, 0, 0.15)"
MARKER_COLOUR = "#6b7280"  # the current setting's dotted line
P_SHOWN_FROM = 1e-12  # p-values below are drawn at it: the axis keeps the decades around alpha readable
MIN_ACCURACY_SPAN = 0.10  # the zoomed accuracy axis shows at least 10 points, so noise is not magnified


def series_style(index: int) -> dict[str, Any]:
    """Line and marker of the ``index``-th series: a distinct hue, dash and marker symbol each."""
    colour = OKABE_ITO[index % len(OKABE_ITO)]
    light = colour == "#F0E442"  # yellow: a wider line and outlined markers keep it visible on white
    return {"line": {"color": colour, "dash": DASHES[index % len(DASHES)], "width": 3 if light else 2},
            "marker": {"symbol": SYMBOLS[index % len(SYMBOLS)], "size": 8, "color": colour,
                       "line": {"color": "#374151", "width": 1 if light else 0}}}


def accuracy_range(values: list[float | None]) -> list[float]:
    """An accuracy axis zoomed to the values (a few points of margin, at least ``MIN_ACCURACY_SPAN``
    tall, within 0-100 %), so the differences that matter are not squashed against 0 %."""
    known = [float(value) for value in values if value is not None and np.isfinite(value)]
    if not known:
        return [0.0, 1.02]
    low, high = min(known) - 0.03, max(known) + 0.02
    if high - low < MIN_ACCURACY_SPAN:
        low = high - MIN_ACCURACY_SPAN
    return [max(0.0, low), min(1.02, high)]


def style_p_value_and_accuracy(figure: go.Figure, x_title: str, *, height: int,
                               accuracy_values: list[float | None] | None = None) -> go.Figure:
    """The layout every two-panel figure shares: a log p-value axis on top, an accuracy axis below (zoomed
    to ``accuracy_values`` when given, else 0-100 %) with the x title; each panel's legend beside it (traces
    of the lower panel carry ``legend="legend2"``)."""
    figure.update_yaxes(type="log", exponentformat="power", title="p-value", row=1, col=1)
    zoomed = accuracy_values is not None
    figure.update_yaxes(range=accuracy_range(accuracy_values or []), tickformat=".0%", row=2, col=1,
                        title="accuracy (zoomed)" if zoomed else "accuracy")
    figure.update_xaxes(title=x_title, row=2, col=1)
    top, bottom = figure.layout.yaxis.domain, figure.layout.yaxis2.domain
    side = {"x": 1.01, "xanchor": "left", "yanchor": "top", "tracegroupgap": 2, "font": {"size": 12}}
    figure.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, showlegend=True,
                         legend={**side, "y": top[1]}, legend2={**side, "y": bottom[1]})
    return figure


def _legend_only(figure: go.Figure, name: str, *, legend: str = "legend", **style: Any) -> None:
    """A legend entry without data: explains a shape (band, vertical line) drawn outside the traces."""
    figure.add_scatter(x=[None], y=[None], name=name, legend=legend, hoverinfo="skip", **style)


def severity_curves_figure(sweep: Any, threshold: float, alpha: float, marker: float,
                           x_title: str) -> go.Figure:
    """p-value per detector (log axis, top) and accuracy, true and estimated (bottom), against the swept
    severity; ``marker`` is the current severity (a dotted line)."""
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, row_heights=[0.6, 0.4],
                           subplot_titles=("p-value per detector (log scale; below the dashed line: drift)",
                                           "accuracy"))
    curves = sweep.p_values()
    # Permutation tests share a floor (1/(B+1)), so curves can lie on top of each other. They are drawn
    # last-first with markers shrinking towards the first, so each one drawn later sits inside the one
    # under it and every curve stays visible; the legend keeps the detectors' order.
    for index, (name, values) in reversed(list(enumerate(curves.items()))):
        style = series_style(index)
        style["marker"]["size"] = 6 + index
        figure.add_scatter(x=sweep.severities, y=[max(value, P_SHOWN_FROM) for value in values], name=name,
                           mode="lines+markers", row=1, col=1, **style, customdata=values, legendrank=index,
                           hovertemplate=f"{name}: p = %{{customdata:.3g}} at severity %{{x}}<extra></extra>")
    figure.add_hline(y=threshold, line_dash="dash", line_color=TRUTH_COLOUR, row=1, col=1)
    _legend_only(figure, f"α/k = {alpha:g}/{len(curves)} = {threshold:.3g}", mode="lines", legendrank=100,
                 line={"color": TRUTH_COLOUR, "dash": "dash", "width": 2})
    true_accuracy = sweep.accuracy()
    figure.add_scatter(x=sweep.severities, y=true_accuracy, name="true (labels known)", mode="lines+markers",
                       line={"color": TRUTH_COLOUR, "width": 3}, marker={"symbol": "circle", "size": 7},
                       legend="legend2", row=2, col=1,
                       hovertemplate="true %{y:.1%} at severity %{x}<extra></extra>")
    estimated = [(x, value) for x, value in zip(sweep.severities, sweep.estimated_accuracy(), strict=True)
                 if value is not None]
    values = list(true_accuracy)
    if estimated:  # the label-free estimate, with its interval as a band (an area: no markers of its own)
        xs = [x for x, _ in estimated]
        lows, highs = [v[1] for _, v in estimated], [v[2] for _, v in estimated]
        figure.add_scatter(x=xs + xs[::-1], y=highs + lows[::-1], mode="lines", fill="toself",
                           fillcolor=ESTIMATE_BAND, line={"width": 0}, hoverinfo="skip", legend="legend2",
                           name="estimate's 90 % interval", row=2, col=1)
        figure.add_scatter(x=xs, y=[v[0] for _, v in estimated], name="estimated (no labels)",
                           mode="lines+markers", line={"color": ESTIMATE_COLOUR, "dash": "dash", "width": 2},
                           marker={"symbol": "diamond", "size": 8}, legend="legend2", row=2, col=1,
                           hovertemplate="estimated %{y:.1%} at severity %{x}<extra></extra>")
        values += lows + highs
    for row in (1, 2):
        figure.add_vline(x=marker, line_dash="dot", line_color=MARKER_COLOUR, row=row, col=1)
    figure.update_xaxes(dtick=1, row=2, col=1)
    style_p_value_and_accuracy(figure, x_title, height=540, accuracy_values=values)
    figure.update_yaxes(range=[np.log10(P_SHOWN_FROM) - 0.3, 0.15], row=1, col=1,
                        title=f"p-value (< {P_SHOWN_FROM:.0e} shown at {P_SHOWN_FROM:.0e})")
    figure.update_layout(legend={"title": {"text": "detector"}}, legend2={"title": {"text": "accuracy"}})
    return figure


# Monitor stream: what the yellow band and the purple lines mean (they get legend entries of their own).
DRIFT_BAND = "rgba(240, 228, 66, 0.30)"  # Okabe-Ito yellow, pale: the batches the schedule drifts
RETRAIN_COLOUR = "#CC79A7"  # Okabe-Ito reddish purple: a retrain by the policy
ALARM_COLOUR = "#D55E00"


def stream_figure(result: dict[str, Any]) -> go.Figure:
    """A simulated stream. Top: p-value per batch (log) with alarms and the level; bottom: accuracy with and
    without the policy, and the label-free estimate of the deployed model's accuracy. The drifted batches
    are a pale band and each retrain a dotted line; both have legend entries."""
    from plotly.subplots import make_subplots

    batches = result["batches"]
    index = [batch["index"] for batch in batches]
    alpha = result["config"].get("alpha", 0.05)
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                           subplot_titles=("batch test p-value (log scale)", "accuracy per batch"))
    floor = [max(batch["p_value"], P_VALUE_FLOOR) for batch in batches]  # a p-value of 0 has no log
    figure.add_scatter(x=index, y=floor, mode="lines+markers", name="p-value", **series_style(0),
                       customdata=[batch["drift_spec"] for batch in batches],
                       hovertemplate="batch %{x}<br>p %{y:.3g}<br>%{customdata}<extra></extra>", row=1, col=1)
    alarms = [position for position, batch in enumerate(batches) if batch["alarm"]]
    figure.add_scatter(x=[index[i] for i in alarms], y=[floor[i] for i in alarms], mode="markers",
                       name="alarm", marker={"color": ALARM_COLOUR, "symbol": "x", "size": 11}, row=1, col=1)
    figure.add_hline(y=alpha, line_dash="dash", line_color=TRUTH_COLOUR, row=1, col=1)
    _legend_only(figure, f"α = {alpha:g} (below: the batch differs)", mode="lines",
                 line={"color": TRUTH_COLOUR, "dash": "dash", "width": 2})
    figure.add_scatter(x=index, y=[batch["accuracy_without_policy"] for batch in batches], mode="lines",
                       name="true, without policy", line={"color": "#6b7280", "dash": "dash", "width": 2},
                       legend="legend2", row=2, col=1)
    figure.add_scatter(x=index, y=[batch["accuracy_with_policy"] for batch in batches], mode="lines",
                       name="true, with policy", line={"color": TRUTH_COLOUR, "width": 3}, legend="legend2",
                       row=2, col=1)
    values = [batch["accuracy_without_policy"] for batch in batches] + \
        [batch["accuracy_with_policy"] for batch in batches]
    estimated = [batch for batch in batches if batch.get("estimated_accuracy") is not None]
    if estimated:  # what a user without labels would see: the label-free estimate and its interval
        figure.add_scatter(
            x=[batch["index"] for batch in estimated], y=[batch["estimated_accuracy"] for batch in estimated],
            mode="markers", name="estimated, no labels (90 % interval)", legend="legend2",
            marker={"color": ESTIMATE_COLOUR, "symbol": "diamond", "size": 7},
            error_y={"type": "data", "symmetric": False, "color": "rgba(213, 94, 0, 0.5)",
                     "array": [batch["estimate_high"] - batch["estimated_accuracy"] for batch in estimated],
                     "arrayminus": [batch["estimated_accuracy"] - batch["estimate_low"]
                                    for batch in estimated]},
            hovertemplate="batch %{x}<br>estimated %{y:.1%}<extra></extra>", row=2, col=1)
        values += [batch["estimate_low"] for batch in estimated]
    _stream_events(figure, result, batches)
    return style_p_value_and_accuracy(figure, "batch", height=560, accuracy_values=values)


def _stream_events(figure: go.Figure, result: dict[str, Any], batches: list[dict[str, Any]]) -> None:
    """The drifted batches as a band and the retrains as dotted lines labelled beside them, with legend
    entries (the lines' meaning is said under the figure)."""
    drifted = [batch["index"] for batch in batches if batch["drift_spec"] not in ("clean", "")]
    if drifted:
        figure.add_vrect(x0=drifted[0] - 0.5, x1=drifted[-1] + 0.5, fillcolor=DRIFT_BAND, line_width=0,
                         layer="below")
        _legend_only(figure, "drifted batches (schedule)", mode="markers",
                     marker={"symbol": "square", "size": 14, "color": DRIFT_BAND})
    for event in result["retrains"]:
        figure.add_vline(x=event["batch_index"] + 0.5, line_dash="dot", line_width=2,
                         line_color=RETRAIN_COLOUR)
        figure.add_annotation(x=event["batch_index"] + 0.5, y=0, yref="y domain", xanchor="left", xshift=4,
                              yanchor="bottom", text="retrain", showarrow=False,
                              font={"size": 11, "color": RETRAIN_COLOUR}, row=1, col=1)
    if result["retrains"]:
        _legend_only(figure, "retrain (policy)", mode="lines",
                     line={"color": RETRAIN_COLOUR, "dash": "dot", "width": 2})
