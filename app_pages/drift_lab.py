"""Drift Lab: drift the held-out data, watch the embeddings move and the detectors react.

The controls and results sit in one ``st.fragment`` so that moving a slider reruns only that part. Every
number comes from one call, ``FittedReference.check(spec)`` (``zeal_core.reference``), cached inside the
shared fitted reference. The DriftSpec text goes into the URL (``?spec=gaussian_noise:3@0.5&n=200&seed=0``),
so a link reproduces the view.
"""

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from app_pages import _lab, _labelfree
from app_pages._ui import (
    KEY_DRIFT_SPEC,
    active_card,
    first_run_panel,
    load_dataset_cached,
    md,
    user_errors,
)
from zeal_core.corruptions import (
    ClassMix,
    DriftSpec,
    class_mix_info,
    corruption_info,
    drift_kind_groups,
    list_class_mix_kinds,
    list_drift_kinds,
    supports_unseen_classes,
)
from zeal_core.projection import warm_umap
from zeal_core.reference import current_severity, scatter_frame, severity_sweep, sweep_choices
from zeal_core.settings import get_settings

st.title("Drift Lab")
if not first_run_panel():
    st.stop()
card = active_card()
version = card.version
SAMPLE_SIZES = _lab.sample_sizes(load_dataset_cached(card.dataset))  # images per tested sample
SEVERITY_STEP = 0.25  # slider step; the corruptions interpolate between ImageNet-C's integer levels
DEFAULT_SPEC = "gaussian_noise:3@0.5"
NO_MIX = "none"  # the class-mix choice that keeps the held-out half's own class mix
KIND_GROUP = {name: group for group, names in drift_kind_groups().items() for name in names}
DATASET = load_dataset_cached(card.dataset)
UNSEEN_OK = supports_unseen_classes(DATASET.class_names, card.class_names)
PAIRS = 6  # clean/drifted image pairs shown
P_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#8C564B")
THRESHOLD_COLOUR = "#111827"  # the alpha/k line: black, which no detector curve uses


def load_url_state() -> None:
    """On a user's first visit, seed the widgets from the URL (spec, n, seed) when it holds valid values."""
    if st.session_state.get("lab_initialised"):
        return
    st.session_state["lab_initialised"] = True
    params = st.query_params
    text = params.get("spec", DEFAULT_SPEC)
    try:
        spec = DriftSpec.parse(text)
    except Exception:  # a hand-edited URL: fall back to the default view, and say so
        st.toast(f"Ignored the drift spec {md(repr(text))} in the URL: it does not parse.")  # shown as text
        spec = DriftSpec.parse(DEFAULT_SPEC)
    known = set(list_drift_kinds())
    steps = [(name, severity) for name, severity in spec.steps if name in known]
    st.session_state["lab_corruptions"] = [name for name, _ in steps]
    for name, severity in steps:
        snapped = round(severity / SEVERITY_STEP) * SEVERITY_STEP
        st.session_state[f"lab_severity_{name}"] = float(min(max(snapped, 0.0), 5.0))
    st.session_state["lab_fraction"] = float(min(max(spec.fraction, 0.0), 1.0)) if steps else 1.0
    mix = spec.class_mix
    if mix is not None and (UNSEEN_OK or not mix.info.unseen):
        st.session_state["lab_mix"] = mix.kind
        st.session_state["lab_mix_mode"] = mix.mode
        st.session_state["lab_mix_classes"] = [name for name in DATASET.class_names
                                               if name.replace(" ", "_") in mix.classes]
        st.session_state["lab_mix_severity"] = float(round(mix.severity / SEVERITY_STEP) * SEVERITY_STEP)
    n = params.get("n", "")
    wanted = get_settings().default_n
    default_n = max([size for size in SAMPLE_SIZES if size <= wanted], default=SAMPLE_SIZES[0])
    st.session_state["lab_n"] = int(n) if n.isdigit() and int(n) in SAMPLE_SIZES else default_n
    seed = params.get("seed", "0")
    st.session_state["lab_seed"] = int(seed) if seed.isdigit() and int(seed) <= 10_000 else 0


