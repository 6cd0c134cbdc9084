"""Your own images: upload a batch (the production sample), check it against the reference, keep it in the
history.

One call does the work: ``FittedReference.check(images)`` (``zeal_core.reference``); the report is recorded
once per distinct upload (``zeal_core.history.record_check``), where the retrain policy can act on it.
The files are decoded once per upload (kept in the session while it stays the same), at most
``ZEAL_MAX_UPLOADS`` files and ``ZEAL_MAX_CHECK_N`` images (a seeded random subset beyond, said on the page
and in the report's source). A history that cannot be written never hides the report.
"""

import hashlib

import numpy as np
import streamlit as st

from app_pages import _lab, _labelfree
from app_pages._ui import (
    StreamlitProgress,
    active_card,
    first_run_panel,
    history_store,
    load_dataset_cached,
    md,
    show_history_error,
    shown_dataset,
    user_errors,
)
from zeal_core.data import decode_images
from zeal_core.errors import ZealError
from zeal_core.history import record_check
from zeal_core.reference import scatter_frame
from zeal_core.sampling import seeded_subset
from zeal_core.settings import get_settings

st.title("Your own images")
st.write("Upload a batch of images — the production sample — and every detector tests it against a clean "
         "held-out sample of the model's own dataset. PNG, JPEG, BMP, GIF, TIFF and WebP work; files that "
         "cannot be read are listed with the reason.")
if not first_run_panel():
    st.stop()
card = active_card()
sizes = _lab.sample_sizes(load_dataset_cached(card.dataset))
left, right = st.columns([2, 1], vertical_alignment="bottom")
n_reference = left.select_slider("Reference size", sizes, value=sizes[-1], key="upload_reference_n",
                                 help="Clean held-out images of the model's dataset the batch is tested "
                                      "against.")
keep = right.toggle("Record in the history", value=True, key="upload_record",
                    help="Keep the check (and the images, for a later adaptation) in the history; see the "
                         "Monitor page.")
files = st.file_uploader("Images", type=None, accept_multiple_files=True, key="upload_files")
if not files:
    st.info("No images uploaded yet. At least 2 readable images are needed; 30 or more give the tests power.")
    st.stop()


def upload_key(uploaded: list) -> str:
    """Identifies one upload cheaply: Streamlit's id, name and size of each file (no bytes hashed)."""
    digest = hashlib.sha256()
    for file in uploaded:
        digest.update(f"{getattr(file, 'file_id', '')}\0{file.name}\0{file.size}\n".encode(errors="replace"))
    return digest.hexdigest()


def batch_key(uploaded: list, reference_n: int) -> str:
    """Identifies one check of an upload: the upload and the reference size (recorded once each)."""
    return hashlib.sha256(f"{upload_key(uploaded)}|{reference_n}".encode()).hexdigest()


def capped(uploaded: list) -> tuple[list, str | None]:
    """At most ``max_uploads`` / ``max_check_n`` files: a seeded random subset beyond, and a note."""
    settings = get_settings()
    limit = min(settings.max_uploads, settings.max_check_n)
    if len(uploaded) <= limit:
        return uploaded, None
    kept = [uploaded[int(position)] for position in seeded_subset(len(uploaded), limit, 0)]
    return kept, (f"a random {limit:,} of {len(uploaded):,} uploaded files (this server checks at most "
                  f"{limit:,})")


def decoded(uploaded: list, size: int) -> tuple:
    """The upload decoded at ``size`` px: once per upload, then kept in this session (widget changes rerun
    the page; they must not decode again)."""
    key = f"{upload_key(uploaded)}|{size}"
    cache = st.session_state.setdefault("upload_decoded", {})
    if key not in cache:
        bar = StreamlitProgress("Decoding")
        images, skipped = decode_images([(file.name, file.getvalue()) for file in uploaded], size,
                                        progress=bar)
        bar.done(f"Decoded {images.shape[0]} of {len(uploaded)} files")
        cache.clear()  # one upload at a time per session: memory stays bounded
        cache[key] = (images, skipped)
    return cache[key]


files, sampled_note = capped(files)
if sampled_note:
    st.warning(f"Checking {sampled_note}.")
with user_errors():
    reference = _lab.reference_for(card.version, int(n_reference))
    images, skipped = decoded(files, reference.image_size)
