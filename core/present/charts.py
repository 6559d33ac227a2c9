"""Altair charts shared by the pages and the HTML report (no Streamlit here)."""
from __future__ import annotations

import altair as alt
import pandas as pd

# Okabe & Ito's colour-blind-safe palette (https://jfly.uni-koeln.de/color/): classes take its colours in
# their own order, on every page and in the report.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
TRAIN, VAL, TEST = "#0072B2", "#E69F00", "#D55E00"  # blue, orange, vermilion: told apart by every eye
# One colour per split on every page and in the report.
SPLIT_COLOURS = alt.Scale(domain=["train", "val", "test"], range=[TRAIN, VAL, TEST])
CURVE_COLOURS = alt.Scale(domain=["train", "val"], range=[TRAIN, VAL])  # curves have no test line
FONT = 14  # the smallest text on a chart: readable on a projector from the back of a room


def class_colours(labels: list[str]) -> alt.Scale:
    """The one colour of each class (in the order given), the same wherever the class is drawn."""
    return alt.Scale(domain=list(labels), range=[OKABE_ITO[i % len(OKABE_ITO)] for i in range(len(labels))])


def readable(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    """Projector-grade text: axis, legend and mark text at least FONT pixels, titles larger."""
    return (chart.configure_axis(labelFontSize=FONT, titleFontSize=FONT)
            .configure_legend(labelFontSize=FONT, titleFontSize=FONT)
            .configure_title(fontSize=FONT + 3)
            .configure_text(fontSize=FONT))


def curves_long(epochs: pd.DataFrame, run_label: str | None = None) -> pd.DataFrame:
    """Per-epoch metrics in long form: epoch, metric (loss/accuracy), split (train/val), value."""
    rows = []
    for metric in ("loss", "acc"):
        for split in ("train", "val"):
            col = f"{split}_{metric}"
            if col in epochs:
                part = epochs[["epoch", col]].rename(columns={col: "value"}).dropna()
                part["metric"] = "loss" if metric == "loss" else "accuracy"
                part["split"] = split
                if run_label is not None:
                    part["run"] = run_label
                rows.append(part)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["epoch", "value", "metric", "split"])


def curves(epochs: pd.DataFrame, color: str = "split", title_suffix: str = "") -> alt.HConcatChart:
    """Loss and accuracy against epoch, train and val (or several runs when color='run')."""
    data = epochs if "metric" in epochs else curves_long(epochs)
    charts = []
    for metric in ("loss", "accuracy"):
        sub = data[data["metric"] == metric]
        enc = dict(x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1)),
                   y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False),
                           axis=alt.Axis(format=".0%") if metric == "accuracy" else alt.Axis()),
                   color=alt.Color(f"{color}:N", scale=CURVE_COLOURS if color == "split" else alt.Undefined,
                                   legend=alt.Legend(labelLimit=0, orient="bottom" if color == "run" else "right")),
                   tooltip=["epoch", "split", alt.Tooltip("value:Q", format=".1%" if metric == "accuracy" else ".4f")]
                   + (["run"] if color == "run" else []))
        if color == "run":
            enc["strokeDash"] = alt.StrokeDash("split:N")
        charts.append(alt.Chart(sub).mark_line(point=True, strokeWidth=3).encode(**enc).properties(
            title=f"{metric}{title_suffix}", width=320, height=220))
    return readable(alt.hconcat(*charts))


def batch_loss(batches: pd.DataFrame, alpha: float = 0.1) -> alt.Chart:
    """Per-batch training loss, exponentially smoothed."""
    data = batches[["step", "loss"]].copy()
    data["smoothed"] = data["loss"].ewm(alpha=alpha).mean()
    base = alt.Chart(data).encode(x=alt.X("step:Q", title="batch"))
    raw = base.mark_line(opacity=0.25).encode(y=alt.Y("loss:Q", title="training loss", scale=alt.Scale(zero=False)))
    smooth = base.mark_line().encode(y="smoothed:Q", tooltip=["step", alt.Tooltip("smoothed:Q", format=".4f")])
    return readable((raw + smooth).properties(title="per-batch loss (smoothed)", width=660, height=180))


