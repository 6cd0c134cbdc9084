"""Shared Streamlit helpers for the pages: progress adapter, cached loaders, job polling, session keys,
and the escaping of user text (``md``, ``code``).

Streamlit is imported only by ``app.py`` and the modules of ``app_pages/`` (pages and their helpers
``_ui``, ``_lab``, ``_labelfree``); ``zeal_core`` never imports it, and everything a page shows comes from
``zeal_core``. Datasets and models are cached read-only with ``st.cache_resource`` and shared by every
user of the server; fitted references are cached by ``zeal_core`` itself (``zeal_core.reference``); per-user
choices live in ``st.session_state``. Cache keys include the data and models folders so that two servers
(or two tests) never share stale objects.
"""

from __future__ import annotations

import contextlib
import re
import string
from collections.abc import Callable, Iterator
from typing import Any

import streamlit as st

from zeal_core.data import ImageDataset, shared_dataset
from zeal_core.errors import ZealError
from zeal_core.jobs import JobQueue
from zeal_core.models.registry import ModelRegistry
from zeal_core.paths import data_dir, models_dir, state_dir
from zeal_core.progress import ProgressEvent
from zeal_core.settings import DEMO_ACTIONS, get_settings

# Session-state keys shared between pages (one place, so pages agree on the spelling).
KEY_DATASET = "dataset"  # chosen dataset name, e.g. "digits" (set by the Data page)
KEY_DRIFT_SPEC = "zeal_drift_spec"  # the Drift Lab's current DriftSpec text, read by Retrain and Monitor
KEY_JOB_PREFIX = "zeal_job_"  # + purpose ("train", "retrain", "monitor"): the id of the job this user watches

DEFAULT_DATASET = "digits"
POLL_SECONDS = 1.0  # how often a running job's progress is re-read from disk


def md(text: Any) -> str:
    """``text`` made safe for any element that renders Markdown (``st.markdown``, ``st.caption``,
    ``st.toast``, ``st.error``, image captions, labels): every ASCII punctuation mark is backslash-escaped
    (CommonMark lets any be) and line breaks are folded, so a file name such as ``![x](http://host/p.png)``
    shows as those characters and never becomes an image, a link, LaTeX or a directive. Everything a user
    typed or uploaded (file names, paths, drift specs from the URL, class and folder names, error messages
    that quote them) goes through this before it reaches Markdown."""
    folded = " ".join(str(text).split())
    return "".join(f"\\{char}" if char in string.punctuation else char for char in folded)


def code(text: Any) -> str:
    """``text`` as an inline code span that no content can break out of, for names and specs users typed.

    CommonMark takes a code span's content literally; it ends at the first backtick run as long as the
    opening one, so the fence is one backtick longer than the longest run inside (and padded by a space when
    the text starts or ends with one). Line breaks are folded, as in ``md``.
    """
    folded = " ".join(str(text).split())
    longest = max((len(run) for run in re.findall(r"`+", folded)), default=0)
    fence = "`" * (longest + 1)
    padding = " " if folded.startswith("`") or folded.endswith("`") else ""
    return f"{fence}{padding}{folded}{padding}{fence}"


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show a ``ZealError`` (bad spec, missing model, unreadable data) as a message and stop this run.

    The messages name the value and the fix, so users see them in full (as text: they quote user input);
    other exceptions are bugs and reach Streamlit's own error display.
    """
    try:
        yield
    except ZealError as error:
        st.error(md(error))
        st.stop()


# ----------------------------------------------------------------------------------- demo mode, history

DEMO_OFF = "Switched off in this demo (the server's ZEAL_DEMO_ALLOW setting)."


def allowed(action: str) -> bool:
    """Whether a visitor may take ``action`` (a ``zeal_core.settings.DEMO_ACTIONS`` name) on this server."""
    return get_settings().allows(action)


def off_help(action: str, help_text: str | None = None) -> str | None:
    """A widget's help: ``help_text``, or why it is disabled in this demo."""
    return help_text if allowed(action) else f"{DEMO_OFF} ({DEMO_ACTIONS[action]})"


def shows_server_paths() -> bool:
    """False in a demo: no page shows or takes a path on the server's disk."""
    return allowed("server-paths")


def shown_dataset(name: str) -> str:
    """A dataset name for display: ``folder:PATH`` keeps only the folder's own name in a demo."""
    if name.startswith("folder:") and not shows_server_paths():
        return f"folder:…/{name.rstrip('/').rsplit('/', 1)[-1]}"
    return name


