"""What the Drift Lab, Your own images and the Monitor's history view share: the check service and the
frames and figures drawn from a ``CheckReport``.

Every page checks through ``zeal_core.service.CheckService`` under the lab's check profile (the same one
``check`` on the command line, the monitor and the benchmarks use), so a batch gets the same p-values and
decision here as from cron. The service's reference is fitted once per model, kept on disk next to the
model and shared read-only by every session; each reference keeps its recent simulated checks. Nothing here
computes a drift check.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app_pages._ui import device
from zeal_core.drift import detector_info
from zeal_core.drift.base import p_value_floor
from zeal_core.embed import part_positions
from zeal_core.reference import CheckReport, FittedReference
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
            "settings as `python -m zeal_core check` (`python -m zeal_core settings` changes them).")


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
    """A p-value for people: fixed for ordinary values, powers of ten for tiny ones, and the floor said."""
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
    text = f"Verdict per detector at α/k; overall: {report.decision.rule}."
    if any(p_value_floor(result) and result.p_value <= p_value_floor(result) * (1 + 1e-9)
           for result in report.results):
        text += (" “≤ … (floor)”: a permutation test with B permutations cannot give a p-value below "
                 "1/(B+1); the true value may be far smaller.")
    return text


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


def reference_thumbnail(reference: FittedReference, row: int) -> np.ndarray:
    """The clean reference image of ``row`` (HWC uint8)."""
    position = int(reference.reference.indices[row])
    return reference.source.split_images[position].permute(1, 2, 0).numpy()


def style_p_value_and_accuracy(figure: go.Figure, x_title: str, *, height: int, legend_y: float) -> go.Figure:
    """The layout every two-panel figure shares: a log p-value axis on top, an accuracy axis (0-100 %) below
    with the x title, a horizontal legend under the plot."""
    figure.update_yaxes(type="log", exponentformat="power", title="p-value", row=1, col=1)
    figure.update_yaxes(range=[0, 1.02], tickformat=".0%", title="accuracy", row=2, col=1)
    figure.update_xaxes(title=x_title, row=2, col=1)
    figure.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         legend={"orientation": "h", "y": legend_y})
    return figure
