"""Retrain: adapt the active model to a drift in a background job, compare before/after, manage versions."""

import plotly.express as px
import streamlit as st

from app_pages._ui import (
    KEY_DRIFT_SPEC,
    POLL_SECONDS,
    active_card,
    active_version,
    allowed,
    cards_column_config,
    cards_frame,
    ended_job,
    first_run_panel,
    job_queue,
    md,
    off_help,
    registry,
    short_version,
    show_dataset_note,
    submit_job,
    user_errors,
)
from zeal_core import corruptions, retrain
from zeal_core.retrain import MAX_CLEAN_DROP, verdict_of

st.title("Retrain")
if not first_run_panel():
    st.stop()
models = registry()
queue = job_queue()
show_dataset_note(active_card())


def before_after_frame(cards: list):
    """Long table (version, bar, accuracy) of retrained cards' before/after metrics, for grouped bars."""
    import pandas as pd

    rows = [{"version": short_version(card.version), "bar": f"{data}, {stage}",
             "accuracy": float(card.metrics[f"{data}_{stage}"])}
            for card in cards for data in ("clean", "drifted") for stage in ("before", "after")
            if isinstance((card.metrics or {}).get(f"{data}_{stage}"), (int, float))]
    return pd.DataFrame(rows, columns=["version", "bar", "accuracy"])


BAR_COLOURS = {"clean, before": "#cbd5e1", "clean, after": "#64748b", "drifted, before": "#fca5a5",
               "drifted, after": "#0f766e"}


def show_before_after(cards: list, key: str) -> None:
    """Grouped bars per version: clean and drifted accuracy, before and after its adaptation."""
    frame = before_after_frame(cards)
    if frame.empty:
        st.caption("No before/after metrics for these versions (only retrained versions have them).")
        return
    figure = px.bar(frame, x="version", y="accuracy", color="bar", barmode="group", text_auto=".1%",
                    color_discrete_map=BAR_COLOURS, range_y=[0, 1.08],
                    category_orders={"bar": list(BAR_COLOURS)})
    specs = "; ".join(f"{short_version(card.version)}: {card.strategy} on {card.drift_spec or 'real batches'}"
                      for card in cards)
    figure.update_layout(height=340, margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend_title_text="",
                         title=specs if len(specs) < 110 else "Accuracy before and after adaptation",
                         yaxis={"tickformat": ".0%", "title": "accuracy"}, xaxis_title=None)
    st.plotly_chart(figure, key=key)


def activation_check(card) -> str | None:
    """Why making ``card`` active needs a confirmation (the guard refused it, or it loses more clean accuracy
    than the margin), or None when it does not."""
    verdict = verdict_of(card)
    if verdict is not None:
        return None if verdict.passed else "; ".join(verdict.reasons)
    metrics = card.metrics or {}
    before, after = metrics.get("clean_before"), metrics.get("clean_after")
    measured = isinstance(before, (int, float)) and isinstance(after, (int, float))
    if measured and before - after > MAX_CLEAN_DROP:
        return (f"loses {100 * (before - after):.1f} points of clean accuracy (more than the "
                f"{100 * MAX_CLEAN_DROP:g}-point margin)")
    return None


def guard_label(card) -> str:
    """The guard's verdict in a word, for the versions table ("" for trained or imported versions)."""
    verdict = verdict_of(card)
    return "" if verdict is None else verdict.label


def show_accuracy_change(card, container) -> None:
    """Clean and drifted accuracy before -> after, and the guard's verdict, as metrics in ``container``."""
    metrics = card.metrics or {}
    columns = container.columns(2)
    for column, data in zip(columns, ("clean", "drifted"), strict=True):
        before, after = metrics.get(f"{data}_before"), metrics.get(f"{data}_after")
        if isinstance(before, (int, float)) and isinstance(after, (int, float)):
            column.metric(f"{data.capitalize()} accuracy", f"{after:.1%}",
                          f"{100 * (after - before):+.1f} pts", help=f"Before: {before:.1%} (the parent). "
                               + ("Clean validation images." if data == "clean" else
                                  f"Validation images under {card.drift_spec}."))
        else:
            column.metric(f"{data.capitalize()} accuracy", "—", help="Not measured for this version.")
    verdict = verdict_of(card)
    if verdict is not None:
        container.caption(verdict.summary[0].upper() + verdict.summary[1:])


