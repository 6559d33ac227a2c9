"""The dataset map drawn on a page (Dataset's Map section, Results): `draw_map(run_dir)` draws the
run's map with hover thumbnails and a box selection, and under it the selected photos as a gallery
with their label and prediction."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.base.errors import GraftError
from core.data import notes
from core.evaluate import dataset_map
from core.present import words
from core.present.map_chart import SELECTION, map_chart, map_frame, selected
from core.runs.folder import RunDir
from pages import common
from pages.common import escape_markdown as md
from pages.current_run import mtime, thumbnail

GALLERY = 48  # photos of a selection shown


@st.cache_data(show_spinner="Placing the photos on the map (once per run; the first map after the server starts "
                            "takes about 20 s longer)…", max_entries=8)
def _map(run_dir: str, stamp: tuple) -> tuple[dataset_map.DatasetMap, list[str]]:
    found = dataset_map.dataset_map(run_dir)
    return found, dataset_map.thumbnail_uris(RunDir(run_dir).card().data_root, found.points)


def _stamp(run: RunDir) -> tuple:
    """What the map depends on: the run's model, its predictions and map, the dataset's decisions and uploads."""
    root = run.card().data_root
    return (mtime(run.best_file), mtime(run.predictions_file), mtime(run.file(dataset_map.MAP_FILE)),
            mtime(notes.corrections_file(root)), mtime(notes.notes_dir(root) / notes.UPLOADS_FILE))


def draw_map(run_dir: str | Path | RunDir, key: str = "dataset_map") -> None:
    """The run's dataset map with its caption, and the gallery of the photos in the box drawn on it.
    The first drawing computes it (the owner only; a viewer sees it once the presenter has)."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    try:
        card = run.card()
    except GraftError as err:
        common.show_error(err, "This run has no map")
        return
    if not run.file(dataset_map.MAP_FILE).is_file():
        if not common.is_owner():
            st.caption("The presenter has not drawn the map of this run yet.")
            return
        if not st.button("Draw the map", key=f"{key}_draw", help="Seconds once a training has read the photos."):
            st.caption("Places every photo so that photos the network sees as alike sit together.")
            return
    try:
        found, images = _map(str(run.path), _stamp(run))
    except (GraftError, OSError) as err:
        common.show_error(err, "The map could not be drawn")
        return
    names = notes.display_names(notes.load_class_notes(card.data_root), card.labels)
    frame = map_frame(found, names, images)
    chart = map_chart(frame, [names[c] for c in card.labels])
    event = st.altair_chart(chart, on_select="rerun", selection_mode=SELECTION, key=key, width="stretch")
    st.caption(words.map_caption(found.method, len(found.points), found.total))
    picked = selected(frame, event.selection if event else None)
    if len(picked):
        gallery(picked, card.data_root, found.points.set_index("path"))
    else:
        st.caption("Drag a box on the map to see those photos here.")


def gallery(picked: pd.DataFrame, root: Path, points: pd.DataFrame) -> None:
    """The selected photos: thumbnail, class and (a test photo) the prediction."""
    st.markdown(f"**{len(picked)} photo{'s' if len(picked) != 1 else ''} selected**"
                + (f" (the first {GALLERY} shown)" if len(picked) > GALLERY else ""))
    shown = picked.head(GALLERY)
    images, captions = [], []
    for row in shown.to_dict("records"):
        thumb = thumbnail(str(root / row["path"]), points.loc[row["path"], "sha1"] or row["path"])
        if thumb:
            images.append(thumb)
            captions.append(md(row["class"]) + (f" → {md(row['predicted'])}" if row["predicted"] else "")
                            + (f" · {row['mark']}" if row["mark"] != "photo" else ""))
    if images:
        st.image(images, caption=captions, width=120)
