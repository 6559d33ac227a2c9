"""Results page: the evaluation a stakeholder understands, for one run, and a report to hand on."""
import json

import pandas as pd
import streamlit as st

from core import charts, report
from core.errors import GraftError
from core.evaluate import evaluate_run
from core.explain import NotSupported
from core.images import ImageError, load_rgb
from core.rundir import RunDir
from pages import common
from pages.common import escape_markdown as md

common.ensure_navigation()

st.title("Results")
store = common.store()
run_dir = common.pick_finished_run("Run", "results_run")
run_id = run_dir.id


@st.cache_data(show_spinner=False, max_entries=16)
def read_metrics(path: str, stamp: float) -> dict:
    """The run's metrics.json, read again only when it changes (reading has no side effects)."""
    return RunDir(path).metrics()


try:
    if not run_dir.metrics_file.is_file():  # evaluated once, outside any cache, and recorded in the run
        with st.spinner("Evaluating on the test images…"):
            evaluate_run(run_dir, store=store, run_id=run_id)
    metrics = read_metrics(str(run_dir), common.mtime(run_dir.metrics_file))
    card = run_dir.card()
except GraftError as err:
    common.show_error(err, "This run cannot be evaluated")
    st.stop()
root = card.data_root
predictions = common.table(run_dir.predictions_file).copy()
predictions["correct"] = predictions["correct"].astype(str) == "True"
manifest = common.table(run_dir.manifest_file)
sha = dict(zip(manifest["path"], manifest["sha1"]))

# ------------------------------------------------------------------ headline
split_name = "test" if metrics["split"] == "test" else "validation (no test split)"
st.caption(f"Evaluated on the {split_name} images of the run's manifest.")
cols = st.columns(6)
cols[0].metric("Accuracy", f"{metrics['accuracy']:.1%}")
cols[1].metric("Balanced accuracy", f"{metrics['balanced_accuracy']:.1%}")
cols[2].metric("Macro F1", f"{metrics['macro_f1']:.3f}")
cols[3].metric(f"Top-{metrics['top_k']} accuracy", f"{metrics['top_k_accuracy']:.1%}")
cols[4].metric("Test images", metrics["n"])
if "tta" in metrics:
    cols[5].metric(f"TTA accuracy ({metrics['tta']['views']} views)", f"{metrics['tta']['accuracy']:.1%}",
                   delta=f"{metrics['tta']['accuracy'] - metrics['accuracy']:+.1%}")
elif common.is_owner() and cols[5].button("Compute TTA (5 views)", key="compute_tta"):
    with st.spinner("Test-time augmentation…"):
        evaluate_run(run_dir, tta=5, store=store, run_id=run_id)
    st.rerun()

# ------------------------------------------------------------------ confusion
st.header("Confusion matrix")
labels_all = metrics["labels"]
normalised = st.toggle("Row-normalised (% of each true class)", key="cm_normalised")
shown = labels_all
if len(labels_all) > 15:
    involved = list(dict.fromkeys([c for p in metrics["most_confused"] for c in (p["true"], p["predicted"])]))
    if involved and st.toggle("Only the classes in the top confusions", value=True, key="cm_focus"):
        shown = involved
left, right = st.columns([3, 2])
left.altair_chart(charts.confusion(metrics, normalised, shown), key="cm_chart")
right.subheader("Most confused pairs")
right.dataframe(pd.DataFrame(metrics["most_confused"]), hide_index=True, key="confused_pairs")

# ------------------------------------------------------------------ per class
st.header("Per class")
per_class = pd.DataFrame(metrics["per_class"])
if "tta" in metrics:
    per_class["tta accuracy"] = per_class["class"].map(metrics["tta"]["per_class_accuracy"])
    per_class["tta gain"] = per_class["tta accuracy"] - per_class["accuracy"]
left, right = st.columns([2, 3])
left.altair_chart(charts.per_class(metrics), key="per_class_chart")
right.dataframe(per_class, hide_index=True, key="per_class_table",
                column_config={c: st.column_config.NumberColumn(format="%.3f")
                               for c in ("accuracy", "precision", "recall", "f1", "tta accuracy", "tta gain")})


# ------------------------------------------------------------------ galleries
def grid(rows: pd.DataFrame, per_row: int = 6) -> None:
    """Thumbnails with the prediction, green when right and red when wrong."""
    for start in range(0, len(rows), per_row):
        cells = st.columns(per_row)
        for cell, row in zip(cells, rows.iloc[start:start + per_row].itertuples()):
            data = common.thumbnail(str(root / row.path), sha.get(row.path, row.path.replace("/", "_")))
            if data:
                cell.image(data, width="stretch")
            mark = ":green[✓" if row.correct else ":red[✗"
            cell.markdown(f"{mark} {md(row.predicted)} {row.confidence:.0%}]  \n:gray[true: {md(row.label)}]")


st.header("Mistakes")
mistakes = predictions[~predictions["correct"]].sort_values("loss", ascending=False)
f1, f2 = st.columns(2)
true_filter = f1.selectbox("True class", ["any", *labels_all], key="mistakes_true")
pred_filter = f2.selectbox("Predicted class", ["any", *labels_all], key="mistakes_pred")
if true_filter != "any":
    mistakes = mistakes[mistakes["label"] == true_filter]
if pred_filter != "any":
    mistakes = mistakes[mistakes["predicted"] == pred_filter]
st.caption(f"{len(mistakes)} misclassified images, highest loss first.")
grid(mistakes.head(24))


if len(mistakes):
    picked = st.selectbox("Look closer at", mistakes["path"].tolist(), key="mistake_pick")
    row = mistakes[mistakes["path"] == picked].iloc[0]
    try:
        image = load_rgb(root / picked)
        a, b, c = st.columns(3)
        a.image(image, caption=f"{picked} — true {row['label']}", width="stretch")
        top = sorted(((cls, float(row[f"p_{cls}"])) for cls in labels_all), key=lambda t: -t[1])[:5]
        b.altair_chart(charts.top_k_bars(top), key="mistake_topk")
        try:
            shown, explained = common.gradcam_overlay(str(run_dir), common.model_stamp(run_dir),
                                                      f"{root / picked}:{sha.get(picked, '')}", image)
            c.image(shown, caption=f"Grad-CAM for '{explained}'", width="stretch")
        except NotSupported as err:
            c.info(str(err))
    except (ImageError, GraftError) as err:
        st.warning(str(err))

st.header("Predictions for a category")
category = st.selectbox("Class", labels_all, key="category_pick")
grid(predictions[predictions["label"] == category].head(36))

# ------------------------------------------------------------------ curves, calibration, config
st.header("Training")
epochs = store.epochs(run_id)
if len(epochs):
    st.altair_chart(charts.curves(epochs), key="results_curves")
left, right = st.columns(2)
left.altair_chart(charts.reliability(metrics["calibration"]), key="reliability")
left.caption(f"Expected calibration error: {metrics['calibration']['ece']:.3f} (0 = confidences match accuracy)")
right.subheader("Config")
right.code(json.dumps(card.config, indent=2), language="json")

st.header("Report")
if st.button("Build the HTML report", key="build_report"):
    with st.spinner("Rendering…"):
        st.session_state["report_html"] = (run_id, report.build(run_dir))
if st.session_state.get("report_html", (None,))[0] == run_id:
    st.download_button("Download report.html", st.session_state["report_html"][1], file_name=f"{run_id}-report.html",
                       mime="text/html", key="download_report")