def activation_panel(card, key: str) -> None:
    """Before/after accuracy beside a Make-active button that asks for confirmation when the version is worse
    than the margin allows (issue: never make a version active without a word)."""
    if card.version == active_version():
        st.caption(f"{card.version} is the active version.")
        return
    left, right = st.columns([3, 1], vertical_alignment="center")
    show_accuracy_change(card, left)
    reason = activation_check(card)
    pending = st.session_state.get("retrain_confirm") == f"{key}:{card.version}"
    if not pending and right.button("Make active", key=f"{key}_activate", type="primary",
                                    disabled=not allowed("activate"), help=off_help("activate")) \
            and allowed("activate"):
        if reason is None:
            activate(card.version)
        else:  # ask first: the next run shows the warning and the confirm button
            st.session_state["retrain_confirm"] = f"{key}:{card.version}"
            st.rerun()
    if pending:
        st.warning(f"{md(short_version(card.version))} {md(reason)}. Make it active anyway? The app and the "
                   "history checks will use it from now on.")
        yes, no = st.columns(2)
        if yes.button("Yes, make it active", key=f"{key}_confirm", disabled=not allowed("activate")) \
                and allowed("activate"):
            activate(card.version)
        if no.button("Cancel", key=f"{key}_cancel"):
            st.session_state.pop("retrain_confirm", None)
            st.rerun()


def activate(version: str) -> None:
    """Make ``version`` active; the selector below follows it."""
    models.set_active(version)
    st.session_state.pop("retrain_confirm", None)
    st.session_state["retrain_version"] = version
    st.toast(f"{short_version(version)} is now active.")
    st.rerun()


def default_drift_spec() -> str:
    """The Drift Lab's current spec; without a Drift Lab visit, a drift strong enough to cost accuracy on
    every dataset (digits shrugs off severity 3 noise), so the before/after comparison shows something."""
    return st.session_state.get(KEY_DRIFT_SPEC) or "gaussian_noise:5"


# -------------------------------------------------------------------------------------------- the form
parent = active_version()
strategies = retrain.list_strategies()
DRIFT_SPEC = default_drift_spec()
with st.form("retrain_form"):
    left, right = st.columns(2)
    strategy = left.selectbox(
        "Strategy", strategies, key="retrain_strategy",
        help="; ".join(f"{name}: {retrain.strategy_info(name).description}" for name in strategies))
    # The box starts from the Drift Lab's spec, as the widget's own value (the widget keyed by it, so a new
    # Drift Lab spec replaces what was typed and an unchanged one keeps it). A value preset through
    # session state instead was lost when the browser redrew the form, and the box came back empty.
    spec_text = right.text_input("Drift spec", value=DRIFT_SPEC, key=f"retrain_spec:{DRIFT_SPEC}",
                                 help="Follows the Drift Lab's current setting; edit it here, e.g. "
                                      "gaussian_noise:3@0.5")
    st.caption(f"Parent model: **{parent}** (the active version). Every new version passes the guard: clean "
               f"accuracy within {100 * MAX_CLEAN_DROP:g} points of the parent's and not worse on the drift, "
               "or it is marked and never made active without your confirmation.")
    submitted = st.form_submit_button("Retrain", type="primary", disabled=not allowed("retrain"),
                                      help=off_help("retrain"))
if submitted:
    try:
        spec_text = corruptions.DriftSpec.parse(spec_text).text
    except Exception as error:
        st.error(f"Drift spec {md(repr(spec_text))} does not parse: {md(error)}")
    else:
        with user_errors():
            submit_job("retrain", {"model": parent, "strategy": strategy,
                                   "dataset": models.card(parent).dataset, "drift": spec_text})
        st.rerun()


