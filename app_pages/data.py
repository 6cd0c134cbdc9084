"""Data page: pick a dataset, see counts per class and sample images; download Imagenette when missing.

Thin over ``zeal_core.data``: every number and image comes from the library. The chosen dataset name is
kept in ``st.session_state["dataset"]`` for the other pages.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from app_pages._ui import active_card, md, show_dataset_note, shows_server_paths
from zeal_core.data import ImageDataset, is_prepared, list_datasets, load_dataset, prepare_dataset
from zeal_core.data.folder import allowed_folder_roots
from zeal_core.data.imagenette import PREPARE_COMMAND, archive_path, cache_path
from zeal_core.data.settings import imagenette_settings
from zeal_core.errors import ZealError
from zeal_core.paths import data_dir
from zeal_core.progress import ProgressEvent

FOLDER_OPTION = "Your image folder…"
SAMPLES_PER_CLASS = 8
SAMPLE_SEED = 0  # fixed, so the grid does not change on every rerun
THUMBNAIL_PX = 80  # shown width of each sample; small images are scaled up to it


@st.cache_resource(show_spinner="Loading dataset…", max_entries=4)
def cached_dataset(name: str, source_key: str) -> ImageDataset:
    """The dataset, loaded once per process and shared read-only by every session.

    ``source_key`` names where the data comes from (data folder, Imagenette cache file), so a changed
    setting loads afresh instead of returning the old dataset.
    """
    return load_dataset(name)


def source_key(name: str) -> str:
    if name == "imagenette":
        return str(cache_path(imagenette_settings()))
    return str(data_dir())


def remember_choice() -> None:
    """Keep a new choice for the other pages before the app reruns (so the sidebar shows it at once)."""
    choice = st.session_state.get("data_source")
    path = str(st.session_state.get("data_folder", "")).strip()
    if choice != FOLDER_OPTION:
        st.session_state["dataset"] = choice
    elif path:
        st.session_state["dataset"] = f"folder:{path}"


def choose_dataset() -> str | None:
    """Selectbox of built-in datasets plus a folder path; returns the dataset name or None."""
    options = [*list_datasets(), FOLDER_OPTION]
    current = st.session_state.get("dataset", "digits")
    if "data_source" not in st.session_state:
        st.session_state["data_source"] = (
            current if current in options else FOLDER_OPTION if current.startswith("folder:") else options[0]
        )
    if "data_folder" not in st.session_state:
        st.session_state["data_folder"] = current.removeprefix("folder:") if current.startswith("folder:") \
            else ""
    choice = st.selectbox("Dataset", options, key="data_source", on_change=remember_choice,
                          help="digits works offline; Imagenette needs one download; or use your own folder")
    if choice != FOLDER_OPTION:
        return choice
    if not shows_server_paths():  # a demo: folders only from the allow-list, never a typed server path
        return choose_allowed_folder()
    path = st.text_input("Folder path", key="data_folder", placeholder="/home/me/pictures/pets",
                         on_change=remember_choice,
                         help="One subfolder per class (cats/, dogs/, ...), or train/ and val/ holding them")
    return f"folder:{path.strip()}" if path.strip() else None


def allowed_folders() -> dict[str, str]:
    """Image folders a demo visitor may pick: the subfolders of each ``ZEAL_FOLDER_ROOTS`` folder, by a
    label that shows no server path (``<root name>/<folder name>``) -> its ``folder:PATH`` name."""
    found = {}
    for root in allowed_folder_roots():
        try:
            children = sorted(path for path in root.iterdir()
                              if path.is_dir() and not path.name.startswith("."))
        except OSError:
            continue
        for child in children:
            found[f"{root.name}/{child.name}"] = f"folder:{child}"
    return found


def choose_allowed_folder() -> str | None:
    """A selectbox of the allowed image folders (none without ``ZEAL_FOLDER_ROOTS``)."""
    folders = allowed_folders()
    if not folders:
        st.info("This demo offers no image folders: the built-in datasets work, and a check of your own "
                "images is on the Your own images page.")
        return None
    label = st.selectbox("Image folder", list(folders), key="data_allowed_folder",
                         help="The folders this server offers (one subfolder per class inside each).")
    return folders[label]


def offer_imagenette_download() -> None:
    """Explain what is missing and run ``prepare_dataset`` behind a button, with a progress bar."""
    st.info("Imagenette-160 (10 ImageNet classes, 13,394 photos) is not prepared yet: a download of about "
            "100 MB, decoded once into a cache of about 1 GB.")
    if st.button("Download and prepare Imagenette", type="primary"):
        bar = st.progress(0.0, text="Starting…")
        last = {"fraction": 0.0}

        def on_progress(event: ProgressEvent) -> None:
            if event.fraction is not None:
                last["fraction"] = event.fraction
            bar.progress(last["fraction"], text=f"{event.stage}: {event.message}")

        try:
            prepare_dataset("imagenette", progress=on_progress)
        except ZealError as error:
            bar.empty()
            st.error(f"Could not prepare Imagenette. {md(error)}")
            return
        st.rerun()
    if shows_server_paths():  # a demo names no server path
        st.caption("No network? Set `ZEAL_IMAGENETTE_URL` (a mirror URL or local file) and "
                   f"`ZEAL_IMAGENETTE_MD5`, or place `imagenette2-160.tgz` at {md(archive_path())}, then "
                   f"click the button or run `{PREPARE_COMMAND}`.")


def counts_chart(dataset: ImageDataset) -> None:
    rows = [{"class": name, "split": split, "images": count}
            for name, by_split in dataset.class_counts().items() for split, count in by_split.items()]
    figure = px.bar(pd.DataFrame(rows), x="class", y="images", color="split", barmode="stack",
                    title="Images per class", category_orders={"split": ["train", "val"]})
    figure.update_layout(height=340, margin={"t": 40, "b": 10}, xaxis_title=None)
    figure.update_xaxes(type="category")  # class names like "0".."9" are names, not numbers
    st.plotly_chart(figure, key="data_counts")


def sample_grid(dataset: ImageDataset) -> None:
    rng = np.random.default_rng(SAMPLE_SEED)
    labels = dataset.labels.numpy()
    for label, class_name in enumerate(dataset.class_names):
        members = np.flatnonzero(labels == label)
        if members.size == 0:
            continue
        chosen = np.sort(rng.choice(members, size=min(SAMPLES_PER_CLASS, members.size), replace=False))
        pixels = dataset.images[chosen].permute(0, 2, 3, 1).numpy()  # N x H x W x 3 for st.image
        st.markdown(f"**{md(class_name)}** · {members.size:,} images")
        st.image(list(pixels), width=THUMBNAIL_PX)


def show_dataset(name: str) -> None:
    """Counts, fingerprint, skipped files, the per-class chart and sample grid of ``name``."""
    try:
        dataset = cached_dataset(name, source_key(name))
    except ZealError as error:
        st.error(md(error))
        return
    info = dataset.info()
    columns = st.columns(5)
    columns[0].metric("Images", f"{info['num_images']:,}")
    columns[1].metric("Train", f"{info['num_train']:,}")
    columns[2].metric("Validation", f"{info['num_val']:,}")
    columns[3].metric("Classes", info["num_classes"])
    columns[4].metric("Working size", f"{info['image_size']} px")
    st.caption(f"Content fingerprint `{dataset.fingerprint[:16]}…`")
    if dataset.skipped:
        st.warning(f"{len(dataset.skipped)} file(s) could not be used and were skipped.")
        with st.expander("Skipped files"):
            st.dataframe(pd.DataFrame(dataset.skipped, columns=["file", "reason"]), hide_index=True)
    counts_chart(dataset)
    st.subheader("Samples per class")
    sample_grid(dataset)


def main() -> None:
    """The page: the choice (kept for the other pages), what it means for the checks, then the data."""
    st.title("Data")
    name = choose_dataset()
    if name is None:
        if shows_server_paths():
            st.info("Type the path of a folder with one subfolder per class.")
        return
    st.session_state["dataset"] = name
    show_dataset_note(active_card())
    try:
        missing = name == "imagenette" and not is_prepared("imagenette")
    except ZealError as error:  # e.g. a malformed md5 in params.yaml or the environment
        st.error(md(error))
        return
    if missing:
        offer_imagenette_download()
        return
    show_dataset(name)


main()
