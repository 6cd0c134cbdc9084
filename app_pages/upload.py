"""Your own images: upload a batch (the production sample), check it against the reference, keep it in the
history.

One call does the work: ``CheckService.check_and_record(images)`` (``zeal_core.service``), under the lab's
check profile, so an upload gets the same p-values and decision as ``check`` on the command line; the check
is recorded once per distinct upload, where the retrain policy and the alert webhook act on it. Before
anything is uploaded the page says what the active model expects (size, colours, examples from its training
images), and after, whether the batch looks different. The files are decoded once per upload (kept in the
session while it stays the same), at most ``ZEAL_MAX_UPLOADS`` files and ``ZEAL_MAX_CHECK_N`` images (a seeded
random subset beyond, said on the page and in the report's source). A history that cannot be written never
hides the report.
"""

import hashlib

import numpy as np
import streamlit as st

from app_pages import _lab, _labelfree
from app_pages._ui import (
    StreamlitProgress,
    active_card,
    first_run_panel,
    folders_key,
    history_store,
    load_dataset_cached,
    md,
    short_version,
    show_dataset_note,
    show_history_error,
    shown_dataset,
    user_errors,
)
from zeal_core.data import decode_images
from zeal_core.data.appearance import Appearance, appearance_differences, describe_appearance
from zeal_core.errors import ZealError
from zeal_core.reference import scatter_frame
from zeal_core.sampling import seeded_subset
from zeal_core.settings import get_settings

TYPICAL_SHOWN = 12  # most drift-typical uploads shown
TYPICAL_PER_ROW = 6  # wide enough for a file name and its score under each
CAPTION_CHARACTERS = 22  # file names are shortened in the middle beyond this


@st.cache_data(show_spinner=False, max_entries=8)
def _training_look(dataset_name: str, class_names: tuple[str, ...] | None,
                   folders: str) -> tuple[Appearance, list[np.ndarray], list[str]]:
    data = load_dataset_cached(dataset_name)
    if class_names is not None:  # a model of some classes: its own classes only
        data = data.with_classes(class_names)
    images, labels = data.split("train")
    examples, captions = [], []
    for label, name in enumerate(data.class_names):  # the first training image of each class
        rows = (labels == label).nonzero()
        if len(rows):
            examples.append(images[int(rows[0])].permute(1, 2, 0).numpy())
            captions.append(name)
    return describe_appearance(images), examples, captions


def training_look(card) -> tuple[Appearance, list[np.ndarray], list[str]]:
    """How the active model's training images look, and one example per class (with its class name)."""
    return _training_look(card.dataset, card.class_names, folders_key())


def expected_input(card) -> Appearance:
    """What the active model expects: its input size, how its training images look, examples of them."""
    look, examples, captions = training_look(card)
    size = card.model_config.image_size
    with st.container(border=True):
        st.markdown(f"**What the active model expects** · `{short_version(card.version)}` was trained on "
                    f"**{md(shown_dataset(card.dataset))}**: {look.describe()}; every upload is resized to "
                    f"{size} × {size} px.")
        st.caption("Examples from its training images. Uploads that look different (white digits on black "
                   "for a model trained on dark ink on white, photos for a model of drawings) are a drift it "
                   "never saw: its accuracy on them can fall to 0 %, and the checks below will say drift.")
        shown = examples[:10]
        _lab.image_grid(st, shown, captions[:len(shown)], per_row=len(shown))
    return look


def controls(service) -> tuple[bool, list]:
    """The check settings in use, whether to record, the uploaded files."""
    left, right = st.columns([2, 1], vertical_alignment="bottom")
    left.caption(f"Checked with the lab's check profile “{service.profile.name}”, the same as `zeal check`: "
                 "the same images get the same p-values and verdict here and from cron (`zeal settings` "
                 "changes it).")
    keep = right.toggle("Record in the history", value=True, key="upload_record",
                        help="Keep the check (and the images, for a later adaptation) in the history; see "
                             "the Monitor page.")
    files = st.file_uploader("Images", type=None, accept_multiple_files=True, key="upload_files")
    return bool(keep), files or []


def upload_key(uploaded: list) -> str:
    """Identifies one upload cheaply: Streamlit's id, name and size of each file (no bytes hashed)."""
    digest = hashlib.sha256()
    for file in uploaded:
        digest.update(f"{getattr(file, 'file_id', '')}\0{file.name}\0{file.size}\n".encode(errors="replace"))
    return digest.hexdigest()