job = ended_job("retrain", "No retrain job yet.")
if job is not None:
    version = (job.result or {}).get("version") if job.status == "done" else None
    if version:
        new_card = models.card(version)
        st.markdown(f"New version **{version}** (parent {new_card.parent}).")
        show_before_after([new_card], key=f"before_after_{version}")
        activation_panel(new_card, key="retrain_new")

# ----------------------------------------------------------------------------------- versions, compare
st.subheader("Versions and lineage")
cards = models.list()
active = active_version()
table = cards_frame(cards)
table.insert(0, "active", table["version"] == active)
table.insert(2, "guard", [guard_label(card) for card in cards])
st.dataframe(table, hide_index=True, key="retrain_registry", column_config=cards_column_config())
versions = [card.version for card in cards]
if st.session_state.get("retrain_version") not in versions:
    st.session_state["retrain_version"] = active if active in versions else versions[0]
left, right = st.columns([4, 1], vertical_alignment="bottom")
chosen = left.selectbox("Version", versions, key="retrain_version",
                        format_func=lambda v: f"{v} (active)" if v == active else v)
if right.button("Delete", disabled=chosen == active or not allowed("delete"), key="retrain_delete",
                type="secondary", help=off_help("delete", "Remove this version (card and weights). The "
                                                          "active version cannot be deleted.")) \
        and allowed("delete"):
    models.delete(chosen)
    from zeal_core.reference import forget_references

    forget_references()  # no fitted reference may outlive its model
    st.session_state.pop("retrain_version", None)
    st.toast(f"Deleted {chosen}.")
    st.rerun()
chosen_card = models.card(chosen)
activation_panel(chosen_card, key="retrain_chosen")
if chosen_card.parent:
    lineage, cursor = [chosen_card.version], chosen_card
    while cursor.parent and cursor.parent not in lineage:
        lineage.append(cursor.parent)
        try:
            cursor = models.card(cursor.parent)
        except Exception:  # the parent was deleted: the chain ends here
            break
    st.markdown("Lineage: " + " → ".join(f"`{short_version(v)}`" for v in reversed(lineage)))
adapted = [card.version for card in cards if isinstance((card.metrics or {}).get("clean_before"), float)]
if adapted:
    compared = st.multiselect("Compare retrained versions", adapted, key="retrain_compare",
                              default=[chosen] if chosen in adapted else adapted[:1],
                              format_func=short_version)
    show_before_after([models.card(version) for version in compared], key="before_after_compare")


# ------------------------------------------------------------------------------------------------ jobs
def jobs_panel(polling: bool) -> None:
    """Every job, re-read from disk each second while any is live: one source for status, progress and
    message. Once the last live job ends the page reruns once and stops polling (an idle page costs the
    server nothing, however many users keep it open)."""
    jobs = queue.list()
    if not jobs:
        st.caption("No jobs yet.")
        return
    if polling and not any(job.status in ("queued", "running") for job in jobs):
        st.rerun()
    st.dataframe([{"id": job.id, "kind": job.kind, "status": job.status, "progress": job.progress,
                   "message": job.error or job.message, "created": job.created} for job in jobs[:20]],
                 hide_index=True, key="retrain_jobs", column_config={
                     "progress": st.column_config.ProgressColumn(min_value=0, max_value=1)})
    live = [job.id for job in jobs if job.status in ("queued", "running")]
    if live:
        left, right = st.columns([3, 1])
        to_cancel = left.selectbox("Live job", live, key="retrain_cancel_job", label_visibility="collapsed")
        if right.button("Cancel job", key="retrain_cancel", disabled=not allowed("cancel"),
                        help=off_help("cancel")) and allowed("cancel"):
            queue.cancel(to_cancel)


st.subheader("Jobs")
polling = any(job.status in ("queued", "running") for job in queue.list())
st.fragment(jobs_panel, run_every=POLL_SECONDS if polling else None)(polling)
