"""Model: train in the background with live curves, pick a version from the registry, see its metrics."""

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from pages._ui import (
    KEY_JOB_PREFIX,
    POLL_SECONDS,
    activate_job_result,
    active_version,
    cards_frame,
    dataset_name,
    ensure_app_navigation,
    evaluate_cached,
    job_queue,
    registry,
    show_job,
    submit_job,
    watched_job,
)
from zeal_core.settings import get_settings

ensure_app_navigation()  # a fresh server's first run may skip app.py: go through it

st.title("Model")
models = registry()


def history_frame(job):
    """The metrics a train job has reported so far, one row per distinct progress step (kept per user).

    The job file holds only the latest metrics, so every poll appends them here when they are new.
    """
    store = st.session_state.setdefault("zeal_train_history", {})
    rows = store.setdefault(job.id, [])
    metrics = {key: value for key, value in (job.metrics or {}).items() if isinstance(value, (int, float))}
    if metrics and (not rows or rows[-1] != metrics):
        rows.append(metrics)
    return pd.DataFrame(rows)


def curves_figure(history, title: str = "Training curves") -> go.Figure:
    """Loss (left axis) and accuracies (right axis) against the step or epoch the job reported them at."""
    history = history.ffill()
    x = next((c for c in ("global_step", "epoch") if c in history.columns), None)
    xs = history[x] if x else history.index
    figure = go.Figure()
    for column in [c for c in history.columns if "loss" in c]:
        figure.add_scatter(x=xs, y=history[column], name=column, mode="lines+markers")
    for column in [c for c in history.columns if "accuracy" in c]:
        figure.add_scatter(x=xs, y=history[column], name=column, mode="lines+markers", yaxis="y2")
    figure.update_layout(height=300, margin={"l": 10, "r": 10, "t": 40, "b": 10}, title=title,
                         xaxis_title=x or "report", yaxis_title="loss",
                         yaxis2={"title": "accuracy", "overlaying": "y", "side": "right", "range": [0, 1.02],
                                 "tickformat": ".0%", "dtick": 0.2, "showgrid": False},
                         legend={"orientation": "h", "y": -0.25})
    return figure


# ------------------------------------------------------------------------------------------------ train
st.subheader("Train a new version")
with st.form("train_form", border=True):
    columns = st.columns(3)
    max_epochs = get_settings().max_epochs  # the demo mode keeps training short on a shared host
    epochs = columns[0].number_input("Epochs", min_value=1, max_value=max_epochs, value=min(3, max_epochs),
                                     step=1)
    seed = columns[1].number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1)
    make_active = columns[2].checkbox("Make it active when done", value=True)
    start = st.form_submit_button(f"Train on {dataset_name()}", type="primary",
                                  disabled=job_queue() is None)
if start:
    submit_job("train", {"dataset": dataset_name(), "epochs": int(epochs), "seed": int(seed)})
    st.session_state.pop("zeal_train_history", None)
    st.session_state["zeal_train_make_active"] = bool(make_active)


@st.fragment(run_every=POLL_SECONDS)
def train_progress() -> None:
    """While the user's train job runs: progress bar and live curves; the page reruns once it ends."""
    job = watched_job("train")
    if job is None:
        return
    show_job(job)
    history = history_frame(job)
    if not history.empty:
        st.plotly_chart(curves_figure(history), key=f"curves_{job.id}")
    if job.is_final:
        st.rerun()


job = watched_job("train")
if job is None:
    st.caption("No training job running.")
elif not job.is_final:
    train_progress()
else:
    show_job(job)
    if st.session_state.get(KEY_JOB_PREFIX + "train") == job.id:
        st.session_state.pop(KEY_JOB_PREFIX + "train", None)
        if job.status == "done" and st.session_state.pop("zeal_train_make_active", True):
            activate_job_result(job)
            st.rerun()

# --------------------------------------------------------------------------------------------- registry
st.subheader("Versions")
cards = models.list()
if not cards:
    st.info("No versions yet: train one above (or from the Home page).")
    st.stop()
active = active_version()
table = cards_frame(cards)
table.insert(0, "active", table["version"] == active)
st.dataframe(table, hide_index=True, column_config={
    "accuracy": st.column_config.NumberColumn(format="percent"),
    "active": st.column_config.CheckboxColumn(width="small"),
})
versions = [card.version for card in cards]
chosen = st.selectbox("Version", versions, index=versions.index(active) if active in versions else 0,
                      key="model_version")
if st.button("Make active", disabled=chosen == active, key="model_make_active"):
    models.set_active(chosen)
    st.rerun()

# ---------------------------------------------------------------------------------------------- metrics
card = models.card(chosen)
result = evaluate_cached(chosen, card.dataset)
left, right = st.columns([1, 2])
left.metric("Validation accuracy", f"{result['accuracy']:.1%}", help=f"{result['n']} validation images")
left.dataframe({"class": result["class_names"], "accuracy": result["per_class_accuracy"]}, hide_index=True,
               column_config={"accuracy": st.column_config.ProgressColumn(min_value=0, max_value=1,
                                                                          format="percent")})
heatmap = px.imshow(result["confusion"], x=result["class_names"], y=result["class_names"], text_auto=True,
                    color_continuous_scale="Teal", labels={"x": "predicted", "y": "true", "color": "images"},
                    aspect="auto")
heatmap.update_layout(title="Confusion matrix (validation)", height=460,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
right.plotly_chart(heatmap, key="confusion")
history = (card.metrics or {}).get("history")
if isinstance(history, list) and history:
    st.plotly_chart(curves_figure(pd.DataFrame(history).drop(columns=["images_per_s", "train_seconds",
                                                                      "epoch_seconds"], errors="ignore"),
                                  f"Training history of {card.version}"), key="history")
with st.expander("Model card"):
    st.json({"version": card.version, "model_config": card.model_config.to_dict(), "dataset": card.dataset,
             "recipe": card.recipe, "parent": card.parent, "strategy": card.strategy,
             "drift_spec": card.drift_spec, "metrics": card.metrics, "created": card.created,
             "notes": card.notes})
