"""Zeal Drift Lab: ``streamlit run app.py``. Pages live in pages/; all logic lives in zeal_core."""

import streamlit as st

# An emoji favicon is drawn by the browser; a :material: one comes from Google's font CDN (broken offline).
st.set_page_config(page_title="Zeal Drift Lab", page_icon="🧭", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", url_path="home", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/dataset:", url_path="data"),
    st.Page("pages/model.py", title="Model", icon=":material/model_training:", url_path="model"),
    st.Page("pages/drift_lab.py", title="Drift Lab", icon=":material/science:", url_path="drift_lab"),
    st.Page("pages/retrain.py", title="Retrain", icon=":material/autorenew:", url_path="retrain"),
    st.Page("pages/monitor.py", title="Monitor", icon=":material/monitoring:", url_path="monitor"),
    st.Page("pages/upload.py", title="Your own images", icon=":material/upload:", url_path="upload"),
]

# st.navigation first: it takes over from Streamlit's old pages/-folder mode before pages._ui is imported.
page = st.navigation(PAGES)

from pages._ui import mark_session_through_app, sidebar_status  # noqa: E402
from zeal_core.settings import apply_torch_threads  # noqa: E402

apply_torch_threads()  # ZEAL_TORCH_THREADS / demo mode: keep torch within a small host's cores
sidebar_status()
mark_session_through_app()  # the page's ensure_app_navigation() needs no rerun for this session
page.run()