def history_store() -> Any | None:
    """The check history, or None after showing why it cannot be opened (damaged, read-only, locked) and
    how to recover (``zeal history repair`` / ``backup``)."""
    from zeal_core.history import HistoryStore

    try:
        return HistoryStore()
    except ZealError as error:
        show_history_error(error)
        return None


def show_history_error(error: ZealError) -> None:
    """The history's error: in full for a local user; without server paths in a demo."""
    if shows_server_paths():
        st.error(md(error))
    else:
        st.error("The check history cannot be used right now (damaged, read-only or busy). The operator can "
                 "repair it with zeal history repair, or restore a backup.")


class StreamlitProgress:
    """A ``ProgressCallback`` that draws ``ProgressEvent``s as one ``st.progress`` bar with a caption."""

    def __init__(self, label: str = "Working…") -> None:
        self._bar = st.progress(0.0, text=label)
        self._label = label

    def __call__(self, event: ProgressEvent) -> None:
        fraction = event.fraction
        text = f"{self._label} [{event.stage}] {event.message}".strip()
        self._bar.progress(fraction if fraction is not None else 0.0, text=text)

    def done(self, text: str = "Done") -> None:
        """Fill the bar and show a closing caption."""
        self._bar.progress(1.0, text=text)


# ----------------------------------------------------------------------------------------------- loaders


def folders_key() -> str:
    """Part of every cache key: the folders in use (tests and servers may point them elsewhere)."""
    return f"{data_dir()}|{models_dir()}|{state_dir()}"


def load_dataset_cached(name: str) -> ImageDataset:
    """The ``ImageDataset`` called ``name``, loaded once per process and shared read-only by every session."""
    return shared_dataset(name)


@st.cache_resource(show_spinner="Loading the model…", max_entries=6)
def _load_model(version: str, folders: str) -> tuple[Any, Any]:
    from zeal_core.models.registry import ModelRegistry

    return ModelRegistry().load(version, device=str(device()))


def load_model_cached(version: str) -> tuple[Any, Any]:
    """``(model in eval mode, ModelCard)`` for ``version``, shared read-only (never train it in place)."""
    return _load_model(version, folders_key())


@st.cache_resource
def device() -> Any:
    """The compute device pages hand to the library (a GPU when there is one)."""
    from zeal_core.device import resolve_device

    return resolve_device("auto")


def device_text() -> str:
    """A short description of the device, e.g. ``cpu (2 threads)``."""
    from zeal_core.device import describe_device

    return describe_device(device())


def registry() -> ModelRegistry:
    """The ``ModelRegistry`` over the models folder."""
    return ModelRegistry()


def short_version(version: str | None) -> str:
    """A version id short enough for a metric: its name part and its random suffix (the full id on hover).

    ``digits-resnet18-20261201T091027-5522`` -> ``digits-resnet18 …5522``.
    """
    if not version:
        return "none"
    parts = version.split("-")
    return f"{'-'.join(parts[:2])} …{parts[-1]}" if len(parts) >= 4 else version


def dataset_name() -> str:
    """This user's dataset choice (default: the embedded digits)."""
    return st.session_state.get(KEY_DATASET, DEFAULT_DATASET)


def dataset_status(card: Any | None) -> tuple[str, str | None]:
    """The dataset every check uses and, when the Data page's choice differs, a note saying why and how to
    use the chosen one. Checks always run on the active model's own dataset (a model is tested on the
    classes and images it was trained for); the choice is what a new model is trained on."""
    chosen = dataset_name()
    if card is None or card.dataset == chosen:
        return chosen, None
    from zeal_core.data import is_prepared

    try:
        prepared = is_prepared(chosen)
    except ZealError:  # a folder that has gone, a bad md5 setting: the Data page says what is wrong
        prepared = False
    others = [other.version for other in registry().list() if other.dataset == chosen]
    steps = ("make one of its models active on Model (newest: " + md(others[0]) + ")" if others else
             ("train or import a model on it on Model" if prepared else
              "prepare it on Data, then train or import a model on it on Model"))
    # Markdown-safe: dataset names may be folder paths a user typed
    picked, trained = md(shown_dataset(chosen)), md(shown_dataset(card.dataset))
    note = (f"You chose {picked} on Data, but the active model was trained on {trained}, so the Drift "
            f"Lab, Retrain, Monitor and Your own images use {trained}. To work on {picked}, {steps}.")
    return card.dataset, note


def show_dataset_note(card: Any | None) -> None:
    """Say so on a page when the Data page's choice is not the dataset its checks use (see
    ``dataset_status``)."""
    _, note = dataset_status(card)
    if note:
        st.info(note, icon=":material/info:")


