"""What every page shares: session state, the sidebar, and cached calls into core."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st
from PIL import Image

from core import data, health, samples, settings, thumbs
from core.errors import GraftError
from core.explain import Explainer, overlay
from core.predict import Predictor
from core.rundir import RunDir, data_root
from core.runs import RunStore
from core.storage import default_runs_root


PAGES = [("pages/home.py", "Home", ":material/home:"), ("pages/dataset.py", "Dataset", ":material/folder_open:"),
         ("pages/train.py", "Train", ":material/model_training:"), ("pages/results.py", "Results", ":material/analytics:"),
         ("pages/predict.py", "Predict", ":material/image_search:"), ("pages/runs.py", "Runs", ":material/list:")]


def navigation():
    """The app's pages, in order (st.navigation; the caller runs the returned page)."""
    return st.navigation([st.Page(path, title=title, icon=icon, default=i == 0)
                          for i, (path, title, icon) in enumerate(PAGES)])


def shell() -> None:
    """The frame around every page: page config, session state, sidebar."""
    st.set_page_config(page_title="Graft", page_icon=":material/photo_library:", layout="wide")
    init_state(os.environ.get("GRAFT_SAMPLE"))
    sidebar()


def ensure_navigation() -> None:
    """Send a page that Streamlit ran without app.py back through app.py.

    Streamlit treats a `pages/` folder beside the entrypoint as an old-style multipage app until
    a run of app.py has called `st.navigation`: the first request for /predict on a freshly
    started server runs pages/predict.py alone (no sidebar, every file listed as a page, and
    widget state that the next rerun loses). Each page calls this first; in that case it turns
    the old behaviour off for the server and reruns, now through app.py. Through app.py it
    does nothing.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def init_state(sample_env: str | None = None) -> None:
    """Session state from the settings file, for whatever this session does not hold yet.

    Runs every time: Streamlit forgets a widget's key (min_per_class) on a page that does not
    draw that widget, and the settings file remembers it.
    """
    saved = settings.load()
    st.session_state.setdefault("dataset", saved["dataset"] or (sample_env or ""))
    st.session_state.setdefault("runs_dir", saved["runs"] or str(default_runs_root()))
    st.session_state.setdefault("min_per_class", int(saved["min_per_class"]))
    st.session_state.setdefault("recent", saved["recent"])


def _use_folder(folder: str) -> None:
    st.session_state["dataset"] = folder
    st.session_state["recent"] = settings.save(dataset=folder)["recent"]


def sidebar() -> None:
    with st.sidebar:
        st.header("Working data")
        typed = st.text_input("Dataset folder", value=st.session_state["dataset"], key="dataset_input",
                              help="ROOT/<class>/*.jpg, or ROOT/{train,val,test}/<class>/*")
        if typed != st.session_state["dataset"]:
            _use_folder(typed.strip())
        recent = [r for r in st.session_state.get("recent", []) if r != st.session_state["dataset"]]
        if recent:
            pick = st.selectbox("Recent folders", ["—", *recent], key="recent_pick")
            if pick != "—":
                _use_folder(pick)
                st.session_state.pop("recent_pick")
                st.rerun()
        if st.button("Use the sample dataset (ELPV solar cells)", key="use_sample"):
            with st.spinner("Fetching the ELPV sample from PyPI (once)…"):
                folder = str(samples.fetch("elpv", progress=False))
            _use_folder(folder)
            st.session_state["dataset_input"] = folder
            st.rerun()
        runs_dir = st.text_input("Runs folder", value=st.session_state["runs_dir"], key="runs_input",
                                 help=f"Where trained runs are kept (default {default_runs_root()}).")
        if runs_dir.strip() and runs_dir.strip() != st.session_state["runs_dir"]:
            folder = str(data_root(runs_dir.strip()))
            st.session_state["runs_dir"] = folder
            settings.save(runs=folder)


@st.cache_data(show_spinner="Scanning the folder…", max_entries=8)
def scan(folder: str, signature: tuple) -> data.DatasetIndex:
    return data.scan(folder)


@st.cache_data(max_entries=16)
def split(folder: str, signature: tuple, min_per_class: int, seed: int = 0) -> data.Split:
    return data.split(scan(folder, signature), seed=seed, min_per_class=min_per_class)


@st.cache_data(max_entries=8)
def check_health(folder: str, signature: tuple, min_per_class: int) -> health.Health:
    return health.check(scan(folder, signature), split(folder, signature, min_per_class))


@st.cache_data(max_entries=8)
def size_histogram(folder: str, signature: tuple):
    """Images per bin of the shorter side: aggregated here, so 50,000 rows never reach the browser."""
    return health.size_histogram(scan(folder, signature).items)


def current_dataset() -> tuple[str, tuple] | None:
    """(folder, signature) of the working dataset, or None with a message drawn."""
    folder = st.session_state.get("dataset", "").strip()
    if not folder:
        st.info("Choose a dataset folder in the sidebar, or use the sample dataset.")
        return None
    folder = str(data_root(folder))
    if not Path(folder).is_dir():
        st.error(f"`{folder}` is not a folder. Give a folder with one sub-folder per class.")
        return None
    return folder, data.signature(folder)


def runs_root() -> str:
    """The runs folder of this session, absolute."""
    return str(data_root(st.session_state.get("runs_dir") or default_runs_root()))


def store() -> RunStore:
    """This session's run store (one per server process and folder), with runs whose training
    process died marked failed."""
    try:
        opened = RunStore.open(runs_root())
    except GraftError as err:
        show_error(err)
        st.stop()
    opened.reconcile()
    if opened.recovered:
        st.warning(opened.recovered)
    return opened


def show_error(err: Exception, what: str = "") -> None:
    """One way to show a problem the user can act on: the message, never a traceback."""
    st.error((f"{what}: " if what else "") + str(err))


def pick_finished_run(label: str, key: str, best_first: bool = False) -> RunDir:
    """A selectbox of the runs that have a model (default: the latest, or the best by test
    accuracy); stops the page with a hint when there is none. Returns the run folder."""
    opened = store()
    runs = opened.finished()
    if runs.empty:
        st.info("No trained run yet: train one on the Train page.")
        st.stop()
    if best_first:
        runs = runs.sort_values("test_acc", ascending=False, na_position="last")
    acc = runs["test_acc"].map(lambda a: f"test acc {a:.3f}" if pd.notna(a) else "no test accuracy")
    names = dict(zip(runs["id"], runs["name"] + " · " + runs["status"] + " · " + acc + " (" + runs["id"] + ")"))
    return opened.run_dir(st.selectbox(label, runs["id"].tolist(), format_func=names.get, key=key))


@st.cache_data(show_spinner=False, max_entries=2048)
def thumbnail(path: str, key: str) -> bytes | None:
    """A gallery thumbnail, kept in memory for every viewer after the first (the disk cache behind it
    survives restarts)."""
    return thumbs.thumbnail(path, key)


def mtime(path: Path) -> float:
    """A file's modification time (0 when missing): the cache key part that notices a rewrite."""
    return path.stat().st_mtime if path.is_file() else 0.0


