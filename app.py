"""Graft dashboard: `streamlit run app.py` (or `make app`). Defines the navigation and the frame (page
config, sidebar with the working dataset and runs folder); each page lives in pages/ and stays thin:
read state, call core, draw."""
from pages import common

common.shell().run()
