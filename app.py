"""Zeal Drift Lab: ``streamlit run app.py``. Pages live in app_pages/; all logic lives in zeal_core."""

import sys

import streamlit as st

# An emoji favicon is drawn by the browser; a :material: one comes from Google's font CDN (broken offline).
st.set_page_config(page_title="Zeal Drift Lab", page_icon="🧭", layout="wide")

PAGES = [
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", url_path="home", default=True),
    st.Page("app_pages/data.py", title="Data", icon=":material/dataset:", url_path="data"),
    st.Page("app_pages/model.py", title="Model", icon=":material/model_training:", url_path="model"),
    st.Page("app_pages/drift_lab.py", title="Drift Lab", icon=":material/science:", url_path="drift_lab"),
    st.Page("app_pages/retrain.py", title="Retrain", icon=":material/autorenew:", url_path="retrain"),
    st.Page("app_pages/monitor.py", title="Monitor", icon=":material/monitoring:", url_path="monitor"),
    st.Page("app_pages/upload.py", title="Your own images", icon=":material/upload:", url_path="upload"),
]
SHARED_MODULES = ("app_pages._ui", "app_pages._lab", "app_pages._labelfree")  # what every page imports
STARTING_TEXT = ("Starting the lab: loading PyTorch, timm, Plotly and the library, once per server start "
                 "(a few seconds; up to half a minute on a small, busy CPU). The page appears by itself.")


def load_shared_modules() -> None:
    """Import the modules every page needs, saying so in the main area while it takes time.

    The first run after a server start spends seconds importing PyTorch and friends before a page can draw
    anything; without this notice the main area stays empty that long and looks broken. Later runs find the
    modules imported and draw nothing here.
    """
    if all(name in sys.modules for name in SHARED_MODULES):
        return
    notice = st.empty()
    notice.info(STARTING_TEXT, icon="⏳")
    import app_pages._labelfree  # noqa: F401  (imports _ui and _lab)

    notice.empty()


page = st.navigation(PAGES)
load_shared_modules()

from app_pages._ui import sidebar_status  # noqa: E402
from zeal_core.settings import apply_torch_threads  # noqa: E402

apply_torch_threads()  # ZEAL_TORCH_THREADS / demo mode: keep torch within a small host's cores
sidebar_status()
page.run()