def batch_key(uploaded: list, profile: object) -> str:
    """Identifies one check of an upload: the upload and the check settings (recorded once each)."""
    return hashlib.sha256(f"{upload_key(uploaded)}|{profile!r}".encode()).hexdigest()


def capped(uploaded: list) -> tuple[list, str | None]:
    """At most ``max_uploads`` / ``max_check_n`` files: a seeded random subset beyond, and a note."""
    settings = get_settings()
    limit = min(settings.max_uploads, settings.max_check_n)
    if len(uploaded) <= limit:
        return uploaded, None
    kept = [uploaded[int(position)] for position in seeded_subset(len(uploaded), limit, 0)]
    return kept, (f"a random {limit:,} of {len(uploaded):,} uploaded files (this server checks at most "
                  f"{limit:,})")


def decode(files: list, reference) -> tuple:
    """The readable uploads at the model's size, their names, and the skipped files (listed here): decoded
    once per upload and kept in this session (widget changes rerun the page; they must not decode again)."""
    key = f"{upload_key(files)}|{reference.image_size}"
    cache = st.session_state.setdefault("upload_decoded", {})
    if key not in cache:
        with user_errors():
            bar = StreamlitProgress("Decoding")
            images, skipped = decode_images([(file.name, file.getvalue()) for file in files],
                                            reference.image_size, progress=bar)
            bar.done(f"Decoded {images.shape[0]} of {len(files)} files")
        cache.clear()  # one upload at a time per session: memory stays bounded
        cache[key] = (images, skipped)
    images, skipped = cache[key]
    if skipped:
        st.warning(f"Skipped {len(skipped)} file(s):")
        st.dataframe([{"file": name, "reason": reason} for name, reason in skipped], hide_index=True,
                     key="upload_skipped")
    skipped_names = {name for name, _ in skipped}
    names = [file.name for file in files if file.name not in skipped_names][:images.shape[0]]
    return images, names, skipped


def compare_look(expected: Appearance, images) -> None:
    """Warn when the uploads look unlike the training images (before reading any test)."""
    actual = describe_appearance(images)
    differences = appearance_differences(expected, actual)
    if differences:
        st.warning("Your uploads look unlike the model's training images: " + "; ".join(differences)
                   + f". They are {actual.describe()}. Expect low accuracy; if this is how production data "
                   "will look, the model needs adapting (Retrain) or training on such images.",
                   icon=":material/warning:")


def check_and_record(service, version: str, images, names: list[str], skipped: list, files: list,
                     keep: bool, source: str) -> tuple:
    """Check the uploads and record the check once per distinct upload (the service lets the retrain policy
    and the alert webhook act); complete the record when the diagnosis arrives later."""
    recorded = st.session_state.setdefault("upload_recorded", {})
    incomplete = st.session_state.setdefault("upload_incomplete", set())  # recorded before the warm-up ended
    key = batch_key(files, service.profile)
    with user_errors(), _lab.busy_notice():
        outcome = service.check_and_record(images, version=version, record=keep and key not in recorded,
                                           origin="upload", file_names=names, skipped=skipped, source=source)
    report = outcome.report
    if outcome.record_error is not None:  # the report still stands; only the record is missing
        show_history_error(ZealError(outcome.record_error))
    if outcome.check_id is not None:
        recorded[key] = outcome.check_id
        if report.pending:
            incomplete.add(key)
        if outcome.policy:
            st.toast(f"The retrain policy queued {md(outcome.policy['strategy'])} on checks "
                     f"{outcome.policy['check_ids']}.")
    elif keep and key in incomplete and not report.pending:  # the diagnosis is ready now: complete the record
        store = history_store()
        try:
            if store is not None:
                store.complete(recorded[key], report)
                incomplete.discard(key)
        except ZealError as error:
            show_history_error(error)
    if outcome.alert is not None:
        st.toast(f"Alert {'sent' if outcome.alert.sent else 'NOT sent'} to {md(outcome.alert.target)}.")
    return report, recorded, key


