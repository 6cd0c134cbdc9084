"""Home: what is loaded (dataset, model version, device) and what to do next."""

import streamlit as st

from app_pages._ui import (
    active_card,
    card_accuracy,
    dataset_name,
    device_text,
    first_run_panel,
    md,
    short_version,
    shown_dataset,
)

st.title("Zeal Drift Lab")
st.write("See, measure and fix data drift in an image classifier: corrupt the data, watch the detectors "
         "react, then retrain and check that the accuracy comes back.")

card = active_card()
left, middle, right = st.columns(3)
left.metric("Dataset", md(shown_dataset(dataset_name())))
middle.metric("Active model", short_version(card.version) if card else "none yet",
              help=card.version if card else "Train or import one on the Model page.")
right.metric("Device", device_text())

if first_run_panel():
    accuracy = card_accuracy(card)
    if accuracy is not None:
        st.caption(f"Model {card.version} was trained on {md(shown_dataset(card.dataset))}; clean validation "
                   f"accuracy {accuracy:.1%}.")
    st.subheader("What next")
    for path, label, icon in (
        ("app_pages/drift_lab.py", "Drift Lab: corrupt the data and watch the detectors", "science"),
        ("app_pages/retrain.py", "Retrain: adapt the model to the drift", "autorenew"),
        ("app_pages/monitor.py", "Monitor: a simulated stream, and the history of real checks", "monitoring"),
        ("app_pages/upload.py", "Your own images: check a batch against the reference", "upload"),
        ("app_pages/model.py", "Model: train, import or pick a version; its confusion matrix",
         "model_training"),
    ):
        st.page_link(path, label=label, icon=f":material/{icon}:")
