"""Your own images: upload a batch (the production sample), check it against the reference, keep it in the
history.

One call does the work: ``CheckService.check_and_record(images)`` (``zeal_core.service``), under the lab's
check profile, so an upload gets the same p-values and decision as ``check`` on the command line; the check
is recorded once per distinct upload, where the retrain policy and the alert webhook act on it.
"""

import hashlib

import numpy as np
import streamlit as st

from app_pages import _lab, _labelfree
from app_pages._ui import (
    StreamlitProgress,
    active_card,
    first_run_panel,
    user_errors,
)
from zeal_core.data import decode_images
from zeal_core.history import HistoryStore
from zeal_core.reference import scatter_frame

st.title("Your own images")
st.write("Upload a batch of images — the production sample — and every detector tests it against a clean "
         "held-out sample of the model's own dataset. PNG, JPEG, BMP, GIF, TIFF and WebP work; files that "
         "cannot be read are listed with the reason.")
if not first_run_panel():
    st.stop()
card = active_card()
service = _lab.service()
left, right = st.columns([2, 1], vertical_alignment="bottom")
left.caption(f"Checked with the lab's check profile “{service.profile.name}”, the same as `python -m "
             "zeal_core check`: the same images get the same p-values and verdict here and from cron.")
keep = right.toggle("Record in the history", value=True, key="upload_record",
                    help="Keep the check (and the images, for a later adaptation) in the history; see the "
                         "Monitor page.")
files = st.file_uploader("Images", type=None, accept_multiple_files=True, key="upload_files")
if not files:
    st.info("No images uploaded yet. At least 2 readable images are needed; 30 or more give the tests power.")
    st.stop()


def batch_key(uploaded: list, profile: object) -> str:
    """Identifies one upload: its files' names and bytes and the check settings (recorded once each)."""
    digest = hashlib.sha256(repr(profile).encode())
    for file in uploaded:
        digest.update(file.name.encode() + b"\0" + file.getvalue())
    return digest.hexdigest()


with user_errors():
    reference = service.reference(card.version)
    bar = StreamlitProgress("Decoding")
    images, skipped = decode_images([(file.name, file.getvalue()) for file in files], reference.image_size,
                                    progress=bar)
    bar.done(f"Decoded {images.shape[0]} of {len(files)} files")
if skipped:
    st.warning(f"Skipped {len(skipped)} file(s):")
    st.dataframe([{"file": name, "reason": reason} for name, reason in skipped], hide_index=True,
                 key="upload_skipped")
if images.shape[0] < 2:
    st.error("Fewer than 2 readable images: upload more to run the tests.")
    st.stop()
skipped_names = {name for name, _ in skipped}
names = [file.name for file in files if file.name not in skipped_names][:images.shape[0]]
recorded = st.session_state.setdefault("upload_recorded", {})
incomplete = st.session_state.setdefault("upload_incomplete", set())  # recorded before the warm-up ended
key = batch_key(files, service.profile)
with user_errors():
    shown = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
    outcome = service.check_and_record(images, version=card.version, record=keep and key not in recorded,
                                       origin="upload", file_names=names, skipped=skipped,
                                       source=f"upload: {shown}")
report = outcome.report
if outcome.check_id is not None:
    recorded[key] = outcome.check_id
    if report.pending:
        incomplete.add(key)
    if outcome.policy:
        st.toast(f"The retrain policy queued {outcome.policy['strategy']} on checks "
                 f"{outcome.policy['check_ids']}.")
    if outcome.alert is not None:
        st.toast(f"Alert {'sent' if outcome.alert.sent else 'NOT sent'} to {outcome.alert.target}.")
elif key in incomplete and not report.pending:  # the diagnosis is ready now: complete the record
    service.history.complete(recorded[key], report)
    incomplete.discard(key)

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
    st.markdown(f"**Detectors** · reference: {report.reference_n} clean held-out images of {card.dataset}")
    st.table(_lab.detector_frame(report))
    st.caption(_lab.decision_caption(report))
    st.caption(_lab.profile_caption(report))
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
    column.image(_lab.thumbnail(report, item.row), caption=f"{item.name}: {item.score:.2f}", width="stretch")

rows = HistoryStore().checks(limit=50)
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
