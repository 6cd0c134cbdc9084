"""Zeal Drift Lab: ``streamlit run app.py``. Pages live in pages/; all logic lives in zeal_core."""

import streamlit as st

st.set_page_config(page_title="Zeal Drift Lab", page_icon="🧭", layout="wide")

PAGES = [
    st.Page("pages/data.py", title="Data", icon="🗂️", url_path="data"),
]

st.navigation(PAGES).run()
