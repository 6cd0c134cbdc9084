"""Data page: pick a dataset, see counts per class and sample images."""

import streamlit as st

from zeal_core.data import list_datasets, load_dataset

st.title("Data")
name = st.selectbox("Dataset", list_datasets(), key="dataset")
dataset = load_dataset(name)
st.json(dataset.info()["class_counts"])
