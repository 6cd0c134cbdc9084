"""Zeal Drift Lab: ``streamlit run app.py``. Pages live in app_pages/; all logic lives in zeal_core."""

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

page = st.navigation(PAGES)

from app_pages._ui import sidebar_status  # noqa: E402
from zeal_core.settings import apply_torch_threads  # noqa: E402

apply_torch_threads()  # ZEAL_TORCH_THREADS / demo mode: keep torch within a small host's cores
sidebar_status()
page.run()
