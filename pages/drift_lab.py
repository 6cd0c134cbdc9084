"""Drift Lab: corrupt the validation data, watch the embeddings move and the detectors react.

The controls and results sit in one ``st.fragment`` so that moving a slider reruns only that part. Heavy
objects are cached (see ``pages/_lab.py``): the fitted detectors and projections with ``st.cache_resource``,
embeddings, test results and curves with ``st.cache_data`` (keyed by version, dataset, spec text, n and seed).
The DriftSpec text goes into the URL (``?spec=gaussian_noise:3@0.5&n=200&seed=0``), so a link reproduces
the view.
"""

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from pages import _lab
from pages._ui import (
    KEY_DRIFT_SPEC,
    active_card,
    ensure_app_navigation,
    first_run_panel,
    require,
    user_errors,
)
from zeal_core.settings import get_settings

ensure_app_navigation()  # a fresh server's first run may skip app.py: go through it

corruptions = require("zeal_core.corruptions", "The Drift Lab")
require("zeal_core.embed", "The Drift Lab")
require("zeal_core.drift", "The Drift Lab")
require("zeal_core.projection", "The Drift Lab")

st.title("Drift Lab")
if not first_run_panel():
    st.stop()
card = active_card()
version = card.version
SAMPLE_SIZES = _lab.sample_sizes(card.dataset)  # images per reference and per tested sample
SEVERITY_STEP = 0.25  # slider step; the corruptions interpolate between ImageNet-C's integer levels
DEFAULT_SPEC = "gaussian_noise:3@0.5"
DOMAIN_COLOURS = {"reference": "#64748b", "corrupted": "#dc2626", "sample, clean": "#f59e0b"}


def load_url_state() -> None:
    """On a user's first visit, seed the widgets from the URL (spec, n, seed) when it holds valid values."""
    if st.session_state.get("lab_initialised"):
        return
    st.session_state["lab_initialised"] = True
    params = st.query_params
    text = params.get("spec", DEFAULT_SPEC)
    try:
        spec = corruptions.DriftSpec.parse(text)
    except Exception:  # a hand-edited URL: fall back to the default view, and say so
        st.toast(f"Ignored the drift spec {text!r} in the URL: it does not parse.")
        spec = corruptions.DriftSpec.parse(DEFAULT_SPEC)
    known = set(corruptions.list_corruptions())
    steps = [(name, severity) for name, severity in spec.steps if name in known]
    st.session_state["lab_corruptions"] = [name for name, _ in steps]
    for name, severity in steps:
        snapped = round(severity / SEVERITY_STEP) * SEVERITY_STEP
        st.session_state[f"lab_severity_{name}"] = float(min(max(snapped, 0.0), 5.0))
    st.session_state["lab_fraction"] = float(min(max(spec.fraction, 0.0), 1.0)) if steps else 1.0
    n = params.get("n", "")
    wanted = get_settings().default_n
    default_n = max([size for size in SAMPLE_SIZES if size <= wanted], default=SAMPLE_SIZES[0])
    st.session_state["lab_n"] = int(n) if n.isdigit() and int(n) in SAMPLE_SIZES else default_n
    seed = params.get("seed", "0")
    st.session_state["lab_seed"] = int(seed) if seed.isdigit() and int(seed) <= 10_000 else 0


def controls() -> tuple[str, int, int]:
    """The drift controls; returns (spec text, n, seed)."""
    top = st.columns([3.2, 2, 1.6, 1.2], vertical_alignment="bottom")
    chosen = top[0].multiselect("Corruptions", corruptions.list_corruptions(), key="lab_corruptions",
                                help="ImageNet-C corruptions, applied in this order to the affected images.")
    fraction = top[1].slider("Fraction affected", 0.0, 1.0, step=0.05, key="lab_fraction",
                             help="Share of the sample that is corrupted; the rest stays clean.")
    n = top[2].select_slider("Sample size (n)", SAMPLE_SIZES, key="lab_n",
                             help="Images in the reference and in the tested sample (disjoint halves of "
                                  "the validation split).")
    seed = top[3].number_input("Seed", min_value=0, max_value=10_000, step=1, key="lab_seed")
    steps = []
    for row_start in range(0, len(chosen), 3):
        columns = st.columns(3)
        for column, name in zip(columns, chosen[row_start:row_start + 3], strict=False):
            st.session_state.setdefault(f"lab_severity_{name}", 3.0)
            severity = column.slider(f"{name} severity", 0.0, 5.0, step=SEVERITY_STEP,
                                     key=f"lab_severity_{name}",
                                     help=corruptions.corruption_info(name).description)
            steps.append((name, float(severity)))
    spec = corruptions.DriftSpec(steps=tuple(steps), fraction=float(fraction)) if steps \
        else corruptions.DriftSpec.clean()
    return spec.text, int(n), int(seed)


def _natural(text: str) -> tuple[int, int | str]:
    return (0, int(text)) if text.isdigit() else (1, text)


def scatter_figure(frame, colour: str) -> go.Figure:
    """Reference vs sample points; hover shows label and prediction; the point id is kept in customdata."""
    frame = frame.assign(label=frame["label"].astype(str), prediction=frame["prediction"].astype(str))
    classes = sorted(frame["label"].unique(), key=_natural)
    figure = px.scatter(
        frame, x="x", y="y", color=colour, symbol="domain",
        custom_data=["domain", "index", "label", "prediction"],
        color_discrete_map=DOMAIN_COLOURS if colour == "domain" else None,
        color_discrete_sequence=px.colors.qualitative.Safe,
        category_orders={"label": classes, "prediction": classes,
                         "domain": [d for d in DOMAIN_COLOURS if d in set(frame["domain"])]},
    )
    figure.update_traces(
        marker={"size": 7, "opacity": 0.75},
        hovertemplate="%{customdata[0]} #%{customdata[1]}<br>label %{customdata[2]}, "
                      "prediction %{customdata[3]}<extra></extra>")
    figure.update_layout(height=430, margin={"l": 10, "r": 10, "t": 10, "b": 10}, legend_title_text="",
                         xaxis_title=None, yaxis_title=None, legend={"orientation": "h", "y": -0.08})
    return figure


