"""Home: what is loaded (dataset in use, model version, device) and what to do next."""

import streamlit as st

from app_pages._ui import (
    active_card,
    card_accuracy,
    dataset_status,
    device_text,
    first_run_panel,
    md,
    shown_dataset,
)
from zeal_core.models.registry import card_origin

NEXT_STEPS = (  # (page, what it offers, material icon)
    ("app_pages/drift_lab.py", "Drift Lab: corrupt the data and watch the detectors", "science"),
    ("app_pages/retrain.py", "Retrain: adapt the model to the drift", "autorenew"),
    ("app_pages/monitor.py", "Monitor: a simulated stream, and the history of real checks", "monitoring"),
    ("app_pages/upload.py", "Your own images: check a batch against the reference", "upload"),
    ("app_pages/model.py", "Model: train, import or pick a version; its confusion matrix", "model_training"),
)


def status_cards(card) -> None:
    """Three cards: the dataset the checks use (and why), the active model in full, the device."""
    in_use, note = dataset_status(card)
    left, middle, right = st.columns([1, 1.6, 1.2], gap="medium")
    with left.container(border=True, height="stretch"):
        st.caption("Dataset in use")
        st.markdown(f"#### {md(shown_dataset(in_use))}")
        st.caption("the active model's own dataset" if card else "chosen on Data")
    with middle.container(border=True, height="stretch"):
        st.caption("Active model")
        if card is None:
            st.markdown("#### none yet")
            st.caption("Train or import one on the Model page.")
        else:
            st.markdown(f"`{card.version}`")
            accuracy = card_accuracy(card)
            score = "" if accuracy is None else f" · clean validation accuracy **{accuracy:.1%}**"
            trained_on = md(shown_dataset(card.dataset))
            size = card.model_config.image_size
            st.markdown(f"{card_origin(card)} on **{trained_on}** at {size} px{score}")
            st.caption(f"saved {card.created}")
    with right.container(border=True, height="stretch"):
        st.caption("Device")
        st.markdown(f"#### {device_text()}")
    if note:
        st.warning(note, icon=":material/info:")


def next_steps() -> None:
    """Links to the pages, each with what it is for."""
    st.subheader("What next")
    for path, label, icon in NEXT_STEPS:
        st.page_link(path, label=label, icon=f":material/{icon}:")


def main() -> None:
    """The page."""
    st.title("Zeal Drift Lab")
    st.write("See, measure and fix data drift in an image classifier: corrupt the data, watch the detectors "
             "react, then retrain and check that the accuracy comes back.")
    card = active_card()
    status_cards(card)
    if first_run_panel():
        next_steps()


main()