def class_mix_controls() -> ClassMix | None:
    """Which classes the sample holds: the held-out half's own mix, a label shift, or unseen classes."""
    kinds = [kind for kind in list_class_mix_kinds() if UNSEEN_OK or not class_mix_info(kind).unseen]
    columns = st.columns([1.3, 1.5, 2.6, 1.6], vertical_alignment="bottom")
    kind = columns[0].selectbox(
        "Class mix", [NO_MIX, *kinds], key="lab_mix",
        help="Change which images the sample holds instead of their pixels. unseen_classes needs a model "
             "trained on some of the dataset's classes only (zeal train --classes ...); "
             + ("this one is." if UNSEEN_OK else "the active model knows every class, so it is not offered."))
    if kind == NO_MIX:
        return None
    info = class_mix_info(kind)
    meanings = {None: info.default, **dict(info.modes)}
    mode = columns[1].selectbox("How", list(meanings), key="lab_mix_mode",
                                format_func=lambda m: m or "random",
                                help="; ".join(f"{m or 'random'}: {text}" for m, text in meanings.items()))
    classes = []
    if mode is not None:
        classes = columns[2].multiselect("Classes", list(DATASET.class_names), key="lab_mix_classes",
                                         help=meanings[mode])
    severity = columns[3].slider(f"{kind} severity", 0.0, 5.0, step=SEVERITY_STEP, key="lab_mix_severity",
                                 value=3.0, help=info.description)
    if severity == 0 or (mode is not None and not classes):
        return None
    return ClassMix(kind, float(severity), mode, tuple(name.replace(" ", "_") for name in classes))


def controls() -> tuple[DriftSpec, int, int]:
    """The drift controls; returns (spec, n, seed)."""
    top = st.columns([3.2, 2, 1.6, 1.2], vertical_alignment="bottom")
    chosen = top[0].multiselect("Drift kinds", list_drift_kinds(), key="lab_corruptions",
                                format_func=lambda name: f"{name} ({KIND_GROUP.get(name, '')})",
                                help="ImageNet-C corruptions, then camera geometry and capture pipeline "
                                     "changes, applied in this order to the affected images.")
    fraction = top[1].slider("Fraction affected", 0.0, 1.0, step=0.05, key="lab_fraction",
                             help="Share of the sample whose pixels change; the rest stays clean.")
    n = top[2].select_slider("Sample size (n)", SAMPLE_SIZES, key="lab_n",
                             help="Images in the tested sample, drawn from the held-out half of the "
                                  "validation split (the reference is the other half).")
    seed = top[3].number_input("Seed", min_value=0, max_value=10_000, step=1, key="lab_seed")
    steps = []
    for row_start in range(0, len(chosen), 3):
        columns = st.columns(3)
        for column, name in zip(columns, chosen[row_start:row_start + 3], strict=False):
            st.session_state.setdefault(f"lab_severity_{name}", 3.0)
            severity = column.slider(f"{name} severity", 0.0, 5.0, step=SEVERITY_STEP,
                                     key=f"lab_severity_{name}", help=corruption_info(name).description)
            steps.append((name, float(severity)))
    mix = class_mix_controls()
    spec = DriftSpec(steps=tuple(steps), fraction=float(fraction) if steps else 1.0, class_mix=mix)
    return spec, int(n), int(seed)