def confusion(metrics: dict, normalised: bool = False, classes: list[str] | None = None) -> alt.Chart:
    """Heatmap of the confusion matrix: counts and row-normalised percentages on hover."""
    labels = metrics["labels"]
    cm = pd.DataFrame(metrics["confusion_matrix"], index=labels, columns=labels)
    keep = classes or labels
    rows = []
    for true in keep:
        total = max(int(cm.loc[true].sum()), 1)
        for pred in keep:
            count = int(cm.loc[true, pred])
            rows.append({"true": true, "predicted": pred, "count": count, "percent": count / total})
    frame = pd.DataFrame(rows)
    value = "percent" if normalised else "count"
    cell = max(14, min(56, 640 // max(len(keep), 1)))  # pixels per class, so 4 or 60 classes both read
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:N", sort=keep, title="predicted", axis=alt.Axis(labelAngle=-45, labelLimit=180,
                                                                            labelOverlap=False)),
        y=alt.Y("true:N", sort=keep, title="true", axis=alt.Axis(labelLimit=220)))
    heat = base.mark_rect().encode(
        color=alt.Color(f"{value}:Q", scale=alt.Scale(scheme="blues"), title=value),
        tooltip=["true", "predicted", "count", alt.Tooltip("percent:Q", format=".1%")])
    text = base.mark_text(fontSize=FONT).encode(
        text=alt.Text(f"{value}:Q", format=".0%" if normalised else "d"),
        color=alt.condition(f"datum.{value} > {frame[value].max() / 2 if len(frame) else 0}",
                            alt.value("white"), alt.value("black")))
    layers = heat + text if len(keep) <= 30 else heat
    return readable(layers.properties(width=alt.Step(cell), height=alt.Step(cell), title="Confusion matrix"))


def per_class(metrics: dict) -> alt.Chart:
    """Per-class accuracy (recall) bars with each class's training count on hover and as text."""
    frame = pd.DataFrame(metrics["per_class"])
    bars = alt.Chart(frame).mark_bar().encode(
        x=alt.X("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="accuracy (recall)", axis=alt.Axis(format="%")),
        y=alt.Y("class:N", sort="-x", title=None, axis=alt.Axis(labelLimit=220)),
        color=alt.Color("class:N", scale=class_colours(metrics["labels"]), legend=None),
        tooltip=["class", alt.Tooltip("accuracy:Q", format=".3f"), alt.Tooltip("precision:Q", format=".3f"),
                 alt.Tooltip("f1:Q", format=".3f"), "support", "train_count"])
    text = bars.mark_text(align="left", dx=3).encode(text=alt.Text("train_count:Q", format="d"))
    return readable((bars + text).properties(title="Per-class accuracy (label: training images)",
                                             height=alt.Step(30)))


def reliability(calibration: dict) -> alt.LayerChart:
    """When the model says 80 %, is it right 80 % of the time? One bar per confidence band (its
    height: how often the model was right there; its label: how many images), against the
    diagonal of perfect honesty."""
    frame = pd.DataFrame(calibration["bins"])
    if frame.empty:
        frame = pd.DataFrame(columns=["lo", "hi", "count", "confidence", "accuracy"])
    frame["band"] = [f"{lo:.0%}–{hi:.0%}" for lo, hi in zip(frame["lo"], frame["hi"])]
    x = alt.X("lo:Q", bin="binned", scale=alt.Scale(domain=[0, 1]), title="the model's confidence",
              axis=alt.Axis(format="%"))
    bars = alt.Chart(frame).mark_bar(color=TRAIN, opacity=0.85).encode(
        x=x, x2="hi:Q", y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="how often it was right",
                                 axis=alt.Axis(format="%")),
        tooltip=[alt.Tooltip("band:N", title="confidence"), alt.Tooltip("count:Q", title="images"),
                 alt.Tooltip("accuracy:Q", format=".0%", title="right")])
    counts = alt.Chart(frame).mark_text(dy=-8, fontSize=FONT, color="#333").encode(
        x=alt.X("confidence:Q"), y="accuracy:Q", text="count:Q")
    diagonal = alt.Chart(pd.DataFrame({"x": [0, 1], "y": [0, 1]})).mark_line(strokeDash=[5, 4], color="#888").encode(
        x="x:Q", y="y:Q")
    return readable(alt.layer(bars, diagonal, counts).properties(
        title=f"Confidence against being right (calibration error {calibration['ece']:.0%})", width=360, height=300))


