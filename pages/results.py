"""Results page: the evaluation a stakeholder understands, for one run, and a report to hand on.

The first screen answers "how good is it?" (the headline with its interval and the figure to beat,
the tiles, the confusion matrix beside the per-class bars); every other section sits in a tab that
is computed only when opened, and can be linked (`?section=mistakes`)."""
import json

import pandas as pd
import streamlit as st

from core.base import access
from core.base.errors import GraftError
from core.data.images import load_rgb
from core.data.notes import display_names, load_class_notes, relabel_metrics
from core.evaluate import learning_curve
from core.evaluate.decision import Decision, at_threshold, sweep
from core.evaluate.metrics import check_folder, evaluate_run, needs_evaluation
from core.evaluate.words import more_photos_sentence
from core.present import charts, report, words
from core.present.words import chance, percent
from core.runs.folder import RunDir
from core.trust.explain import NotSupported
from pages import common, current_run, leaderboard_view, map_view
from pages.common import escape_markdown as md

common.ensure_navigation()

title_col, pick_col = st.columns([1, 3], vertical_alignment="bottom")
title_col.title("Results")
store = common.store()
with pick_col:
    run_dir = current_run.pick_finished_run("Run", "results_run")
run_id = run_dir.id


@st.cache_data(show_spinner=False, max_entries=16)
def read_metrics(path: str, stamp: float) -> dict:
    """The run's metrics.json, read again only when it changes (reading has no side effects)."""
    return RunDir(path).metrics()


try:
    metrics = read_metrics(str(run_dir), current_run.mtime(run_dir.metrics_file))
    if needs_evaluation(metrics):  # evaluated once (again for an older format), outside any cache
        with st.spinner("Evaluating on the test images…"):
            evaluate_run(run_dir, store=store, run_id=run_id)
        metrics = read_metrics(str(run_dir), current_run.mtime(run_dir.metrics_file))
    card = run_dir.card()
except GraftError as err:
    common.show_error(err, "This run cannot be evaluated")
    st.stop()
root = card.data_root
names = display_names(load_class_notes(root), metrics["labels"])  # what people read (Dataset page sets them)
shown_metrics = relabel_metrics(metrics, names)
predictions = current_run.table(run_dir.predictions_file).copy()
predictions["correct"] = predictions["correct"].astype(str) == "True"
manifest = current_run.table(run_dir.manifest_file)
sha = dict(zip(manifest["path"], manifest["sha1"]))
labels_all = metrics["labels"]  # folder names: what predictions, decisions and files use

# ------------------------------------------------------------------ first screen: how good is it?
split_word = "test" if shown_metrics["split"] == "test" else "validation"
st.markdown("#### " + md(words.accuracy_sentence(shown_metrics, split_word)))
st.caption(words.measured_on(split_word, shown_metrics["split"] == "test"))
lo, hi = shown_metrics["accuracy_ci"]
cols = st.columns(5)
cols[0].metric("Accuracy", percent(shown_metrics["accuracy"]),
               help=words.accuracy_help(shown_metrics["n"], split_word, lo, hi))
cols[1].metric("Balanced accuracy", percent(shown_metrics["balanced_accuracy"]),
               help="The average of the per-class accuracies: every class counts the same, however many images it has. "
                    "Far below the accuracy means the rare classes are the weak ones.")
cols[2].metric("Always one class", percent(shown_metrics["baseline"]["accuracy"]),
               help=words.baseline_help(md(names.get(shown_metrics["baseline"]["class"],
                                                     shown_metrics["baseline"]["class"]))))
cols[3].metric(f"{split_word.capitalize()} images", shown_metrics["n"],
               help="How many held-out images the figures rest on: fewer images, wider intervals.")
if "tta" in shown_metrics:
    cols[4].metric(f"With {shown_metrics['tta']['views']} views per image", percent(shown_metrics["tta"]["accuracy"]),
                   delta=f"{(shown_metrics['tta']['accuracy'] - shown_metrics['accuracy']) * 100:+.0f} points",
                   help="Test-time augmentation: the average answer over several slightly changed copies of each image.")
    gain = shown_metrics["tta"]["accuracy"] - shown_metrics["accuracy"]
    if gain <= 0:
        cols[4].caption("Looking at several copies does not help this model: keep the plain figure.")