def show_metrics(report, spec: DriftSpec, n: int, seed: int) -> None:
    """Accuracies (true and estimated), the verdict and the projection in one row; the spec under it."""
    decision = report.decision
    columns = st.columns([1, 1, 1.25, 1.1, 0.75])
    columns[0].metric("Clean accuracy", f"{report.clean_accuracy:.1%}",
                      help="The same images without the drift.")
    columns[1].metric("Drifted accuracy", f"{report.accuracy:.1%}",
                      delta=f"{(report.accuracy - report.clean_accuracy) * 100:+.1f} pts",
                      help="True accuracy: the labels are known because the drift is simulated.")
    _labelfree.estimate_metric(columns[2], report, true_accuracy=report.accuracy)
    columns[3].metric("Verdict", "drift" if decision.drift else "no drift",
                      delta=f"{len(decision.flagged)}/{decision.detectors} detectors < α/k",
                      delta_color="off", delta_arrow="off", help=decision.rule)
    columns[4].metric("Projection", report.projection.upper(),
                      help="PCA is shown until UMAP has warmed up in the background.")
    st.caption(f"Drift spec {md(spec.text)} · n = {n} · seed = {seed} · reference: {report.reference_n} "
               "clean held-out images")


def show_pairs(report, reference) -> None:
    """A few tested images: clean above, as the model saw them below."""
    affected = [row for row in range(report.n) if report.sample.affected[row]][:PAIRS]
    if not affected:
        return
    st.markdown("**Clean → drifted** (images of the tested sample)")
    grid = st.columns(len(affected), gap="small")
    names = reference.class_names
    for column, row in zip(grid, affected, strict=True):
        position = int(report.sample.indices[row])
        label = int(report.sample.labels[row])
        column.image(reference.source.split_images[position].permute(1, 2, 0).numpy(),
                     caption=f"class {names[label] if label >= 0 else 'unseen'}", width="stretch")
        column.image(_lab.thumbnail(report, row), width="stretch")


def show_scatter(report, reference) -> None:
    """The projection scatter and, for a clicked point, its image, label and prediction."""
    colour = st.segmented_control("Colour by", ["domain", "label", "prediction"], default="domain",
                                  key="lab_colour") or "domain"
    frame = scatter_frame(report, reference)
    event = st.plotly_chart(_lab.scatter_figure(frame, colour), key="lab_scatter", on_select="rerun",
                            selection_mode="points")
    points = (event.selection.points if event and event.selection else []) or []
    if not points:
        st.caption(f"{report.projection.upper()} of the model's penultimate-layer features, fitted on the "
                   "reference. Click a point to see its image, label and prediction.")
        return
    domain, row, index, label, prediction = points[0]["customdata"]
    image = (_lab.reference_thumbnail(reference, int(row)) if domain == "reference"
             else _lab.thumbnail(report, int(row)))
    left, right = st.columns([1, 3])
    left.image(image, width=96)
    right.markdown(f"**{domain} #{index}**  \nlabel **{label}**, prediction **{prediction}**")


def show_typical(report) -> None:
    """The tested images that look least like the reference."""
    items = report.typical[:8]
    if not items:
        return
    st.markdown("**Most drift-typical images of the sample** (drift score: share of the reference that is "
                "nearer the reference than the image)")
    grid = st.columns(len(items), gap="small")
    for column, item in zip(grid, items, strict=True):
        column.image(_lab.thumbnail(report, item.row), caption=f"#{item.index}: {item.score:.2f}",
                     width="stretch")