def active_version() -> str | None:
    """The server's active model version, if it still exists in the registry."""
    models = registry()
    version = models.get_active()
    if version is None:
        return None
    try:
        models.card(version)
    except Exception:  # a deleted or damaged version: behave as if there were none
        return None
    return version


def active_card() -> Any | None:
    """The active version's ``ModelCard``, or None."""
    version = active_version()
    return registry().card(version) if version else None


# -------------------------------------------------------------------------------------------------- jobs


def job_queue() -> JobQueue:
    """The shared ``JobQueue`` (one job at a time for the whole server)."""
    return JobQueue()


def find_job(kind: str, statuses: tuple[str, ...] = ("queued", "running")) -> Any | None:
    """The newest job of ``kind`` whose status is in ``statuses`` (e.g. a train job already under way)."""
    jobs = [job for job in job_queue().list() if job.kind == kind and job.status in statuses]
    return max(jobs, key=lambda job: job.created) if jobs else None


def submit_job(kind: str, params: dict[str, Any], action: str | None = None) -> Any:
    """Queue a job, start the worker if needed, and remember its id for this user.

    ``action`` (default ``kind``) is the demo permission it needs; without it nothing is queued (the
    page's button is disabled too: this guards against a forged click).
    """
    if not allowed(action or kind):
        st.error(f"{DEMO_OFF} ({DEMO_ACTIONS[action or kind]})")
        st.stop()
    queue = job_queue()
    job = queue.submit(kind, params)
    queue.ensure_worker()
    st.session_state[KEY_JOB_PREFIX + kind] = job.id
    return job


def watched_job(kind: str) -> Any | None:
    """The job of ``kind`` this user started (or, failing that, one of that kind still running)."""
    queue = job_queue()
    job_id = st.session_state.get(KEY_JOB_PREFIX + kind)
    if job_id:
        try:
            return queue.get(job_id)
        except Exception:  # removed from disk: forget it
            st.session_state.pop(KEY_JOB_PREFIX + kind, None)
    return find_job(kind)


def show_job(job: Any, on_done: Callable[[Any], None] | None = None) -> None:
    """Draw a job's status and progress; call ``on_done(job)`` once, when it has just finished."""
    label = f"{job.kind} job `{job.id}`: {job.status}"
    if job.status in ("queued", "running"):
        st.progress(float(job.progress or 0.0), text=f"{label} — {md(job.message or 'starting…')}")
    elif job.status == "done":
        st.success(label)
    elif job.status == "failed":
        st.error(f"{label}: {md(job.error or job.message)}")
    else:
        st.warning(label)
    seen_key = f"zeal_job_seen_{job.id}"
    if job.is_final and on_done is not None and not st.session_state.get(seen_key):
        st.session_state[seen_key] = True
        on_done(job)


@st.fragment(run_every=POLL_SECONDS)
def poll_job(kind: str) -> None:
    """While this user's ``kind`` job is live, redraw its progress every second; rerun the page once it ends.

    Pages draw a finished job's results in the main script, so nothing is redrawn every second after that.
    """
    job = watched_job(kind)
    if job is None:
        return
    show_job(job)
    if job.is_final:
        st.rerun()


def ended_job(kind: str, idle_caption: str) -> Any | None:
    """This user's ``kind`` job: a caption when there is none, live progress while it runs, and once it has
    ended its status, returning it so the page can draw the results (None until then)."""
    job = watched_job(kind)
    if job is None:
        st.caption(idle_caption)
        return None
    if not job.is_final:
        poll_job(kind)
        return None
    show_job(job)
    return job


def sidebar_status() -> None:
    """Dataset in use, active model version and device, in the sidebar of every page; the Data page's
    choice too when it differs from the dataset in use."""
    with st.sidebar:
        st.caption("Status")
        card = active_card()
        in_use, note = dataset_status(card)
        picked = md(shown_dataset(dataset_name()))
        chosen = f"  \n**Chosen on Data:** {picked} (for new models)" if note else ""
        st.markdown(
            f"**Dataset:** {md(shown_dataset(in_use))}{' (the model’s)' if note else ''}{chosen}  \n"
            f"**Model:** {card.version if card else 'none yet'}  \n"
            f"**Device:** {device_text()}"
        )


# ------------------------------------------------------------------------------------------- first run

TRAIN_BUTTON_LABEL = "Train the default digits model (~1 min on CPU)"


def activate_job_result(job: Any) -> str | None:
    """Make the model version a finished train/retrain job produced the active one; returns the version."""
    version = (job.result or {}).get("version") if job.status == "done" else None
    if version:
        registry().set_active(version)
    return version