def curves_figure(curves: dict, alpha: float) -> go.Figure:
    """p-value per detector (log scale, left axis) and accuracy (right axis) against severity."""
    figure = go.Figure()
    for name, values in curves["p_values"].items():
        figure.add_scatter(x=curves["severities"], y=[max(v, 1e-6) for v in values], name=name,
                           mode="lines+markers")
    figure.add_scatter(x=curves["severities"], y=curves["accuracy"], name="accuracy", yaxis="y2",
                       mode="lines+markers", line={"color": "black", "width": 3, "dash": "dot"})
    figure.add_hline(y=alpha, line_dash="dash", line_color="#dc2626", annotation_text=f"alpha {alpha}")
    figure.update_layout(
        height=360, margin={"l": 10, "r": 10, "t": 40, "b": 10},
        title=f"{curves['corruption']} on {curves['fraction']:.0%} of the sample, against severity",
        xaxis_title="severity", yaxis={"title": "p-value", "type": "log", "range": [-6.2, 0.05]},
        yaxis2={"title": "accuracy", "overlaying": "y", "side": "right", "range": [0, 1.02],
                "tickformat": ".0%", "dtick": 0.2, "showgrid": False},
        legend={"orientation": "h", "y": -0.2})
    return figure


def show_pairs(spec_text: str, seed: int) -> None:
    """A few validation images, clean above and corrupted below."""
    pairs = _lab.image_pairs(card.dataset, spec_text, seed)
    if not pairs["drifted"]:
        return
    st.markdown("**Clean → corrupted** (every shown image corrupted, for viewing)")
    grid = st.columns(len(pairs["clean"]), gap="small")
    for column, clean, drifted, caption in zip(grid, pairs["clean"], pairs["drifted"], pairs["captions"],
                                                strict=True):
        column.image(clean, caption=f"class {caption}", width="stretch")
        column.image(drifted, width="stretch")


def show_scatter(view: dict, spec_text: str, n: int, seed: int) -> None:
    """The projection scatter and, for a clicked point, its image, label and prediction."""
    colour = st.segmented_control("Colour by", ["domain", "label", "prediction"], default="domain",
                                  key="lab_colour") or "domain"
    event = st.plotly_chart(scatter_figure(view["scatter"], colour), key="lab_scatter", on_select="rerun",
                            selection_mode="points")
    points = (event.selection.points if event and event.selection else []) or []
    if not points:
        st.caption(f"{view['projection'].upper()} of the penultimate-layer features. Click a point to see "
                   "its image, label and prediction.")
        return
    domain, index = points[0]["customdata"][0], int(points[0]["customdata"][1])
    thumb = _lab.thumbnail(version, card.dataset, spec_text, seed, domain, index, n)
    left, right = st.columns([1, 3])
    left.image(thumb["image"], width=96)
    right.markdown(f"**{domain} #{index}**  \nlabel **{thumb['label']}**, "
                   f"prediction **{thumb['prediction']}**")


@st.fragment
def lab() -> None:
    """Controls and everything computed from them (a slider change reruns only this)."""
    spec_text, n, seed = controls()
    st.session_state[KEY_DRIFT_SPEC] = spec_text
    st.query_params.update({"spec": spec_text, "n": str(n), "seed": str(seed)})
    with user_errors():
        view = _lab.lab_results(version, card.dataset, spec_text, n, seed)
    alpha = view["alpha"]
    clean_accuracy, drifted_accuracy = view["clean_accuracy"], view["drifted_accuracy"]
    metrics = st.columns([1.3, 1, 1, 1, 1])
    metrics[0].markdown(f"Drift spec  \n`{spec_text}`  \nn = {n} · seed = {seed}")
    metrics[1].metric("Accuracy, clean", f"{clean_accuracy:.1%}", help="The same sample without the drift.")
    metrics[2].metric("Accuracy, drifted", f"{drifted_accuracy:.1%}",
                      delta=f"{(drifted_accuracy - clean_accuracy) * 100:+.1f} pts")
    flagged = sum(row["decision"] == "drift" for row in view["detectors"])
    metrics[3].metric("Detectors flagging drift", f"{flagged} / {len(view['detectors'])}")
    metrics[4].metric("Projection", view["projection"].upper(),
                      help="PCA is shown until UMAP has warmed up in the background.")

    left, right = st.columns(2, gap="medium")
    with left:
        st.markdown("**Detectors** · reference: clean held-out images; tested: the sample")
        st.table(_lab.detector_table(view["detectors"]))
        st.caption(f"Decision: drift when the p-value < alpha = {alpha}. Statistic and effect size are "
                   "detector-specific.")
        show_pairs(spec_text, seed)
    with right:
        show_scatter(view, spec_text, n, seed)

    names = [name for name, _ in corruptions.DriftSpec.parse(spec_text).steps]
    if names:
        with st.spinner(f"Severity curves for {names[0]}…"), user_errors():
            curves = _lab.severity_curves(version, card.dataset, names[0], view["fraction"], n, seed)
        st.plotly_chart(curves_figure(curves, alpha), key="lab_curves")


load_url_state()
_lab.warm_projection()
lab()
