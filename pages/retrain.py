"""Retrain: adapt the active model to a drift in a background job, compare before/after, manage versions."""

import plotly.express as px
import streamlit as st

from pages._ui import (
    KEY_DRIFT_SPEC,
    active_version,
    cards_frame,
    ended_job,
    ensure_app_navigation,
    first_run_panel,
    job_queue,
    registry,
    submit_job,
    user_errors,
)
from zeal_core import corruptions, retrain

ensure_app_navigation()  # a fresh server's first run may skip app.py: go through it


st.title("Retrain")
if not first_run_panel():
    st.stop()
models = registry()
queue = job_queue()


def before_after_frame(metrics: dict):
    """Long table (stage, data, accuracy) from a retrained card's metrics, for a grouped bar chart."""
    import pandas as pd

    rows = [{"stage": stage, "data": data, "accuracy": float(metrics[f"{data}_{stage}"])}
            for stage in ("before", "after") for data in ("clean", "drifted")
            if isinstance(metrics.get(f"{data}_{stage}"), (int, float))]
    return pd.DataFrame(rows, columns=["stage", "data", "accuracy"])


def show_before_after(card) -> None:
    """Grouped bars: accuracy on clean and drifted data, before and after adaptation."""
    frame = before_after_frame(card.metrics or {})
    if frame.empty:
        st.caption(f"{card.version} has no before/after metrics.")
        return
    figure = px.bar(frame, x="data", y="accuracy", color="stage", barmode="group", text_auto=".1%",
                    color_discrete_map={"before": "#94a3b8", "after": "#0f766e"}, range_y=[0, 1.05])
    figure.update_layout(height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         title=f"{card.version}: {card.strategy} on {card.drift_spec}")
    st.plotly_chart(figure, key=f"before_after_{card.version}")


# -------------------------------------------------------------------------------------------- the form
parent = active_version()
strategies = retrain.list_strategies()
with st.form("retrain_form"):
    left, right = st.columns(2)
    strategy = left.selectbox("Strategy", strategies, key="retrain_strategy",
                              help="bn-adapt: re-estimate BatchNorm statistics; tent: entropy minimisation; "
                                   "finetune: a few epochs on drifted data; retrain: from scratch with "
                                   "corruption augmentation.")
    # Without a Drift Lab visit, a drift strong enough to cost accuracy on every dataset (digits shrugs off
    # severity 3 noise), so the before/after comparison shows something to fix.
    spec_text = right.text_input("Drift spec", value=st.session_state.get(KEY_DRIFT_SPEC, "gaussian_noise:5"),
                                 key="retrain_spec", help="From the Drift Lab, e.g. gaussian_noise:3@0.5")
    st.caption(f"Parent model: **{parent}** (the active version).")
    submitted = st.form_submit_button("Retrain", type="primary")
if submitted:
    try:
        spec_text = corruptions.DriftSpec.parse(spec_text).text
    except Exception as error:
        st.error(f"Drift spec {spec_text!r} does not parse: {error}")
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
        show_before_after(new_card)
        if version != active_version() and st.button(f"Make {version} active", key=f"activate_{version}"):
            models.set_active(version)
            st.rerun()

# ------------------------------------------------------------------------------------- registry + lineage
st.subheader("Versions and lineage")
cards = models.list()
active = active_version()
table = cards_frame(cards)
table.insert(0, "active", table["version"] == active)
st.dataframe(table, hide_index=True, key="retrain_registry", column_config={
    "accuracy": st.column_config.NumberColumn(format="percent"),
    "active": st.column_config.CheckboxColumn(width="small"),
})
versions = [card.version for card in cards]
left, right = st.columns([3, 1])
chosen = left.selectbox("Version", versions, index=versions.index(active) if active in versions else 0,
                        key="retrain_version", label_visibility="collapsed")
if right.button("Make active", disabled=chosen == active, key="retrain_make_active"):
    models.set_active(chosen)
    st.rerun()
chosen_card = models.card(chosen)
if chosen_card.parent:
    lineage, cursor = [chosen_card.version], chosen_card
    while cursor.parent and cursor.parent not in lineage:
        lineage.append(cursor.parent)
        try:
            cursor = models.card(cursor.parent)
        except Exception:  # the parent was deleted: the chain ends here
            break
    st.markdown("Lineage: " + " → ".join(f"`{v}`" for v in reversed(lineage)))
    show_before_after(chosen_card)

# ------------------------------------------------------------------------------------------------ jobs
st.subheader("Jobs")
jobs = queue.list()
if jobs:
    st.dataframe([{"id": job.id, "kind": job.kind, "status": job.status, "progress": job.progress,
                   "message": job.message, "created": job.created} for job in jobs[:20]],
                 hide_index=True, key="retrain_jobs", column_config={
                     "progress": st.column_config.ProgressColumn(min_value=0, max_value=1)})
    live = [job.id for job in jobs if job.status in ("queued", "running")]
    if live:
        left, right = st.columns([3, 1])
        to_cancel = left.selectbox("Live job", live, key="retrain_cancel_job", label_visibility="collapsed")
        if right.button("Cancel job", key="retrain_cancel"):
            queue.cancel(to_cancel)
            st.rerun()
else:
    st.caption("No jobs yet.")