def first_run_panel() -> bool:
    """When there is no model yet, offer (or show the progress of) training the default one.

    Returns:
        True when a model is active and the caller can go on; False when the caller should stop.
    """
    if active_version() is not None:
        return True
    models = registry()
    problem = models.active_problem()
    if problem is not None:  # never another version in its place: say which one and how to fix it
        st.error(md(models.damaged_active_error(*problem)))
        st.page_link("app_pages/model.py", label="Model page: delete it or make another version active",
                     icon=":material/model_training:")
        return False
    st.subheader("No model yet")
    job = watched_job("train")
    if job is not None and job.status == "done":
        activate_job_result(job)
        st.session_state.pop(KEY_JOB_PREFIX + "train", None)
        st.rerun()
    if job is not None and not job.is_final:
        st.write("Training the default digits model in the background; the lab opens when it is done. "
                 "You can keep browsing meanwhile.")
        poll_job("train")
        return False
    if job is not None:  # failed or cancelled: say why, then offer again
        show_job(job)
        st.session_state.pop(KEY_JOB_PREFIX + "train", None)
    latest = models.latest()
    if latest is not None:
        # Models exist but none is active (e.g. the active one was deleted): offer the newest.
        if st.button(f"Use the newest model, {latest.version}", type="primary"):
            models.set_active(latest.version)
            st.rerun()
        return False
    st.write("The lab needs a classifier to probe. A small ResNet-18 on the embedded handwritten digits "
             "trains in the background, with progress here; you can keep browsing meanwhile.")
    if st.button(TRAIN_BUTTON_LABEL, type="primary", key="first_run_train",
                 disabled=not allowed("train-default"), help=off_help("train-default")):
        running = find_job("train")  # another user may have started one a moment ago: watch that one
        if running is not None:
            st.session_state[KEY_JOB_PREFIX + "train"] = running.id
        else:  # the default recipe only: bounded (and in a demo, max_epochs caps the rest)
            submit_job("train", {"dataset": DEFAULT_DATASET}, action="train-default")
        st.rerun()
    return False


# ------------------------------------------------------------------------------------------ evaluation


@st.cache_data(show_spinner="Evaluating…", max_entries=16)
def _evaluate_version(version: str, dataset: str, folders: str) -> dict[str, Any]:
    from zeal_core.evaluate import evaluate

    model, card = load_model_cached(version)
    data = load_dataset_cached(dataset)
    if card.class_names is not None:  # a model of a class subset is scored on its own classes
        data = data.with_classes(card.class_names)
    images, labels = data.split("val")
    result = evaluate(model, card.model_config, images, labels, device(), class_names=data.class_names)
    values = result.to_dict()
    values["per_class_accuracy"] = [values["per_class_accuracy"].get(name) for name in data.class_names]
    values["class_names"] = list(data.class_names)
    return values


def evaluate_cached(version: str, dataset: str) -> dict[str, Any]:
    """Validation accuracy, per-class accuracy and confusion matrix of ``version`` on ``dataset``."""
    return _evaluate_version(version, dataset, folders_key())


def card_accuracy(card: Any) -> float | None:
    """A card's clean validation accuracy (the training metrics call it ``val_accuracy``)."""
    metrics = card.metrics or {}
    value = metrics.get("val_accuracy", metrics.get("accuracy"))
    return float(value) if isinstance(value, (int, float)) else None


def cards_frame(cards: list[Any]) -> Any:
    """A table of model cards to compare versions: where each came from, its parent and strategy, and its
    clean accuracy beside its accuracy on the drift it was adapted to (percent, one decimal)."""
    import pandas as pd

    from zeal_core.models.registry import card_origin

    def percent(value: Any) -> float | None:
        return round(100 * float(value), 1) if isinstance(value, (int, float)) else None

    rows = [{
        "version": card.version,
        "origin": card_origin(card),
        "dataset": shown_dataset(card.dataset),
        "clean accuracy": percent(card_accuracy(card)),
        "drifted: before": percent((card.metrics or {}).get("drifted_before")),
        "drifted: after": percent((card.metrics or {}).get("drifted_after")),
        "strategy": card.strategy or "",
        "drift spec": card.drift_spec or "",
        "parent": card.parent or "",
        "created": card.created,
    } for card in cards]
    return pd.DataFrame(rows, columns=["version", "origin", "dataset", "clean accuracy", "drifted: before",
                                       "drifted: after", "strategy", "drift spec", "parent", "created"])


def cards_column_config() -> dict[str, Any]:
    """How ``cards_frame`` columns are shown (percent with one decimal)."""
    percent = {name: st.column_config.NumberColumn(format="%.1f %%") for name in
               ("clean accuracy", "drifted: before", "drifted: after")}
    return {**percent, "active": st.column_config.CheckboxColumn(width="small")}
