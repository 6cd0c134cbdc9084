"""Monitor: a simulated production stream with alarms and an auto-retrain policy, and the History of real
checks (command line, uploads) with the retrain policy over them."""

import pandas as pd
import streamlit as st

from app_pages import _lab, _labelfree
from app_pages._ui import (
    active_card,
    active_version,
    allowed,
    code,
    ended_job,
    first_run_panel,
    history_store,
    md,
    off_help,
    registry,
    short_version,
    show_dataset_note,
    show_history_error,
    shows_server_paths,
    submit_job,
    user_errors,
)
from zeal_core.config import override
from zeal_core.corruptions import list_drift_kinds
from zeal_core.drift import list_detectors
from zeal_core.errors import ZealError
from zeal_core.history import HistoryStore, default_path, load_policy, save_policy
from zeal_core.monitor import Schedule
from zeal_core.retrain import continual_strategies, list_strategies, unlabeled_strategies

st.title("Monitor")
if not first_run_panel():
    st.stop()
show_dataset_note(active_card())
NO_POLICY = "none (observe only)"
AFTER_ALARMS, CONTINUAL = "after k alarms (retrain)", "continually, every batch"
MIXED_KINDS = ("gaussian_noise", "fog", "contrast", "motion_blur")  # the mixed preset's default cycle
REAL = ("cli", "upload", "api")  # origins of real checks; "monitor" marks the simulation's own


