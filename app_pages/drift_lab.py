"""Drift Lab: drift the held-out data, watch the embeddings move and the detectors react.

The controls and results sit in one ``st.fragment`` so that moving a slider reruns only that part. Every
number comes from one call, ``CheckService.check(spec)`` (``zeal_core.service``, the lab's check profile),
cached inside the shared fitted reference. The severity curves come after, from a sweep computed in the
background (``zeal_core.reference.sweep_when_ready``) while the rest of the page is already usable. The
DriftSpec text goes into the URL (``?spec=gaussian_noise:3@0.5&n=200&seed=0``), so a link reproduces the
view.
"""

import uuid

import streamlit as st

from app_pages import _lab, _labelfree
from app_pages._ui import (
    KEY_DRIFT_SPEC,
    active_card,
    code,
    first_run_panel,
    load_dataset_cached,
    md,
    show_dataset_note,
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
from zeal_core.reference import SEVERITIES, current_severity, scatter_frame, sweep_choices, sweep_when_ready
from zeal_core.settings import get_settings

st.title("Drift Lab")
if not first_run_panel():
    st.stop()
card = active_card()
show_dataset_note(card)
version = card.version
SAMPLE_SIZES = _lab.sample_sizes(load_dataset_cached(card.dataset))  # images per tested sample
SEVERITY_STEP = 0.25  # slider step; the corruptions interpolate between ImageNet-C's integer levels
DEFAULT_SPEC = "gaussian_noise:3@0.5"
NO_MIX = "none"  # the class-mix choice that keeps the held-out half's own class mix
RANDOM_MIX = "random"  # the class-mix mode that draws the shifted proportions at random
KIND_GROUP = {name: group for group, names in drift_kind_groups().items() for name in names}
DATASET = load_dataset_cached(card.dataset)
UNSEEN_OK = supports_unseen_classes(DATASET.class_names, card.class_names)
PAIRS = 6  # clean/drifted image pairs shown
KINDS_PER_ROW = 3  # severity sliders side by side
TYPICAL_PER_ROW = 4  # drift-typical images per row in the half-width column (room for their captions)
SWEEP_PARTS = ("detectors", "estimates")  # what each point of the severity curves needs
CURVES_POLL_S = 2.0  # s between asks for a severity sweep computing in the background


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
        st.session_state["lab_mix_mode"] = mix.mode or RANDOM_MIX
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
    meanings = {RANDOM_MIX: info.default, **dict(info.modes)}
    # A string, not None, for "no mode": a selectbox shows a None value as an empty "Choose an option".
    choice = columns[1].selectbox("How", list(meanings), key="lab_mix_mode",
                                  help="; ".join(f"{m}: {text}" for m, text in meanings.items()))
    mode = None if choice == RANDOM_MIX else choice
    classes = []
    if mode is not None:
        classes = columns[2].multiselect("Classes", list(DATASET.class_names), key="lab_mix_classes",
                                         help=meanings[mode])
    severity = columns[3].slider(f"{kind} severity", 0.0, 5.0, step=SEVERITY_STEP, key="lab_mix_severity",
                                 value=3.0, help=info.description)
    if severity == 0 or (mode is not None and not classes):
        return None
    return ClassMix(kind, float(severity), mode, tuple(name.replace(" ", "_") for name in classes))


def add_kind() -> None:
    """The add picker's callback: append the picked kind to the chosen ones (once) and clear the picker."""
    name = st.session_state.get("lab_add_kind")
    chosen = list(st.session_state.get("lab_corruptions", []))
    if name and name not in chosen:
        st.session_state["lab_corruptions"] = [*chosen, name]
    elif name:
        st.toast(f"{name} is already in the spec: move its slider below.")
    st.session_state["lab_add_kind"] = None


def remove_kind(name: str) -> None:
    """A remove button's callback: drop ``name`` from the chosen kinds."""
    st.session_state["lab_corruptions"] = [kind for kind in st.session_state.get("lab_corruptions", [])
                                           if kind != name]


def kind_picker(where) -> None:
    """A type-ahead picker that adds one drift kind at a time: typing a name and Enter adds that name (the
    best match comes first; only the kinds' names are matched, not their groups)."""
    where.selectbox("Add a drift kind", list_drift_kinds(), index=None, key="lab_add_kind",
                    on_change=add_kind, placeholder="Type a name, e.g. fog, then Enter",
                    help="ImageNet-C corruptions, camera geometry and capture-pipeline changes. Each kind "
                         "you add gets its own severity slider below; they are applied in the order added.")


def kind_sliders(chosen: list[str]) -> list[tuple[str, float]]:
    """A severity slider and a remove button for every chosen kind, three to a row; returns the steps."""
    if not chosen:
        st.caption("No drift kind chosen: the sample is clean (add one above, or pick a class mix).")
        return []
    if len(chosen) > 1:
        st.caption("Applied in this order to the affected images: " + " → ".join(chosen))
    steps = []
    for row_start in range(0, len(chosen), KINDS_PER_ROW):
        columns = st.columns(KINDS_PER_ROW, gap="medium")
        for column, name in zip(columns, chosen[row_start:row_start + KINDS_PER_ROW], strict=False):
            slider_part, button_part = column.columns([7, 1], vertical_alignment="bottom", gap="small")
            st.session_state.setdefault(f"lab_severity_{name}", 3.0)
            severity = slider_part.slider(f"{name} severity", 0.0, 5.0, step=SEVERITY_STEP,
                                          key=f"lab_severity_{name}",
                                          help=f"{KIND_GROUP.get(name, 'drift kind')}: "
                                               f"{corruption_info(name).description}")
            button_part.button("", icon=":material/close:", key=f"lab_remove_{name}", help=f"Remove {name}",
                               on_click=remove_kind, args=(name,))
            steps.append((name, float(severity)))
    return steps


def controls() -> tuple[DriftSpec, int, int]:
    """The drift controls; returns (spec, n, seed)."""
    top = st.columns([3.2, 2, 1.6, 1.2], vertical_alignment="bottom")
    kind_picker(top[0])
    fraction = top[1].slider("Fraction affected", 0.0, 1.0, step=0.05, key="lab_fraction",
                             help="Share of the sample whose pixels change; the rest stays clean.")
    n = top[2].select_slider("Sample size (n)", SAMPLE_SIZES, key="lab_n",
                             help="Images in the tested sample, drawn from the held-out half of the "
                                  "validation split (the reference is the other half).")
    seed = top[3].number_input("Seed", min_value=0, max_value=10_000, step=1, key="lab_seed")
    steps = kind_sliders(list(st.session_state.get("lab_corruptions", [])))
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
    st.caption(f"Drift spec {code(spec.text)} · n = {n} · seed = {seed} · reference: {report.reference_n} "
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
                     caption=f"class {md(names[label]) if label >= 0 else 'unseen'}", width="stretch")
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
    right.markdown(f"**{domain} #{index}**  \nlabel **{md(label)}**, prediction **{md(prediction)}**")


def show_typical(report) -> None:
    """The tested images that look least like the reference."""
    items = report.typical[:8]
    if not items:
        return
    st.markdown("**Most drift-typical images of the sample** (drift score: share of the reference that is "
                "nearer the reference than the image)")
    _lab.image_grid(st, [_lab.thumbnail(report, item.row) for item in items],
                    [f"#{item.index} · {item.score:.2f}" for item in items], per_row=TYPICAL_PER_ROW)


def show_curves(reference, spec: DriftSpec, n: int, seed: int, report) -> None:
    """The sweep picker and the curves for it, the current severity marked. A sweep not computed yet is
    computed in the background (live checks go first) while the rest of the page is usable; a small
    fragment asks for it every ``CURVES_POLL_S`` seconds and draws the curves in place once it is ready
    (never a rerun of the whole page, which would redraw every element). The asking stops at the next
    change of a control, when the sweep is found ready at once."""
    choices = sweep_choices(spec)
    if not choices:
        return
    left, right = st.columns([2, 3], vertical_alignment="bottom")
    choice = left.selectbox("Against severity of", choices, key="lab_sweep",
                            help="One step of the spec (the others stay as they are), or the whole spec "
                                 "scaled together (the strongest step at x, the others in proportion).")
    right.caption("The dotted line marks the current setting; points are the same sample at severities "
                  "0-5 of the chosen step.")
    with user_errors():
        sweep = ready_sweep(reference, spec, choice, n, seed)
        if sweep is None:
            st.fragment(curves_when_ready, run_every=CURVES_POLL_S)(reference, spec, choice, n, seed, report)
        else:
            draw_curves(sweep, spec, choice, report)


def ready_sweep(reference, spec: DriftSpec, choice: str, n: int, seed: int):
    """The severity sweep when it is ready, else None (it is then computing in the background)."""
    owner = st.session_state.setdefault("lab_owner", uuid.uuid4().hex)  # this browser session
    return sweep_when_ready(reference, spec, choice, n=n, seed=seed, parts=SWEEP_PARTS, owner=owner)


def curves_when_ready(reference, spec: DriftSpec, choice: str, n: int, seed: int, report) -> None:
    """A placeholder until the sweep is ready, then the curves."""
    with user_errors():
        sweep = ready_sweep(reference, spec, choice, n, seed)
        if sweep is not None:
            draw_curves(sweep, spec, choice, report)
            return
    st.info(f"Severity curves for {choice}: computing in the background ({len(SEVERITIES)} checks of n = "
            f"{n}). Everything above is ready; checks of people moving a slider go first.",
            icon=":material/hourglass_top:")


def draw_curves(sweep, spec: DriftSpec, choice: str, report) -> None:
    """The p-value and accuracy curves of a ready sweep."""
    label = f"severity of {choice}" if choice in {name for name, _ in spec.steps} else \
        "severity of the strongest step (the others scaled along)"
    st.plotly_chart(_lab.severity_curves_figure(sweep, report.decision.threshold, report.decision.alpha,
                                                current_severity(spec, choice), label), key="lab_curves")


@st.fragment
def lab() -> None:
    """Controls and everything computed from them (a slider change reruns only this)."""
    spec, n, seed = controls()
    st.session_state[KEY_DRIFT_SPEC] = spec.text
    st.query_params.update({"spec": spec.text, "n": str(n), "seed": str(seed)})
    with user_errors():
        service = _lab.service()
        reference = service.reference(version)
        with _lab.busy_notice():
            report = service.check(spec, reference=reference, n=n, seed=seed)
    show_metrics(report, spec, n, seed)
    _labelfree.show_estimates(report, report.accuracy, key="lab")
    _labelfree.show_diagnosis(report, reference, key="lab_diagnosis", chosen=spec)
    left, right = st.columns(2, gap="medium")
    with left:
        st.markdown("**Detectors** · reference: clean held-out images; tested: the sample")
        st.table(_lab.detector_frame(report))
        st.caption(_lab.decision_caption(report))
        st.caption(_lab.profile_caption(report))
        show_pairs(report, reference)
    with right:
        show_scatter(report, reference)
        show_typical(report)
    show_curves(reference, spec, n, seed, report)


load_url_state()
warm_umap(background=True)  # PCA is shown until UMAP has compiled in the background
lab()