@st.cache_data(max_entries=16)
def _table(path: str, stamp: float) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False)


def table(path: Path) -> pd.DataFrame:
    """A run's CSV (predictions, manifest), read again only when the file changes."""
    return _table(str(path), mtime(path))


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _predictor(run_dir: str, stamp: float) -> Predictor:
    return Predictor.from_run(run_dir)


def model_stamp(run: RunDir) -> float:
    """Changes when the run's best checkpoint is rewritten: the cache key part of its model."""
    return mtime(run.best_file)


def predictor(run: RunDir) -> Predictor:
    """The run's model, loaded once per server for as long as best.pt is unchanged."""
    return _predictor(str(run), model_stamp(run))


@st.cache_data(show_spinner=False, max_entries=512)
def predict_image(run_dir: str, stamp: float, image_key: str, top_k: int, _image: Image.Image) -> dict:
    """The run's top-k for one image, computed once (moving a slider does not predict again)."""
    return _predictor(run_dir, stamp).predict([_image], top_k=top_k)[0]


@st.cache_resource(show_spinner="Loading the model for Grad-CAM…", max_entries=2)
def _explainer(run_dir: str, stamp: float) -> Explainer:
    return Explainer.from_run(run_dir)


@st.cache_data(show_spinner="Grad-CAM…", max_entries=64)
def gradcam_overlay(run_dir: str, stamp: float, image_key: str, _image: Image.Image) -> tuple[Image.Image, str]:
    """(the image with its Grad-CAM heatmap, the class it explains); `image_key` names `_image`.
    Grad-CAM runs on its own copy of the model, never on the shared predictor's."""
    explainer = _explainer(run_dir, stamp)
    heat, target, _ = explainer.gradcam(_image)
    return overlay(_image, heat), explainer.labels[target]