def curves_figure(sweep, threshold: float, alpha: float, marker: float, label: str) -> go.Figure:
    """p-value per detector (log axis, top) and accuracy, true and estimated (bottom), against the swept
    severity."""
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, row_heights=[0.6, 0.4],
                           subplot_titles=("p-value per detector (log scale; below the line: drift)",
                                           "accuracy"))
    for index, (name, values) in enumerate(sweep.p_values().items()):
        figure.add_scatter(x=sweep.severities, y=values, name=name, mode="lines+markers", row=1, col=1,
                           line={"color": P_COLOURS[index % len(P_COLOURS)]},
                           hovertemplate=f"{name}: p = %{{y:.3g}} at severity %{{x}}<extra></extra>")
    figure.add_hline(y=threshold, line_dash="dash", line_color=THRESHOLD_COLOUR, row=1, col=1,
                     annotation_text=f"α/k = {alpha:g}/{len(sweep.p_values())} = {threshold:.3g}",
                     annotation_position="bottom right")
    figure.add_scatter(x=sweep.severities, y=sweep.accuracy(), name="accuracy (true)", mode="lines+markers",
                       line={"color": "#374151", "width": 3}, row=2, col=1)
    estimated = [(x, value) for x, value in zip(sweep.severities, sweep.estimated_accuracy(), strict=True)
                 if value is not None]
    if estimated:  # the label-free estimate, with its interval as a band
        xs = [x for x, _ in estimated]
        band = [v[2] for _, v in estimated] + [v[1] for _, v in estimated][::-1]  # high, then low back
        figure.add_scatter(x=xs + xs[::-1], y=band,
                           fill="toself", fillcolor="rgba(37, 99, 235, 0.15)", line={"width": 0},
                           hoverinfo="skip", name="estimate's 90 % interval", row=2, col=1)
        figure.add_scatter(x=xs, y=[v[0] for _, v in estimated], name="accuracy (estimated, no labels)",
                           mode="lines+markers", line={"color": "#2563eb", "dash": "dash"}, row=2, col=1,
                           hovertemplate="estimated %{y:.1%} at severity %{x}<extra></extra>")
    for row in (1, 2):
        figure.add_vline(x=marker, line_dash="dot", line_color="#9ca3af", row=row, col=1)
    figure.update_xaxes(dtick=1, row=2, col=1)
    return _lab.style_p_value_and_accuracy(figure, label, height=520, legend_y=-0.15)


def show_curves(reference, spec: DriftSpec, n: int, seed: int, report) -> None:
    """The sweep picker and the curves for it, the current severity marked."""
    choices = sweep_choices(spec)
    if not choices:
        return
    left, right = st.columns([2, 3], vertical_alignment="bottom")
    choice = left.selectbox("Against severity of", choices, key="lab_sweep",
                            help="One step of the spec (the others stay as they are), or the whole spec "
                                 "scaled together (the strongest step at x, the others in proportion).")
    right.caption("The dotted line marks the current setting; points are the same sample at severities "
                  "0-5 of the chosen step.")
    with st.spinner(f"Severity curves for {choice}…"), user_errors():
        sweep = severity_sweep(reference, spec, choice, n=n, seed=seed, parts=("detectors", "estimates"))
    label = f"severity of {choice}" if choice in {name for name, _ in spec.steps} else \
        "severity of the strongest step (the others scaled along)"
    st.plotly_chart(curves_figure(sweep, report.decision.threshold, report.decision.alpha,
                                  current_severity(spec, choice), label), key="lab_curves")


@st.fragment
def lab() -> None:
    """Controls and everything computed from them (a slider change reruns only this)."""
    spec, n, seed = controls()
    st.session_state[KEY_DRIFT_SPEC] = spec.text
    st.query_params.update({"spec": spec.text, "n": str(n), "seed": str(seed)})
    with user_errors():
        reference = _lab.reference_for(version)
        report = reference.check(spec, n=n, seed=seed)
    show_metrics(report, spec, n, seed)
    _labelfree.show_estimates(report, report.accuracy, key="lab")
    _labelfree.show_diagnosis(report, reference, key="lab_diagnosis", chosen=spec)
    left, right = st.columns(2, gap="medium")
    with left:
        st.markdown("**Detectors** · reference: clean held-out images; tested: the sample")
        st.table(_lab.detector_frame(report))
        st.caption(_lab.decision_caption(report))
        show_pairs(report, reference)
    with right:
        show_scatter(report, reference)
        show_typical(report)
    show_curves(reference, spec, n, seed, report)


load_url_state()
warm_umap(background=True)  # PCA is shown until UMAP has compiled in the background
lab()
