"""The dataset map as an altair chart (the Dataset and Results pages, `graft map --png`): a dot a
photo coloured by class (the classes' colours everywhere), a shape for what is marked (test
mistake, likely mislabel, kept upload), the photo's thumbnail and labels on hover, and a box
selection named `box` for the pages."""
from __future__ import annotations

import os

import altair as alt
import pandas as pd

from core.evaluate.dataset_map import MARKS, DatasetMap
from core.present.charts import class_colours, readable

SELECTION = "box"
SHAPES = alt.Scale(domain=list(MARKS), range=["circle", "square", "cross", "diamond"])
UPLOAD_CLASS = "(upload)"


def map_frame(found: DatasetMap, names: dict[str, str], images: list[str] | None = None) -> pd.DataFrame:
    """The points as drawn: class and prediction by display name, a `file` name, the `image` data URI."""
    points = found.points
    frame = pd.DataFrame({
        "x": points["x"], "y": points["y"], "path": points["path"],
        "file": points["path"].map(lambda p: p.rsplit("/", 1)[-1]),
        "class": [names.get(c, c) if c else UPLOAD_CLASS for c in points["label"]],
        "predicted": [names.get(c, c) for c in points["predicted"]], "split": points["split"], "mark": points["mark"],
        "size": [30 if m == MARKS[0] else 110 for m in points["mark"]]})
    if images is not None:
        frame["image"] = images
    return frame


def map_chart(frame: pd.DataFrame, classes: list[str], selectable: bool = True, width: int | str = "container",
              height: int = 520) -> alt.Chart:
    """The scatter: colour = class, shape = mark; tooltip with the thumbnail (the `image` column, shown
    by Vega's tooltip as a picture) and the labels; a box selection when `selectable`."""
    domain = list(classes) + ([UPLOAD_CLASS] if (frame["class"] == UPLOAD_CLASS).any() else [])
    tooltip = ([alt.Tooltip("image:N", title="image")] if "image" in frame else []) + [
        alt.Tooltip("file:N", title="photo"), alt.Tooltip("class:N", title="filed as"),
        alt.Tooltip("predicted:N", title="predicted (test)"), alt.Tooltip("mark:N", title="marked"),
        alt.Tooltip("split:N", title="split")]
    chart = alt.Chart(frame).mark_point(filled=True, opacity=0.8).encode(
        x=alt.X("x:Q", axis=None, scale=alt.Scale(zero=False)), y=alt.Y("y:Q", axis=None, scale=alt.Scale(zero=False)),
        color=alt.Color("class:N", scale=class_colours(domain), title="class"),
        shape=alt.Shape("mark:N", scale=SHAPES, title="marked"),
        size=alt.Size("size:Q", legend=None, scale=None),
        order=alt.Order("size:Q"),
        tooltip=tooltip).properties(width=width, height=height)
    if selectable:
        chart = chart.add_params(alt.selection_interval(name=SELECTION, encodings=["x", "y"]))
    return chart


def selected(frame: pd.DataFrame, selection: dict | None) -> pd.DataFrame:
    """The points inside the box the viewer drew (Streamlit's on_select state: {"x": [lo, hi], "y": [lo, hi]})."""
    box = (selection or {}).get(SELECTION) or {}
    if not box.get("x") or not box.get("y"):
        return frame.iloc[0:0]
    (x0, x1), (y0, y1) = sorted(box["x"]), sorted(box["y"])
    return frame[frame["x"].between(x0, x1) & frame["y"].between(y0, y1)]


def save_png(found: DatasetMap, names: dict[str, str], classes: list[str], path: str | os.PathLike,
             title: str = "") -> None:
    """The map (without thumbnails or selection) as a PNG, through vl-convert."""
    import vl_convert

    from core.base.storage import atomic_write

    chart = map_chart(map_frame(found, names), classes, selectable=False, width=760, height=560)
    if title:
        chart = chart.properties(title=title)
    png = vl_convert.vegalite_to_png(readable(chart).to_json(), scale=2)
    atomic_write(path, lambda f: f.write(png))