if skipped:
    st.warning(f"Skipped {len(skipped)} file(s):")
    st.dataframe([{"file": name, "reason": reason} for name, reason in skipped], hide_index=True,
                 key="upload_skipped")
if images.shape[0] < 2:
    st.error("Fewer than 2 readable images: upload more to run the tests.")
    st.stop()
skipped_names = {name for name, _ in skipped}
names = [file.name for file in files if file.name not in skipped_names][:images.shape[0]]
with user_errors():
    shown = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
    source = f"upload: {sampled_note}: {shown}" if sampled_note else f"upload: {shown}"
    report = reference.check(images, file_names=names, skipped=skipped, source=source)
recorded = st.session_state.setdefault("upload_recorded", {})
incomplete = st.session_state.setdefault("upload_incomplete", set())  # recorded before the warm-up ended
key = batch_key(files, int(n_reference))
store = history_store() if keep else None  # None (and why) when the history cannot be opened
if store is not None and key not in recorded:
    try:
        recorded[key], action = record_check(report, images=images, origin="upload", store=store,
                                             max_side=reference.source.card.model_config.image_size)
    except ZealError as error:  # the report below still stands; only the record is missing
        show_history_error(error)
        action = None
    if report.pending and key in recorded:
        incomplete.add(key)
    if action:
        st.toast(f"The retrain policy queued {md(action['strategy'])} on checks {action['check_ids']}.")
elif store is not None and key in incomplete and not report.pending:  # the diagnosis is ready: complete
    try:
        store.complete(recorded[key], report)
        incomplete.discard(key)
    except ZealError as error:
        show_history_error(error)

decision = report.decision
columns = st.columns([0.8, 1.2, 1.4, 1, 0.9])
columns[0].metric("Images tested", report.n)
columns[1].metric("Verdict", "drift" if decision.drift else "no drift",
                  delta=f"{len(decision.flagged)}/{decision.detectors} detectors < α/k",
                  delta_color="off", delta_arrow="off", help=decision.rule)
_labelfree.estimate_metric(columns[2], report)
confidence = float(np.asarray(report.sample.probs).max(axis=1).mean())
reference_confidence = float(np.asarray(reference.reference.probs).max(axis=1).mean())
columns[3].metric("Mean confidence", f"{confidence:.1%}", delta_color="off", delta_arrow="off",
                  delta=f"{(confidence - reference_confidence) * 100:+.1f} pts vs reference")
columns[4].metric("History", f"check #{recorded[key]}" if key in recorded else "not recorded")
_labelfree.show_estimates(report, key="upload")
_labelfree.show_diagnosis(report, reference, key="upload_diagnosis")

left, right = st.columns(2, gap="medium")
with left:
    st.markdown(f"**Detectors** · reference: {report.reference_n} clean held-out images of "
                f"{md(shown_dataset(card.dataset))}")
    st.table(_lab.detector_frame(report))
    st.caption(_lab.decision_caption(report))
with right:
    frame = scatter_frame(report, reference, sample_domain="upload")
    st.plotly_chart(_lab.scatter_figure(frame, "domain"), key="upload_scatter")
    st.caption(f"Where the uploads (×) sit in the reference's {report.projection.upper()} map of the model's "
               "features.")

st.markdown("**Most drift-typical uploads** (drift score: share of the reference that is nearer the "
            "reference than the image; 1.00 = further out than every reference image)")
typical = report.typical[:8]
grid = st.columns(len(typical), gap="small")
for column, item in zip(grid, typical, strict=True):
    column.image(_lab.thumbnail(report, item.row), caption=f"{md(item.name)}: {item.score:.2f}",
                 width="stretch")

try:
    rows = store.checks(limit=50) if store is not None else []
except ZealError as error:
    show_history_error(error)
    rows = []
if rows:
    st.plotly_chart(_labelfree.history_figure(rows, recorded.get(key)), key="upload_history")
    st.page_link("app_pages/monitor.py",
                 label="All recorded checks and the retrain policy: Monitor → History",
                 icon=":material/monitoring:")
with st.expander("Predictions"):
    probs = np.asarray(report.sample.probs)
    class_names = reference.class_names
    st.dataframe({"file": names, "prediction": [class_names[i] for i in probs.argmax(axis=1)],
                  "confidence": probs.max(axis=1), "drift score": report.drift_scores}, hide_index=True,
                 key="upload_predictions")
