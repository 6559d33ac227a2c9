"""Graft dashboard (placeholder until the dashboard issues land): shows the sample dataset and runs."""
import os
from pathlib import Path

import streamlit as st

from core import data
from core.runs import RunStore

st.set_page_config(page_title="Graft", layout="wide")
st.title("Graft — transfer learning for a folder of photos")
st.write("Fine-tune an ImageNet-pretrained backbone on your own classes, offline. "
         "The full dashboard (Dataset, Train, Results, Predict, Runs) is coming next; "
         "meanwhile the engine is driven by `python -m core --help`.")
sample = os.environ.get("GRAFT_SAMPLE")
folder = st.text_input("Dataset folder", value=sample or "", key="dataset_folder")
if folder and Path(folder).is_dir():
    index = data.scan(folder)
    st.metric("images", len(index.items))
    st.bar_chart(index.counts())
    if len(index.skipped):
        st.dataframe(index.skipped[["path", "reason", "detail"]])
elif folder:
    st.error(f"{folder}: not a folder")
st.subheader("Runs")
st.dataframe(RunStore("runs").list()[["id", "name", "backbone", "status", "best_val_acc", "test_acc"]])