def schedule_text(preset: str, corruption: str | list[str], severity: float, before: int,
                  drifted: int) -> str:
    """The schedule text of a preset; every preset has exactly ``drifted`` drifted batches (``mixed``: the
    kinds in ``corruption`` take turns, one batch each)."""
    if preset == "mixed":
        kinds = corruption if isinstance(corruption, list) else [corruption]
        return Schedule.mixed([f"{kind}:{severity:g}" for kind in kinds], batches=drifted, clean=before).text
    spec = f"{corruption}:{severity:g}"
    if preset == "sudden":
        return Schedule.sudden(spec, before=before, after=drifted).text
    if preset == "gradual":  # half the drifted batches ramp up, the rest stay at full strength
        ramp = max(1, drifted // 2)
        return Schedule.gradual(corruption, severity=severity, before=before, ramp=ramp,
                                after=max(1, drifted - ramp)).text
    per_cycle = max(1, drifted // 2)  # recurring: two cycles of clean, then drifted
    return Schedule.recurring(spec, clean=before, drifted=per_cycle, cycles=2).text


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
    st.plotly_chart(_lab.stream_figure(result), key="monitor_stream")
    if result["retrains"]:
        st.caption("After a retrain the reference follows the new model, so a drift that lasts reads as "
                   "normal again: the p-values rise although the data stays drifted.")
    if result["retrains"]:
        st.dataframe([{"after batch": e["batch_index"], "strategy": e["strategy"], "parent": e["parent"],
                       "new version": e["version"], "served": e.get("deployed", True),
                       "guard": e.get("guard") or "", "seconds": round(e["seconds"], 2)}
                      for e in result["retrains"]], hide_index=True, key="monitor_retrains")
    if result["config"].get("continual"):
        resets, gated = summary.get("adapter_resets", 0), summary.get("adapter_gated", 0)
        st.caption(f"Continual adaptation with {result['config']['strategy']}: the served model learned from "
                   f"every batch that looked drifted; {gated} batch(es) looked like clean data and the "
                   f"source served them unchanged; it went back to the source {resets} time(s) (a collapse "
                   "or a failed clean check). The label-free estimate is not shown: it is calibrated for the "
                   "source.")
    st.caption(f"Schedule `{result['schedule']}` · {summary['batches']} batches in {result['seconds']:.1f} s")


def schedule_controls() -> str:
    """The schedule: a preset built from a corruption and counts, or free text in custom mode."""
    st.markdown("**Drift schedule**")
    preset = st.segmented_control("Preset", ["sudden", "gradual", "recurring", "mixed", "custom"],
                                  default="sudden", key="monitor_preset",
                                  help="mixed: several drift kinds take turns, one batch each") or "sudden"
    if preset == "custom":  # the preset widgets would do nothing here: only the text counts
        return st.text_input("Schedule", value="clean*8,gaussian_noise:1..5*6,gaussian_noise:5*6",
                             key="monitor_schedule_text",
                             help="Comma-separated spec*batches; a range a..b ramps over its segment, e.g. "
                                  "clean*10,gaussian_noise:1..5*20")
    names = list_drift_kinds()
    columns = st.columns(2)
    if preset == "mixed":
        default = [name for name in MIXED_KINDS if name in names]
        corruption = columns[0].multiselect("Drift kinds (one batch each, in turn)", names, default=default,
                                            key="monitor_kinds") or names[:1]
    else:
        first = names.index("gaussian_noise") if "gaussian_noise" in names else 0
        corruption = columns[0].selectbox("Drift kind", names, index=first, key="monitor_corruption")
    severity = columns[1].slider("Severity", 0.5, 5.0, 5.0, step=0.5, key="monitor_severity")
    before = columns[0].number_input("Clean batches first", 1, 200, 8, key="monitor_before")
    drifted = columns[1].number_input("Drifted batches", 1, 400, 12, key="monitor_after",
                                      help="Batches under the drift in all (gradual: half of them ramp up; "
                                           "recurring: two bursts of half each).")
    text = schedule_text(preset, corruption, severity, int(before), int(drifted))
    st.code(text, language=None)
    return text


def simulation() -> None:
    """The simulated stream: schedule, detector and policy, a Run button, the result."""
    left, right = st.columns(2)
    with left:
        text = schedule_controls()
    with right:
        st.markdown("**Detector and policy**")
        columns = st.columns(2)
        detectors = list_detectors()
        detector = columns[0].selectbox("Batch detector", detectors, key="monitor_detector",
                                        index=detectors.index("mmd") if "mmd" in detectors else 0)
        batch_size = columns[1].select_slider("Batch size", [32, 64, 128], value=64, key="monitor_batch")
        mode = st.radio("Adapt", [AFTER_ALARMS, CONTINUAL], horizontal=True, key="monitor_mode",
                        help="After k alarms: the strategy makes a new version from the alarmed batches, "
                             "which serves if the guard passes it. Continually: the strategy adapts the "
                             "served model on every batch, with a way back to the source "
                             "(docs/retraining.md).")
        continual = mode == CONTINUAL
        columns = st.columns(2)
        choices = [*continual_strategies()] if continual else [*list_strategies(), NO_POLICY]
        strategy = columns[0].selectbox("Strategy", choices, key="monitor_strategy")
        alarms = columns[1].number_input("k alarms to retrain", 1, 20, 3, key="monitor_k", disabled=continual)
        window = columns[0].number_input("within the last (batches)", 1, 50, 5, key="monitor_window",
                                         disabled=continual)
        cooldown = columns[1].number_input("Cool-down (batches)", 0, 200, 10, key="monitor_cooldown",
                                           disabled=continual)
    try:
        schedule = Schedule.parse(text)
    except ZealError as error:
        st.error("This schedule does not parse:")
        st.code(str(error), language=None)  # user text verbatim: Markdown would eat its '*'
        return
    config = {"batch_size": int(batch_size), "detector": detector,
              "strategy": None if strategy == NO_POLICY else strategy, "alarms_to_retrain": int(alarms),
              "window": int(window), "cooldown": int(cooldown), "continual": continual}
    st.caption(f"{len(schedule)} batches of {batch_size} held-out images, tested with the model "
               f"**{short_version(active_version())}** (the active version).")
    if st.button("Run the stream", type="primary", key="monitor_run", disabled=not allowed("monitor"),
                 help=off_help("monitor")):
        with user_errors():
            submit_job("monitor", {"model": active_version(),
                                   "dataset": registry().card(active_version()).dataset,
                                   "schedule": schedule.text, "config": config})
        st.rerun()
    job = ended_job("monitor", "Press Run to simulate the stream (it runs in the background).")
    if job is not None and job.status == "done" and job.result:
        show_result(job.result)


def show_check(row) -> None:
    """One recorded check's report: verdict, rule, detectors, most drifted files, skipped files."""
    report = row.report
    decision = report.get("decision") or {}
    columns = st.columns([1, 0.8, 1.4])
    columns[0].metric("Verdict", "drift" if row.drift else "no drift", help=decision.get("rule"))
    columns[1].metric("Images", row.n)
    if row.estimated_accuracy is None:
        columns[2].metric("Estimated accuracy", "—", help="No label-free estimate was recorded.")
    else:
        shown = next((item for item in report.get("estimates", []) if item.get("estimator") == row.estimator),
                     {"low": row.estimate_low, "high": row.estimate_high, "n": row.n})
        caution = _labelfree.estimate_caution(shown)
        interval = f"90 % interval {row.estimate_low:.0%}–{row.estimate_high:.0%}"
        columns[2].metric("Estimated accuracy", f"{row.estimated_accuracy:.1%}",
                          delta=("⚠ " + interval) if caution else interval,
                          delta_color="orange" if caution else "off", delta_arrow="off",
                          help=f"Estimated without labels by {row.estimator}.")
        if caution:
            columns[2].caption(caution)
    st.caption(f"#{row.id} · {md(row.created)} · {md(row.origin)} · {md(row.source)} · model "
               f"{code(row.model_version)}")  # the source holds uploaded file names: text, never Markdown
    if row.diagnosis:
        st.markdown(f"**Diagnosis:** {md(row.diagnosis)}")
    threshold = decision.get("threshold", 0.0)
    st.table(pd.DataFrame([{"detector": item["detector"], "p-value": _lab.p_value_text(item),
                            "verdict": "drift" if item["p_value"] < threshold else "no drift"}
                           for item in report.get("detectors", [])]).set_index("detector"))
    note = _lab.floor_note(report.get("detectors", []))
    if note:
        st.caption(note)
    drifted = report.get("most_drifted", [])
    if drifted:
        st.markdown("Most drift-typical images: " + ", ".join(
            f"{md(item['file'] or item['index'])} ({item['score']:.2f})" for item in drifted[:8]))
    if report.get("skipped"):
        st.caption(f"{len(report['skipped'])} file(s) could not be read.")


def policy_form(store: HistoryStore) -> None:
    """The retrain policy over real checks: switch it on, tune it, see what it did."""
    policy = load_policy(store)
    with st.form("history_policy"):
        st.markdown("**Retrain policy on real checks** (a label-free strategy adapts on the drifted batches: "
                    f"{', '.join(unlabeled_strategies())})")
        columns = st.columns(4)
        enabled = columns[0].toggle("On", value=policy.enabled, key="policy_enabled")
        strategies = unlabeled_strategies()
        strategy = columns[1].selectbox("Strategy", strategies, index=strategies.index(policy.strategy),
                                        key="policy_strategy")
        promote = columns[2].selectbox("Make it active", ["manual", "auto"], key="policy_promote",
                                       index=["manual", "auto"].index(policy.promote),
                                       help="manual: you activate the new version (Retrain page); auto: "
                                            "only if the guard passes it: clean accuracy within the margin "
                                            "of its parent's, and not estimated worse on the drifted "
                                            "batches.")
        margin = columns[3].number_input("Margin (points)", 0.0, 50.0, policy.margin * 100, step=0.5,
                                         key="policy_margin")
        columns = st.columns(3)
        alarms = columns[0].number_input("k drifted checks", 1, 50, policy.alarms_to_retrain, key="policy_k")
        window = columns[1].number_input("within the last (checks)", 1, 100, policy.window,
                                         key="policy_window")
        cooldown = columns[2].number_input("Cool-down (checks)", 0, 100, policy.cooldown,
                                           key="policy_cooldown")
        if st.form_submit_button("Save the policy", disabled=not allowed("policy"), help=off_help("policy")) \
                and allowed("policy"):
            with user_errors():
                save_policy(store, override(policy, {
                    "enabled": enabled, "strategy": strategy, "promote": promote, "margin": margin / 100,
                    "alarms_to_retrain": int(alarms), "window": int(window), "cooldown": int(cooldown)},
                    "history policy"))
            st.toast("Policy saved.")
    events = store.events()
    if events:
        st.dataframe([{"time": event["created"], "model": short_version(event["model_version"]),
                       "action": event["action"], "checks": ", ".join(map(str, event["check_ids"])),
                       "new version": event["new_version"] or "", "detail": event["detail"]}
                      for event in reversed(events)], hide_index=True, key="policy_events")


def history() -> None:
    """Every recorded check on a time axis, one click (or pick) to its report, and the policy; a damaged,
    read-only or locked history says so and how to recover instead."""
    store = history_store()
    if store is None:
        return
    try:
        history_view(store)
    except ZealError as error:
        show_history_error(error)


def history_view(store: HistoryStore) -> None:
    """The recorded checks and the policy form of a history that opened."""
    include = st.toggle("Include the simulation's own checks", value=False, key="history_simulated",
                        help="Each simulated stream batch is recorded too (origin 'monitor').")
    rows = [row for row in store.checks(limit=500) if include or row.origin in REAL]
    if not rows:
        st.info("No checks recorded yet. Upload a batch on Your own images, or run "
                "`zeal check FOLDER` (e.g. from cron).")
    else:
        event = st.plotly_chart(_labelfree.history_figure(rows), key="history_chart", on_select="rerun",
                                selection_mode="points")
        points = (event.selection.points if event and event.selection else []) or []
        ids = [row.id for row in reversed(rows)]
        clicked = int(points[0]["customdata"][0]) if points else ids[0]
        chosen = st.selectbox("Check", ids, index=ids.index(clicked), key="history_check",
                              format_func=lambda check_id: f"#{check_id}")
        show_check(store.get(chosen))
    policy_form(store)


simulation_tab, history_tab = st.tabs(["Simulation", "History"])
with simulation_tab:
    st.write("A simulated production stream: batches of held-out images arrive over time, drifting as the "
             "schedule says. A detector tests each batch against the reference; the policy retrains after k "
             "alarms.")
    simulation()
with history_tab:
    where = f" ({md(default_path())})" if shows_server_paths() else ""  # no server path in a demo
    st.write(f"Checks of real batches — uploads and `zeal check` — kept in the history{where}.")
    history()