elif common.is_owner() and cols[4].button("Try 5 views per image", key="compute_tta",
                                          help="Scores each test photo 5 times, slightly changed, and averages: "
                                               "sometimes a little more accurate, 5 times slower to predict."):
    with st.spinner(words.tta_spinner(metrics["n"])):
        evaluate_run(run_dir, tta=5, store=store, run_id=run_id)
    st.rerun()

left, right = st.columns([3, 2])
shown = shown_metrics["labels"]
with left:
    normalised = st.toggle("Row-normalised (% of each true class)", key="cm_normalised",
                           help=words.confusion_help())
    if len(labels_all) > 15:
        involved = list(dict.fromkeys([c for p in shown_metrics["most_confused"] for c in (p["true"], p["predicted"])]))
        if involved and st.toggle("Only the classes in the top confusions", value=True, key="cm_focus"):
            shown = involved
common.chart(left, charts.confusion, shown_metrics, normalised, shown, key="cm_chart")
common.chart(right, charts.per_class, shown_metrics, key="per_class_chart")
right.caption(words.per_class_help())


# ------------------------------------------------------------------ the sections, one tab each
def per_class_numbers() -> None:
    """The figures behind the first screen's charts: per class, and the most confused pairs."""
    common.percent_table(st, report.per_class_table(shown_metrics), {
        **dict.fromkeys(report.PER_CLASS_SHARES),
        "accuracy": "Of this class's test photos, the share the model got right (also called recall).",
        "precision": "Of the test photos the model called this class, the share that really were."},
        {"f1": st.column_config.NumberColumn(format="%.2f", help="Precision and recall in one figure.")},
        hide_index=True, key="per_class_table")
    st.subheader("Most confused pairs")
    st.dataframe(pd.DataFrame(shown_metrics["most_confused"]), hide_index=True, key="confused_pairs")


def grid(rows: pd.DataFrame, per_row: int = 8) -> None:
    """Thumbnails with the prediction, green when right and red when wrong."""
    for start in range(0, len(rows), per_row):
        cells = st.columns(per_row)
        for cell, row in zip(cells, rows.iloc[start:start + per_row].itertuples()):
            data = current_run.thumbnail(str(root / row.path), sha.get(row.path, row.path.replace("/", "_")))
            if data:
                cell.image(data, width="stretch")
            mark = ":green[✓" if row.correct else ":red[✗"
            cell.markdown(f"{mark} {md(names.get(row.predicted, row.predicted))} {chance(row.confidence)}]  \n"
                          f":gray[true: {md(names.get(row.label, row.label))}]")


def mistakes() -> None:
    """The misclassified test photos, worst first, and a closer look at one."""
    mistakes = predictions[~predictions["correct"]].sort_values("loss", ascending=False)
    f1, f2 = st.columns(2)
    true_filter = f1.selectbox("True class", ["any", *labels_all], key="mistakes_true", format_func=lambda c: names.get(c, c))
    pred_filter = f2.selectbox("Predicted class", ["any", *labels_all], key="mistakes_pred",
                               format_func=lambda c: names.get(c, c))
    if true_filter != "any":
        mistakes = mistakes[mistakes["label"] == true_filter]
    if pred_filter != "any":
        mistakes = mistakes[mistakes["predicted"] == pred_filter]
    st.caption(words.mistakes_caption(len(mistakes)))
    grid(mistakes.head(16), per_row=8)

    if len(mistakes):
        picked = st.selectbox("Look closer at", mistakes["path"].tolist(), key="mistake_pick")
        row = mistakes[mistakes["path"] == picked].iloc[0]
        try:
            image = load_rgb(root / picked)
            a, b, c = st.columns(3)
            a.image(image, caption=f"{picked} — true {names.get(row['label'], row['label'])}", width="stretch")
            top = sorted(((names[cls], float(row[f"p_{cls}"])) for cls in labels_all), key=lambda t: -t[1])[:5]
            common.chart(b, charts.top_k_bars, top, key="mistake_topk")
            current_run.nearest_photos(b, current_run.predict_image(str(run_dir), current_run.model_stamp(run_dir),
                                                          f"{root / picked}:{sha.get(picked, '')}", 4, image),
                                  names, root)
            try:
                shown, explained = current_run.gradcam_overlay(str(run_dir), current_run.model_stamp(run_dir),
                                                          f"{root / picked}:{sha.get(picked, '')}", image)
                c.image(shown, caption=f"Grad-CAM for '{explained}'", width="stretch")
            except NotSupported as err:
                c.info(md(str(err)))
        except GraftError as err:  # an unreadable image (ImageError) among them
            st.warning(md(str(err)))


