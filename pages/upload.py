"""Your own images: upload a batch (the production sample) and test it against the clean reference."""

import numpy as np
import streamlit as st

from pages import _lab
from pages._ui import (
    StreamlitProgress,
    active_card,
    device,
    ensure_app_navigation,
    first_run_panel,
    load_dataset_cached,
    load_model_cached,
    require,
    user_errors,
)

ensure_app_navigation()  # a fresh server's first run may skip app.py: go through it

data_module = require("zeal_core.data", "The upload page")
embed = require("zeal_core.embed", "The upload page")
require("zeal_core.drift", "The upload page")

st.title("Your own images")
st.write("Upload a batch of images — the production sample — and every detector tests it against a clean "
         "held-out sample of the model's own dataset. PNG, JPEG, BMP, GIF, TIFF and WebP work; files that "
         "cannot be read are listed with the reason.")
if not first_run_panel():
    st.stop()
card = active_card()
dataset = load_dataset_cached(card.dataset)
sizes = _lab.sample_sizes(card.dataset)
n_reference = st.select_slider("Reference size", sizes, value=sizes[-1], key="upload_reference_n")
files = st.file_uploader("Images", type=None, accept_multiple_files=True, key="upload_files")
if not files:
    st.info("No images uploaded yet. At least 2 readable images are needed; 30 or more give the tests power.")
    st.stop()

bar = StreamlitProgress("Decoding")
with user_errors():
    images, skipped = data_module.decode_images([(file.name, file.getvalue()) for file in files],
                                                dataset.image_size, progress=bar)
bar.done(f"Decoded {images.shape[0]} of {len(files)} files")
if skipped:
    st.warning(f"Skipped {len(skipped)} file(s):")
    st.dataframe([{"file": name, "reason": reason} for name, reason in skipped], hide_index=True,
                 key="upload_skipped")
if images.shape[0] < 2:
    st.error("Fewer than 2 readable images: upload more to run the tests.")
    st.stop()

with user_errors():
    model, model_card = load_model_cached(card.version)
    sample = embed.compute_embeddings(model, model_card.model_config, images, device())
    results = _lab.test_all(card.version, card.dataset, int(n_reference), 0, sample)
    reference = _lab.reference(card.version, card.dataset, int(n_reference), 0)
flagged = sum(result.is_drift for result in results)
left, middle, right = st.columns(3)
left.metric("Images tested", images.shape[0])
middle.metric("Detectors flagging drift", f"{flagged} / {len(results)}")
right.metric("Mean confidence", f"{float(np.asarray(sample.probs).max(axis=1).mean()):.1%}",
             help=f"Reference: {float(np.asarray(reference.probs).max(axis=1).mean()):.1%}")
st.table(_lab.detector_table(_lab.result_rows(results)))
st.caption(f"Decision: drift when p-value < alpha = {_lab.ALPHA}; reference: {n_reference} clean held-out "
           f"images of {card.dataset}.")
with st.expander("Predictions"):
    skipped_names = {name for name, _ in skipped}
    names = [file.name for file in files if file.name not in skipped_names]
    probs = np.asarray(sample.probs)
    st.dataframe({"file": names[:len(probs)],
                  "prediction": [dataset.class_names[i] for i in probs.argmax(axis=1)],
                  "confidence": probs.max(axis=1)}, hide_index=True, key="upload_predictions")
