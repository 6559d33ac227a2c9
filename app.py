"""Graft dashboard: `streamlit run app.py`. Defines the navigation and the frame (page config,
sidebar with the working dataset and runs folder); each page lives in pages/ and stays thin:
read state, call core, draw."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pages import common  # noqa: E402

common.shell().run()