def by_class() -> None:
    """The test photos of one class with the model's answers."""
    category = st.selectbox("Class", labels_all, key="category_pick", format_func=names.get)
    grid(predictions[predictions["label"] == category].head(24))


def more_photos() -> None:
    """The learning curve: would more photos of a class pay?"""
    st.caption(words.learning_curve_caption(split_word))
    curve = learning_curve.load(run_dir)
    if curve is None and common.is_owner() and st.button("Draw the learning curve", key="compute_learning_curve",
                                                          help="Seconds for a frozen network (its features are kept)."):
        with st.spinner("Fitting a quick model 10 times on parts of the training photos…"):
            learning_curve.learning_curve(run_dir)
        st.rerun()  # drawn without the button, which would only offer the same curve again
    if curve is not None:
        st.markdown(md(more_photos_sentence(curve["points"], curve["classes"], names)))
        common.chart(st, charts.learning_curve, curve, names, key="learning_curve_chart")
        lc_table = learning_curve.table(curve, names)
        common.percent_table(st, lc_table, [c for c in lc_table.columns if c != "training photos"], hide_index=True,
                             key="learning_curve_table")
    elif not common.is_owner():
        st.info("The presenter has not drawn the learning curve for this run yet.")


def training() -> None:
    """Training curves, calibration and the run's settings."""
    epochs = store.epochs(run_id)
    if len(epochs):
        common.chart(st, charts.curves, epochs, key="results_curves")
    left, right = st.columns(2)
    common.chart(left, charts.reliability, metrics["calibration"], key="reliability")
    left.caption("Bars reaching the dashed line: when the model says 80 %, it is right about 80 % of the time, so its "
                 "confidence can be taken at its word. Bars below the line: it is more sure of itself than it should be.")
    with right.expander("Details for engineers (the run's settings)"):
        head_fit = run_dir.head_fit()
        for line in words.describe(run_dir.stages(), head_fit):
            st.markdown(line)
        if head_fit:
            st.caption("A fitted last layer is kept only when clearly better on the mean of accuracy and balanced accuracy.")
        st.code(json.dumps(card.config, indent=2), language="json")


def pass_or_inspect() -> None:
    """The pass/inspect rule: which classes go to a person, and from what chance."""
    st.caption("Group the classes into the ones that go to a person for inspection and the ones that pass, then move "
               "the line: how many defects are caught, and how many good parts are sent to inspection with them.")
    saved = current_run.decision_of(run_dir)
    baseline_class = metrics["baseline"].get("train_class", metrics["baseline"]["class"])  # the usual 'good' class
    inspect = st.multiselect("Send to inspection when the model sees", labels_all, key=f"inspect_{run_id}", format_func=names.get,
                             default=saved.inspect if saved else [c for c in labels_all if c != baseline_class])
    if inspect and len(inspect) < len(labels_all):
        c1, c2, c3 = st.columns([2, 1, 1])
        threshold = c1.slider("Inspect when the chance of these classes is at least", 0, 100, format="%d%%",
                              value=round(saved.threshold * 100) if saved else 50, key=f"inspect_threshold_{run_id}",
                              help="Lower: more defects caught, more good parts inspected. Higher: the reverse.") / 100
        cost_miss = c2.number_input("Cost of a missed defect", 0.0, value=float(saved.cost_miss or 0) if saved else 0.0,
                                    key=f"cost_miss_{run_id}", help="Optional: with both costs the table adds the total cost.")
        cost_inspection = c3.number_input("Cost of one inspection", 0.0,
                                          value=float(saved.cost_inspection or 0) if saved else 0.0,
                                          key=f"cost_inspection_{run_id}")
        costs = (cost_miss, cost_inspection) if cost_miss or cost_inspection else (None, None)
        tables = {"test": predictions}
        if run_dir.val_predictions_file.is_file():  # read once per change, like the test predictions
            tables = {"validation": current_run.table(run_dir.val_predictions_file), **tables}
        rows = [{"images": name, **at_threshold(table, inspect, threshold, *costs)} for name, table in tables.items()]
        shown_rows = pd.DataFrame([{
            "images": r["images"], "defects caught": words.count_of(r["caught"], r["defects"], r["caught_share"]),
            "good parts sent to inspection": words.count_of(r["good_sent"], r["good"], r["good_sent_share"]),
            "inspections": r["inspections"], **({"total cost": round(r["cost"], 2)} if "cost" in r else {})} for r in rows])
        left, right = st.columns([3, 2])
        curve = sweep(tables.get("validation", predictions), inspect)
        common.chart(left, charts.tradeoff, curve, threshold, key="tradeoff_chart")
        right.dataframe(shown_rows, hide_index=True, key="tradeoff_table")
        right.caption("Chosen on validation images; the test row shows what to expect on new parts.")
        if common.is_owner() and right.button("Use this rule on Predict and in the export", key="save_decision"):
            run_dir.write_decision(Decision(inspect, threshold, *costs, labels=labels_all))
            st.toast("Saved: Predict, `predict` and the export now say pass or inspect.")
    else:
        st.info("Choose at least one class to inspect, and leave at least one that passes.")


