"""Model: train in the background with live curves, pick a version from the registry, see its metrics."""

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from app_pages._ui import (
    KEY_JOB_PREFIX,
    POLL_SECONDS,
    StreamlitProgress,
    activate_job_result,
    active_version,
    allowed,
    cards_column_config,
    cards_frame,
    dataset_name,
    device,
    evaluate_cached,
    folders_key,
    job_queue,
    md,
    off_help,
    registry,
    show_job,
    shown_dataset,
    shows_server_paths,
    submit_job,
    watched_job,
)
from zeal_core.data import list_datasets
from zeal_core.errors import ZealError
from zeal_core.importing import import_checkpoint
from zeal_core.models.export import EXPORT_FORMATS, export_files, list_export_formats, load_hint
from zeal_core.models.importer import server_checkpoint_path
from zeal_core.settings import get_settings

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


# What the progress metrics mean, for axis titles and legends (the job reports them under these keys).
CURVE_NAMES = {"global_step": "training step", "epoch": "epoch", "loss": "training loss (running mean)",
               "train_loss": "training loss (epoch)", "accuracy": "training accuracy (running)",
               "train_accuracy": "training accuracy (epoch)", "val_accuracy": "validation accuracy"}


def curves_figure(history, title: str = "Training curves") -> go.Figure:
    """Loss (left axis) and accuracies (right axis) against the step or epoch the job reported them at."""
    history = history.ffill()
    x = next((c for c in ("global_step", "epoch") if c in history.columns), None)
    xs = history[x] if x else history.index
    figure = go.Figure()
    for column in [c for c in history.columns if c in ("loss", "train_loss")]:
        figure.add_scatter(x=xs, y=history[column], name=CURVE_NAMES[column], mode="lines+markers")
    for column in [c for c in history.columns if c in ("accuracy", "train_accuracy", "val_accuracy")]:
        figure.add_scatter(x=xs, y=history[column], name=CURVE_NAMES[column], mode="lines+markers",
                           yaxis="y2")
    figure.update_layout(height=300, margin={"l": 10, "r": 10, "t": 40, "b": 10}, title=title,
                         xaxis_title=CURVE_NAMES.get(x, "progress report"), yaxis_title="loss",
                         yaxis2={"title": "accuracy", "overlaying": "y", "side": "right", "range": [0, 1.02],
                                 "tickformat": ".0%", "dtick": 0.2, "showgrid": False},
                         legend={"orientation": "h", "y": -0.3})
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
    pretrained = st.checkbox("Start from ImageNet weights (timm hub)", key="train_pretrained",
                             help="Needs the timm hub (internet, or the weights in the Hugging Face cache). "
                                  "Where it cannot be reached the job says so and trains from scratch.")
    start = st.form_submit_button(f"Train on {md(shown_dataset(dataset_name()))}", type="primary",
                                  disabled=job_queue() is None or not allowed("train"),
                                  help=off_help("train"))
if start:
    submit_job("train", {"dataset": dataset_name(), "epochs": int(epochs), "seed": int(seed),
                         "pretrained": bool(pretrained)})
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
    if job.status == "done" and job.params.get("pretrained") and \
            not (job.result or {}).get("metrics", {}).get("pretrained_loaded"):
        st.warning("The ImageNet weights could not be loaded from the timm hub (offline, or not in the "
                   "Hugging Face cache): this version was trained from scratch. Its card's notes say why.")
    if st.session_state.get(KEY_JOB_PREFIX + "train") == job.id:
        st.session_state.pop(KEY_JOB_PREFIX + "train", None)
        if job.status == "done" and st.session_state.pop("zeal_train_make_active", True):
            activate_job_result(job)
            st.rerun()

# ----------------------------------------------------------------------------------------------- import
st.subheader("Import a model")
st.caption("A timm checkpoint trained elsewhere: a .safetensors file or a PyTorch state dict (.pth/.pt/.bin, "
           "read with torch.load(weights_only=True); pickles holding code or objects are refused). It is "
           "checked against the architecture and the dataset's classes, evaluated on the val split and "
           "added as a new version.")
with st.form("import_form", border=True):
    upload = st.file_uploader("Checkpoint file", key="import_upload",
                              type=["safetensors", "pth", "pt", "bin", "ckpt", "tar"])
    # A demo never takes a server path: checkpoints come from uploads only.
    server_path = (st.text_input("…or its path on the server", key="import_path")
                   if shows_server_paths() else "")
    columns = st.columns(3)
    arch = columns[0].text_input("Architecture (timm name)", value="resnet18", key="import_arch")
    choices = list(list_datasets()) + ([dataset_name()] if dataset_name() not in list_datasets() else [])
    import_dataset = columns[1].selectbox("Dataset", choices, index=choices.index(dataset_name()),
                                          key="import_dataset")
    image_size = columns[2].number_input("Input size, px (0: the file's or the dataset's)", min_value=0,
                                         max_value=1024, value=0, step=1, key="import_image_size")
    reset_head = st.checkbox("New classifier head for the dataset's classes (fitted on the train split, rest "
                             "of the network frozen)", key="import_reset_head")
    import_active = st.checkbox("Make it active", value=allowed("activate"), key="import_activate",
                                disabled=not allowed("activate"), help=off_help("activate"))
    do_import = st.form_submit_button("Import", key="import_submit", disabled=not allowed("import"),
                                      help=off_help("import"))
