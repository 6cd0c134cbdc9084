"""Monitor: a simulated production stream with a drift schedule, alarms, and an auto-retrain policy."""

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pages._ui import (
    active_version,
    ended_job,
    ensure_app_navigation,
    first_run_panel,
    job_queue,
    registry,
    require,
    submit_job,
    user_errors,
)

ensure_app_navigation()  # a fresh server's first run may skip app.py: go through it

monitor = require("zeal_core.monitor", "The Monitor page")
corruptions = require("zeal_core.corruptions", "The Monitor page")
retrain = require("zeal_core.retrain", "The Monitor page")
drift = require("zeal_core.drift", "The Monitor page")

st.title("Monitor")
st.write("A simulated production stream: batches of held-out images arrive over time, drifting as the "
         "schedule says. A detector tests each batch against the reference; the policy retrains after k "
         "alarms.")
if not first_run_panel():
    st.stop()
NO_POLICY = "none (observe only)"


def schedule_text(preset: str, corruption: str, severity: float, before: int, after: int) -> str:
    """The schedule text of a preset (sudden, gradual, recurring)."""
    spec = f"{corruption}:{severity:g}"
    if preset == "sudden":
        return monitor.Schedule.sudden(spec, before=before, after=after).text
    if preset == "gradual":
        return monitor.Schedule.gradual(corruption, severity=severity, before=before, ramp=after,
                                        after=max(1, after // 2)).text
    return monitor.Schedule.recurring(spec, clean=before, drifted=max(1, after // 2), cycles=2).text


def stream_figure(result: dict) -> go.Figure:
    """Top: p-value per batch (log) with alarms; bottom: accuracy with and without the policy; retrains."""
    batches = result["batches"]
    index = [b["index"] for b in batches]
    alpha = result["config"].get("alpha", 0.05)
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                           subplot_titles=("Batch test p-value", "Accuracy per batch"))
    figure.add_scatter(x=index, y=[max(b["p_value"], 1e-6) for b in batches], mode="lines+markers",
                       name="p-value", line={"color": "#0f766e"},
                       customdata=[b["drift_spec"] for b in batches],
                       hovertemplate="batch %{x}<br>p %{y:.3g}<br>%{customdata}<extra></extra>", row=1, col=1)
    alarms = [b for b in batches if b["alarm"]]
    figure.add_scatter(x=[b["index"] for b in alarms], y=[max(b["p_value"], 1e-6) for b in alarms],
                       mode="markers", name="alarm", marker={"color": "#dc2626", "symbol": "x", "size": 10},
                       row=1, col=1)
    figure.add_hline(y=alpha, line_dash="dash", line_color="#dc2626", row=1, col=1)
    figure.add_scatter(x=index, y=[b["accuracy_without_policy"] for b in batches], mode="lines",
                       name="without policy", line={"color": "#94a3b8"}, row=2, col=1)
    figure.add_scatter(x=index, y=[b["accuracy_with_policy"] for b in batches], mode="lines",
                       name="with policy", line={"color": "#0f766e", "width": 3}, row=2, col=1)
    for event in result["retrains"]:
        figure.add_vline(x=event["batch_index"] + 0.5, line_dash="dot", line_color="#7c3aed")
    drifted = [b["index"] for b in batches if b["drift_spec"] not in ("clean", "")]
    if drifted:
        figure.add_vrect(x0=drifted[0] - 0.5, x1=drifted[-1] + 0.5, fillcolor="#fde68a", opacity=0.25,
                         line_width=0)
    figure.update_yaxes(type="log", title="p-value", row=1, col=1)
    figure.update_yaxes(range=[0, 1.02], title="accuracy", row=2, col=1)
    figure.update_xaxes(title="batch", row=2, col=1)
    figure.update_layout(height=560, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         legend={"orientation": "h", "y": -0.12})
    return figure


def show_result(result: dict) -> None:
    """Summary metrics, the stream figure and the retrain events of a finished simulation."""
    summary = result["summary"]
    columns = st.columns(4)
    columns[0].metric("Alarms", summary["alarms"], help=f"{summary['false_alarms_clean']} on clean batches")
    delay = summary["detection_delay_batches"]
    columns[1].metric("Detection delay", "—" if delay is None else f"{delay} batches")
    columns[2].metric("Retrains", summary["retrains"])
    with_policy, without = summary["drifted_accuracy_with_policy"], summary["drifted_accuracy_without_policy"]
    if with_policy is not None and without is not None:
        columns[3].metric("Drifted accuracy with policy", f"{with_policy:.1%}",
                          delta=f"{(with_policy - without) * 100:+.1f} pts vs without")
    st.plotly_chart(stream_figure(result), key="monitor_stream")
    if result["retrains"]:
        st.dataframe([{"after batch": e["batch_index"], "strategy": e["strategy"], "parent": e["parent"],
                       "new version": e["version"], "seconds": round(e["seconds"], 2)}
                      for e in result["retrains"]], hide_index=True, key="monitor_retrains")
    st.caption(f"Schedule `{result['schedule']}` · {summary['batches']} batches in {result['seconds']:.1f} s")


# ----------------------------------------------------------------------------------------------- controls
left, right = st.columns(2)
with left:
    st.markdown("**Drift schedule**")
    preset = st.segmented_control("Preset", ["sudden", "gradual", "recurring", "custom"], default="sudden",
                                  key="monitor_preset") or "sudden"
    names = corruptions.list_corruptions()
    columns = st.columns(2)
    corruption = columns[0].selectbox("Corruption", names, key="monitor_corruption",
                                      index=names.index("gaussian_noise") if "gaussian_noise" in names else 0)
    severity = columns[1].slider("Severity", 0.5, 5.0, 5.0, step=0.5, key="monitor_severity")
    before = columns[0].number_input("Clean batches first", 1, 200, 8, key="monitor_before")
    after = columns[1].number_input("Drifted batches", 1, 400, 12, key="monitor_after")
    preset_text = schedule_text(preset if preset != "custom" else "sudden", corruption, severity, int(before),
                                int(after))
    if preset == "custom":
        text = st.text_input("Schedule", value=preset_text, key="monitor_schedule_text",
                             help="Comma-separated spec*batches, e.g. clean*10,gaussian_noise:1..5*20")
    else:
        text = preset_text
        st.code(text, language=None)
with right:
    st.markdown("**Detector and policy**")
    columns = st.columns(2)
    detectors = drift.list_detectors()
    detector = columns[0].selectbox("Batch detector", detectors, key="monitor_detector",
                                    index=detectors.index("mmd") if "mmd" in detectors else 0)
    batch_size = columns[1].select_slider("Batch size", [32, 64, 128], value=64, key="monitor_batch")
    strategy = columns[0].selectbox("Retrain strategy", [*retrain.list_strategies(), NO_POLICY],
                                    key="monitor_strategy")
    alarms = columns[1].number_input("k alarms to retrain", 1, 20, 3, key="monitor_k")
    window = columns[0].number_input("within the last (batches)", 1, 50, 5, key="monitor_window")
    cooldown = columns[1].number_input("Cool-down (batches)", 0, 200, 10, key="monitor_cooldown")

try:
    schedule = monitor.Schedule.parse(text)
except Exception as error:
    st.error(f"Schedule {text!r} does not parse: {error}")
    st.stop()
config = {"batch_size": int(batch_size), "detector": detector,
          "strategy": None if strategy == NO_POLICY else strategy, "alarms_to_retrain": int(alarms),
          "window": int(window), "cooldown": int(cooldown)}
st.caption(f"{len(schedule)} batches of {batch_size} images from the model "
           f"**{active_version()}** (the active version).")
if st.button("Run the stream", type="primary", key="monitor_run", disabled=job_queue() is None):
    with user_errors():
        submit_job("monitor", {"model": active_version(),
                               "dataset": registry().card(active_version()).dataset,
                               "schedule": schedule.text, "config": config})
    st.rerun()


job = ended_job("monitor", "Press Run to simulate the stream (it runs in the background).")
if job is not None and job.status == "done" and job.result:
    show_result(job.result)
