"""The current run and its model, shared by Results and Predict: the run picker, the run's pass/inspect
rule, its predictor and one photo's prediction, the training photos a photo looks most like, Grad-CAM,
thumbnails and the run's CSV tables, each cached for every viewer."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st
from PIL import Image

from core.base.errors import GraftError
from core.data import thumbs
from core.deploy.predict import Predictor
from core.evaluate.decision import for_run as decision_for_run
from core.present import words
from core.runs.folder import RunDir
from core.trust.explain import Explainer, overlay
from pages.common import show_error, store


def pick_finished_run(label: str, key: str) -> RunDir:
    """The **current run**, shared by Results, Predict and the report: the run last trained or
    picked in this session, else the best by validation accuracy (test figures are shown, never
    used to choose). Draws a picker to change it; stops the page with a hint when no run has a
    model. Returns the run folder."""
    opened = store()
    runs = opened.best_by_validation()
    if runs.empty:
        st.info("No trained run yet: train one on the Train page.")
        st.stop()

    def figures(row) -> str:
        return words.run_figures(row.best_val_acc if pd.notna(row.best_val_acc) else None,
                                 row.test_acc if pd.notna(row.test_acc) else None)

    names = {row.id: f"{row.name} · {figures(row)}" for row in runs.itertuples()}
    ids = list(names)
    current = next((r for r in (st.session_state.get("current_run"), st.session_state.get(key)) if r in names), ids[0])
    st.session_state[key] = st.session_state["current_run"] = current

    def choose() -> None:
        st.session_state["current_run"] = st.session_state[key]

    picked = st.selectbox(label, ids, format_func=names.get, key=key, on_change=choose,
                          help="The run shown here is also the one Predict and the report use.")
    return opened.run_dir(picked)


def decision_of(run: RunDir):
    """The run's pass/inspect rule (read afresh: Results saves it), or None; a damaged one is said."""
    try:
        return decision_for_run(run)
    except GraftError as err:
        show_error(err, "The pass/inspect rule of this run cannot be used")
        return None


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
    """Changes when the run's best checkpoint or its unfamiliar-photo detector is rewritten: the cache
    key part of its model."""
    return max(mtime(run.best_file), mtime(run.familiar_card_file))


def predictor(run: RunDir) -> Predictor:
    """The run's model, loaded once per server for as long as best.pt is unchanged."""
    return _predictor(str(run), model_stamp(run))


@st.cache_data(show_spinner=False, max_entries=512)
def predict_image(run_dir: str, stamp: float, image_key: str, top_k: int, _image: Image.Image) -> dict:
    """The run's top-k for one image, computed once (moving a slider does not predict again)."""
    return _predictor(run_dir, stamp).predict([_image], top_k=top_k)[0]


def nearest_photos(where, result: dict, names: dict[str, str], data_root: Path | None) -> None:
    """'It looks most like these training photos', with their labels (explanation by example);
    nothing for an unfamiliar photo, whose nearest photos are not near."""
    if not result.get("examples") or result.get("unfamiliar") or data_root is None:
        return
    shown = [(thumbnail(str(data_root / e["path"]), e["sha1"]), names.get(e["label"], e["label"]))
             for e in result["examples"] if e.get("sha1")]
    shown = [(thumb, label) for thumb, label in shown if thumb]
    if shown:
        where.caption("It looks most like these training photos:")
        where.image([d for d, _ in shown], caption=[label for _, label in shown], width=90)


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


def check_labels(folder: str):
    """Run the label check (`core.trust.audit`) with a progress bar in plain words; its result, or None
    when it could not run (said on the page)."""
    from core.trust import audit

    bar = st.progress(0.0, text="Reading the photos with the pretrained network…")
    try:
        return audit.audit(folder, on_progress=lambda done, total: bar.progress(
            done / max(total, 1), text=words.reading_photos(done, total)))
    except (GraftError, OSError) as err:
        show_error(err, "The label check could not run")
        return None
    finally:
        bar.empty()