if do_import and allowed("import"):
    bar = StreamlitProgress("Importing…")
    try:
        if upload is None and not shows_server_paths():
            raise ZealError("no checkpoint uploaded: choose a .safetensors or .pth file above")
        source = upload.getvalue() if upload is not None else server_checkpoint_path(server_path)
        imported = import_checkpoint(source, filename=upload.name if upload is not None else None,
                                     arch=arch.strip() or None, dataset=import_dataset,
                                     image_size=int(image_size) or None, reset_head=reset_head,
                                     registry=models, device=device(), progress=bar)
    except ZealError as error:
        bar.done("Import failed")
        st.error(md(error))
    else:
        bar.done("Imported")
        if import_active and allowed("activate"):
            models.set_active(imported.version)
        st.success(f"Imported {md(imported.recipe['import']['file'])} as {imported.version}: validation "
                   f"accuracy {imported.metrics['val_accuracy']:.1%} on {imported.metrics['val_n']} images "
                   f"({imported.metrics['seconds']:.1f} s).")
        st.caption(md(imported.notes))

# --------------------------------------------------------------------------------------------- registry
st.subheader("Versions")
problem = models.active_problem()
if problem is not None:  # the pages use no other version in its place until the user picks one
    st.error(md(models.damaged_active_error(*problem)))
damaged = models.damaged()
if damaged:
    st.warning(f"{len(damaged)} damaged version(s): never used. Delete them, or restore their files.")
    st.dataframe([{"version": version, "problem": reason} for version, reason in damaged], hide_index=True,
                 key="model_damaged")
    to_delete = st.selectbox("Damaged version", [version for version, _ in damaged], key="model_damaged_pick")
    if st.button("Delete the damaged version", key="model_damaged_delete", disabled=not allowed("delete"),
                 help=off_help("delete")) and allowed("delete"):
        models.delete(to_delete)
        st.rerun()
cards = models.list()
if not cards:
    st.info("No versions yet: train one above (or from the Home page).")
    st.stop()
active = active_version()
table = cards_frame(cards)
table.insert(0, "active", table["version"] == active)
st.dataframe(table, hide_index=True, column_config=cards_column_config())
versions = [card.version for card in cards]
if st.session_state.get("model_version") not in versions:
    st.session_state.pop("model_version", None)  # a deleted version: fall back to the active one
chosen = st.selectbox("Version", versions, index=versions.index(active) if active in versions else 0,
                      key="model_version")
if st.button("Make active", disabled=chosen == active or not allowed("activate"), key="model_make_active",
             help=off_help("activate", "The version every page and the check command use.")) \
        and allowed("activate"):
    models.set_active(chosen)
    st.rerun()

# ---------------------------------------------------------------------------------------------- metrics
card = models.card(chosen)
result = evaluate_cached(chosen, card.dataset)
left, right = st.columns([1, 2])
left.metric("Validation accuracy", f"{result['accuracy']:.1%}",
            help=f"{result['n']} validation images of {card.dataset}, version {card.version}")
left.dataframe({"class": result["class_names"], "accuracy": result["per_class_accuracy"]}, hide_index=True,
               column_config={"accuracy": st.column_config.ProgressColumn(min_value=0, max_value=1,
                                                                          format="percent")})
heatmap = px.imshow(result["confusion"], x=result["class_names"], y=result["class_names"], text_auto=True,
                    color_continuous_scale="Teal", labels={"x": "predicted", "y": "true", "color": "images"},
                    aspect="auto")
heatmap.update_xaxes(dtick=1, tickangle=-40)  # every class named, however many (Imagenette's are long)
heatmap.update_yaxes(dtick=1)
heatmap.update_layout(title="Confusion matrix (validation)", height=460 + 12 * len(result["class_names"]),
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
right.plotly_chart(heatmap, key="confusion")
history = (card.metrics or {}).get("history")
if isinstance(history, list) and history:
    st.plotly_chart(curves_figure(pd.DataFrame(history).drop(columns=["images_per_s", "train_seconds",
                                                                      "epoch_seconds"], errors="ignore"),
                                  f"Training history of {card.version}"), key="history")


@st.cache_data(show_spinner=False, max_entries=2)
def _export(version: str, export_format: str, folders: str) -> tuple[bytes, str]:
    """The export's weights and card text (built on the first download click, kept for the next)."""
    files = export_files(version, export_format, registry=models)
    return files.weights, files.card_text


with st.expander("Export for timm"):
    export_format = st.selectbox("Format", list_export_formats(), key="model_export_format")
    suffix = EXPORT_FORMATS.get(export_format).suffix
    st.code(f"import safetensors.torch, timm, torch\n{load_hint(card, export_format)}", language="python")
    st.caption(f"Input: RGB scaled to [0, 1], resized to {card.model_config.image_size} px, normalised with "
               f"mean {list(card.model_config.mean)} and std {list(card.model_config.std)}.")
    left, right = st.columns(2)
    left.download_button("Weights", data=lambda: _export(chosen, export_format, folders_key())[0],
                         file_name=f"{chosen}{suffix}", on_click="ignore", key="model_export_weights")
    right.download_button("Card (JSON)", data=lambda: _export(chosen, export_format, folders_key())[1],
                          file_name=f"{chosen}.json", mime="application/json", on_click="ignore",
                          key="model_export_card")
with st.expander("Model card"):
    st.json({"version": card.version, "model_config": card.model_config.to_dict(),
             "dataset": shown_dataset(card.dataset),
             "recipe": card.recipe, "parent": card.parent, "strategy": card.strategy,
             "drift_spec": card.drift_spec, "metrics": card.metrics, "created": card.created,
             "notes": card.notes, "class_names": card.class_names})