def show_metrics(report, reference, recorded: dict, key: str) -> None:
    """Images tested, verdict, estimated accuracy, mean confidence, history id."""
    decision = report.decision
    columns = st.columns([0.8, 1.1, 1.4, 1.1, 0.9])
    columns[0].metric("Images tested", report.n)
    columns[1].metric("Verdict", "drift" if decision.drift else "no drift",
                      delta=f"{len(decision.flagged)}/{decision.detectors} detectors < α/k",
                      delta_color="off", delta_arrow="off", help=decision.rule)
    _labelfree.estimate_metric(columns[2], report)
    confidence = float(np.asarray(report.sample.probs).max(axis=1).mean())
    reference_confidence = float(np.asarray(reference.reference.probs).max(axis=1).mean())
    columns[3].metric("Mean confidence", f"{confidence:.1%}", delta_color="off", delta_arrow="off",
                      delta=f"{(confidence - reference_confidence) * 100:+.1f} pts vs reference",
                      help="The model's average top-class probability on the uploads: how sure it is, not "
                           "how often it is right.")
    columns[4].metric("History check", f"#{recorded[key]}" if key in recorded else "—",
                      help="Its number in the history (Monitor → History)" if key in recorded else
                      "Not recorded: switch on 'Record in the history'.")


def show_detectors_and_map(report, reference, dataset: str) -> None:
    """The detector table beside the uploads' place in the reference's map."""
    left, right = st.columns(2, gap="medium")
    with left:
        st.markdown(f"**Detectors** · reference: {report.reference_n} clean held-out images of "
                    f"{md(shown_dataset(dataset))}")
        st.table(_lab.detector_frame(report))
        st.caption(_lab.decision_caption(report))
        st.caption(_lab.profile_caption(report))
    with right:
        frame = scatter_frame(report, reference, sample_domain="upload")
        st.plotly_chart(_lab.scatter_figure(frame, "domain"), key="upload_scatter")
        st.caption(f"Where the uploads (×) sit in the reference's {report.projection.upper()} map of the "
                   "model's features.")


def show_typical(report) -> None:
    """The uploads that look least like the reference, with their file names and drift scores."""
    typical = report.typical[:TYPICAL_SHOWN]
    if not typical:
        return
    st.markdown("**Most drift-typical uploads** (drift score: share of the reference that is nearer the "
                "reference than the image; 1.00 = further out than every reference image)")
    captions = [f"{_lab.short_name(item.name or f'#{item.index}', CAPTION_CHARACTERS)} · {item.score:.2f}"
                for item in typical]
    _lab.image_grid(st, [_lab.thumbnail(report, item.row) for item in typical], captions,
                    per_row=TYPICAL_PER_ROW)


def show_history_and_predictions(report, reference, names: list[str], current: int | None) -> None:
    """The recent checks over time (this one starred) and each upload's prediction."""
    store = history_store()
    try:
        rows = store.checks(limit=50) if store is not None else []
    except ZealError as error:
        show_history_error(error)
        rows = []
    if rows:
        st.plotly_chart(_labelfree.history_figure(rows, current), key="upload_history")
        st.page_link("app_pages/monitor.py",
                     label="All recorded checks and the retrain policy: Monitor → History",
                     icon=":material/monitoring:")
    with st.expander("Predictions"):
        probs = np.asarray(report.sample.probs)
        class_names = reference.class_names
        st.dataframe({"file": names, "prediction": [class_names[i] for i in probs.argmax(axis=1)],
                      "confidence": probs.max(axis=1), "drift score": report.drift_scores}, hide_index=True,
                     key="upload_predictions")


def main() -> None:
    """The page."""
    st.title("Your own images")
    st.write("Upload a batch of images — the production sample — and every detector tests it against a "
             "clean held-out sample of the model's own dataset. PNG, JPEG, BMP, GIF, TIFF and WebP work; "
             "files that cannot be read are listed with the reason.")
    if not first_run_panel():
        return
    card = active_card()
    show_dataset_note(card)
    expected = expected_input(card)
    service = _lab.service()
    keep, files = controls(service)
    if not files:
        st.info("No images uploaded yet. At least 2 readable images are needed; 30 or more give the tests "
                "power.")
        return
    files, sampled_note = capped(files)
    if sampled_note:
        st.warning(f"Checking {sampled_note}.")
    with user_errors():
        reference = service.reference(card.version)
    images, names, skipped = decode(files, reference)
    if images.shape[0] < 2:
        st.error("Fewer than 2 readable images: upload more to run the tests.")
        return
    compare_look(expected, images)
    shown = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
    source = f"upload: {sampled_note}: {shown}" if sampled_note else f"upload: {shown}"
    report, recorded, key = check_and_record(service, card.version, images, names, skipped, files, keep,
                                             source)
    show_metrics(report, reference, recorded, key)
    _labelfree.show_estimates(report, key="upload")
    _labelfree.show_diagnosis(report, reference, key="upload_diagnosis")
    show_detectors_and_map(report, reference, card.dataset)
    show_typical(report)
    show_history_and_predictions(report, reference, names, recorded.get(key))


main()
