"""Graft dashboard: `streamlit run app.py`. Defines the navigation and the sidebar (working
dataset and runs folder); each page lives in pages/ and stays thin: read state, call core, draw."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pages import common  # noqa: E402

st.set_page_config(page_title="Graft", page_icon=":material/photo_library:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/dataset.py", title="Dataset", icon=":material/folder_open:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/results.py", title="Results", icon=":material/analytics:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
    st.Page("pages/runs.py", title="Runs", icon=":material/list:"),
]

common.init_state(os.environ.get("GRAFT_SAMPLE"))
common.sidebar()
st.navigation(PAGES).run()