def top_k_bars(top: list[tuple[str, float]]) -> alt.Chart:
    frame = pd.DataFrame(top, columns=["class", "probability"])
    bars = alt.Chart(frame).mark_bar(color=TRAIN).encode(
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1])), y=alt.Y("class:N", sort="-x", title=None),
        tooltip=["class", alt.Tooltip("probability:Q", format=".3f")]).properties(height=alt.Step(28))
    return readable(bars)


def tradeoff(curve: pd.DataFrame, threshold: float) -> alt.LayerChart:
    """Share of defects caught and of good parts sent to inspection against the threshold, with the
    chosen threshold as a vertical rule (core.decision.sweep gives the curve)."""
    long = pd.concat([
        pd.DataFrame({"threshold": curve["threshold"], "share": curve["caught_share"], "what": "defects caught"}),
        pd.DataFrame({"threshold": curve["threshold"], "share": curve["good_sent_share"],
                      "what": "good parts sent to inspection"})], ignore_index=True)
    lines = alt.Chart(long).mark_line(strokeWidth=3).encode(
        x=alt.X("threshold:Q", title="inspect when the chance of an inspect class is at least",
                axis=alt.Axis(format=".0%")),
        y=alt.Y("share:Q", title="share", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("what:N", title=None, scale=alt.Scale(domain=["defects caught", "good parts sent to inspection"],
                                                              range=["#009E73", "#D55E00"]),
                        legend=alt.Legend(orient="bottom", labelLimit=0)),
        tooltip=[alt.Tooltip("threshold:Q", format=".0%"), "what:N", alt.Tooltip("share:Q", format=".0%")])
    rule = alt.Chart(pd.DataFrame({"threshold": [threshold]})).mark_rule(color="#333", strokeDash=[4, 3]).encode(
        x="threshold:Q")
    return readable(alt.layer(lines, rule).properties(width=460, height=260))


def learning_curve(result: dict, names: dict[str, str] | None = None) -> alt.LayerChart:
    """Recall of each class (and the accuracy, thick) against the number of training photos."""
    names = names or {}
    rows = []
    for p in result["points"]:
        rows.append({"training photos": p["train_images"], "line": "all classes (accuracy)", "value": p["accuracy"]})
        rows += [{"training photos": p["train_images"], "line": names.get(c, c), "value": r}
                 for c, r in p["recall"].items()]
    data = pd.DataFrame(rows)
    sizes = [p["train_images"] for p in result["points"]]
    lines = [names.get(c, c) for c in result["points"][0]["recall"]] if result["points"] else []
    base = alt.Chart(data).encode(
        x=alt.X("training photos:Q", scale=alt.Scale(type="log", domain=[min(sizes), max(sizes)], nice=False),
                title="training photos (log scale)"),
        y=alt.Y("value:Q", title="share of test photos found", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("line:N", title=None, legend=alt.Legend(labelLimit=0, orient="bottom", columns=2),
                        scale=alt.Scale(domain=["all classes (accuracy)", *lines],
                                        range=["#000000", *[OKABE_ITO[i % 7] for i in range(len(lines))]])),
        tooltip=["line", "training photos", alt.Tooltip("value:Q", format=".0%")])
    drawn = base.mark_line(point=True).encode(
        strokeWidth=alt.condition(alt.datum.line == "all classes (accuracy)", alt.value(4), alt.value(2)))
    return readable(drawn.properties(height=300, width=600))


def class_counts(counts: dict[str, int], labels: list[str] | None = None) -> alt.Chart:
    """Photos per class, one bar each in the class's colour, the count written at its end."""
    labels = labels or list(counts)
    frame = pd.DataFrame({"class": labels, "photos": [int(counts.get(c, 0)) for c in labels]})
    bars = alt.Chart(frame).mark_bar().encode(
        x=alt.X("photos:Q", title="photos"), y=alt.Y("class:N", sort=labels, title=None, axis=alt.Axis(labelLimit=220)),
        color=alt.Color("class:N", scale=class_colours(labels), legend=None),
        tooltip=["class", "photos"])
    text = bars.mark_text(align="left", dx=4).encode(text="photos:Q", color=alt.value("#333"))
    return readable((bars + text).properties(height=alt.Step(44)))
