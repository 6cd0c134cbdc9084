"""Retrain: adapt the active model to a drift in a background job, compare before/after, manage versions."""

import plotly.express as px
import streamlit as st

from app_pages._ui import (
    KEY_DRIFT_SPEC,
    POLL_SECONDS,
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
    submit_job,
    user_errors,
)
from zeal_core import corruptions, retrain

st.title("Retrain")
if not first_run_panel():
    st.stop()
models = registry()
queue = job_queue()


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
        if version != active_version() and st.button(f"Make {version} active", key=f"activate_{version}",
                                                     disabled=not allowed("activate"),
                                                     help=off_help("activate")) and allowed("activate"):
            models.set_active(version)
            st.session_state["retrain_version"] = version  # the selector below follows the new choice
            st.rerun()

# ----------------------------------------------------------------------------------- versions, compare
st.subheader("Versions and lineage")
cards = models.list()
active = active_version()
table = cards_frame(cards)
table.insert(0, "active", table["version"] == active)
st.dataframe(table, hide_index=True, key="retrain_registry", column_config=cards_column_config())
versions = [card.version for card in cards]
if st.session_state.get("retrain_version") not in versions:
    st.session_state["retrain_version"] = active if active in versions else versions[0]
left, middle, right = st.columns([3, 1, 1], vertical_alignment="bottom")
chosen = left.selectbox("Version", versions, key="retrain_version",
                        format_func=lambda v: f"{v} (active)" if v == active else v)
if middle.button("Make active", disabled=chosen == active or not allowed("activate"),
                 key="retrain_make_active", help=off_help("activate")) and allowed("activate"):
    models.set_active(chosen)
    st.rerun()
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