def new_photos() -> None:
    """The model scored on another labelled folder."""
    st.caption("Will it work on another line or camera? Score the model on another labelled folder "
               "(one sub-folder per class, with this run's class names).")
    if common.is_owner():
        c1, c2 = st.columns([4, 1])
        other = c1.text_input("Labelled folder", key="check_folder", placeholder="/path/to/other_line")
        if c2.button("Score it", key="check_button") and other.strip():
            try:
                with st.spinner("Scoring the model on the folder…"):
                    check_folder(run_dir, access.confine(other))
            except GraftError as err:
                common.show_error(err)
    checks = run_dir.checks()
    if checks:
        folders = {i: f"{c['name']} ({c['n']} images)" for i, c in enumerate(checks)}
        picked_check = checks[st.selectbox("Folder", list(folders), format_func=folders.get, key="check_pick")]
        st.markdown(md(words.accuracy_sentence(picked_check, "")))
        if words.unfamiliar_sentence(picked_check):
            (st.warning if picked_check["unfamiliar_share"] > 0.15 else st.caption)(md(words.unfamiliar_sentence(picked_check)))
        if picked_check["skipped_classes"]:
            st.info(md(words.skipped_classes_sentence(picked_check["skipped_classes"])))
        left, right = st.columns([3, 2])
        common.chart(left, charts.confusion, picked_check, key="check_confusion")
        common.percent_table(right, pd.DataFrame(picked_check["per_class"])[["class", "support", "correct", "accuracy"]]
                             .rename(columns={"support": "images", "correct": "right"}), ["accuracy"], hide_index=True,
                             key="check_table")
    else:
        st.write("No other folder scored yet.")


def report_section() -> None:
    """The self-contained HTML report to hand on."""
    if st.button("Build the HTML report", key="build_report"):
        with st.spinner("Rendering…"):
            st.session_state["report_html"] = (run_id, report.build(run_dir))
    if st.session_state.get("report_html", (None,))[0] == run_id:
        st.download_button("Download report.html", st.session_state["report_html"][1], file_name=f"{run_id}-report.html",
                           mime="text/html", key="download_report")


def dataset_map() -> None:
    """The dataset map of this run (pages/map_view.py draws it)."""
    map_view.draw_map(run_dir, key="results_map")


def models_tried() -> None:
    """A budgeted run's leaderboard: every model tried, and why this one was kept."""
    leaderboard_view.draw_leaderboard(run_dir)


SECTIONS = {"numbers": ("Per class", per_class_numbers), "mistakes": ("Mistakes", mistakes),
            "by-class": ("By class", by_class), "more-photos": ("More photos?", more_photos),
            "pass-or-inspect": ("Pass or inspect", pass_or_inspect), "new-photos": ("New photos", new_photos),
            "training": ("Training", training), "report": ("Report", report_section)}
SECTIONS["map"] = ("Map", dataset_map)
if RunDir(run_dir).leaderboard_file.is_file():  # a run that chose its model within a budget
    SECTIONS["models-tried"] = ("Models tried", models_tried)
LABELS = {label: slug for slug, (label, _) in SECTIONS.items()}


def _section_moved() -> None:
    """The tab opened goes into the address, so the link opens the same section."""
    st.query_params["section"] = LABELS.get(st.session_state.get("results_section"), "numbers")


opened = SECTIONS.get(str(st.query_params.get("section", "")).lower(), (None,))[0]
tabs = st.tabs([label for label, _ in SECTIONS.values()], key="results_section", on_change=_section_moved,
               default=opened)
for tab, (_, draw) in zip(tabs, SECTIONS.values()):
    if tab.open:  # only the opened section is computed
        with tab:
            draw()
