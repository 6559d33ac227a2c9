"""Runs page: every run in a sortable table; rename, delete; compare two or more side by side."""
import datetime as dt

import altair as alt
import pandas as pd
import streamlit as st

from core.base.errors import GraftError
from core.evaluate.compare import compare
from core.evaluate.stats import mcnemar
from core.present import charts
from core.present.words import difference_sentence, percent, speed_chart_help
from core.train.config import setting_words
from pages import common
from pages.common import escape_markdown as md
from pages.leaderboard_view import draw_leaderboard

common.ensure_navigation()

st.title("Runs")
store = common.store()
runs = store.list()
if runs.empty:
    st.info(f"No runs in {md(str(store.root))} yet: start one on the Train page.")
    st.stop()


def interval(metrics: dict) -> str:
    return f"{percent(metrics['accuracy_ci'][0])}–{percent(metrics['accuracy_ci'][1])}" if "accuracy_ci" in metrics else ""


def when(ts) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if pd.notna(ts) else ""


def evaluation(run_id: str) -> dict:
    try:
        return store.run_dir(run_id).metrics() or {}
    except GraftError:
        return {}


def in_words(key: str) -> tuple[str, pd.Series]:
    """A setting's column as people read it (core.train.config's description): ('what trains', 'head only')."""
    return setting_words(key, None)[0], runs[key].map(lambda value: setting_words(key, value)[1])


evaluations = {r: evaluation(r) for r in runs["id"]}
checks = {r: store.run_dir(r).checks() for r in runs["id"]}
table = pd.DataFrame({
    "name": runs["name"], "date": runs["created"].map(when),
    "dataset": runs["dataset"].map(lambda p: str(p).rstrip("/").rsplit("/", 1)[-1]),
    **dict([in_words("backbone"), in_words("freeze")]),
    "epochs": runs["epochs_done"], "status": runs["status"],
    "best val acc": runs["best_val_acc"], "test acc": runs["test_acc"],
    "test balanced acc": [evaluations[r].get("balanced_accuracy") for r in runs["id"]],
    "test images": [evaluations[r].get("n") for r in runs["id"]],
    "test 95 % interval": [interval(evaluations[r]) for r in runs["id"]],
    "other folders": [len(checks[r]) for r in runs["id"]],
    "training (s)": runs["train_seconds"], "photos a second": runs["photos_per_s"], "size (MB)": runs["size_mb"],
    "duration (s)": (runs["ended"].fillna(pd.Timestamp.now().timestamp()) - runs["started"]).round(1),
    "id": runs["id"],  # for engineers, last
})
picked = common.percent_table(
    st, table, {"best val acc": "Used to choose between runs; the test figures only report.", "test acc": None,
                "test balanced acc": "The average of the per-class accuracies: every class counts the same."},
    {"test 95 % interval": st.column_config.TextColumn(
        help="With this many test images, the true accuracy lies in this range (Wilson, 95 %)."),
     "training (s)": st.column_config.NumberColumn(help="Seconds from the start of the run to its scoring."),
     "photos a second": st.column_config.NumberColumn(
         help="Photos the kept model scores a second on this machine (its network, timed on a batch)."),
     "size (MB)": st.column_config.NumberColumn(help="The kept model's checkpoint on disk.")},
    hide_index=True, key="runs_table", width="stretch", on_select="rerun", selection_mode="single-row")


def open_run(run_id: str) -> None:
    """Click-through: the picked run becomes the current run of Results, Predict and the report."""
    row = runs[runs["id"] == run_id].iloc[0]
    if run_id not in set(store.best_by_validation()["id"]):
        st.info(md(f"{row['name']} has no model to show ({row['status']})."))
        return
    st.session_state["current_run"] = run_id
    name, results, predict = st.columns([2, 2, 3], vertical_alignment="center")
    name.markdown(f"**{md(row['name'])}**")
    results.page_link("pages/results.py", label="See its results", icon=":material/bar_chart:")
    predict.page_link("pages/predict.py", label="Label new photos with it", icon=":material/image_search:")
    draw_leaderboard(store.run_dir(run_id).path)  # a run trained with a budget: the models it tried


rows = picked.selection.rows if picked is not None else []
if rows:
    open_run(table.iloc[rows[0]]["id"])
else:
    st.caption("Click a row's left edge to open that run on Results or Predict.")


def unique_names(frame) -> dict[str, str]:
    """Run names as people gave them; a name two runs share gets its id added."""
    names = dict(zip(frame["id"], frame["name"]))
    counts = pd.Series(list(names.values())).value_counts()
    return {r: (n if counts[n] == 1 else f"{n} ({r})") for r, n in names.items()}


labels = unique_names(runs)
scored = [{"run": labels[r], "folder": c["name"], "images": c["n"], "accuracy": c["accuracy"],
           "95 % interval": interval(c), "skipped classes": ", ".join(c.get("skipped_classes", {}))}
          for r in runs["id"] for c in checks[r]]
if scored:
    st.subheader("Scores on other folders")
    st.caption("Each run scored on labelled folders from another line or camera (Results → Check on new photos).")
    common.percent_table(st, pd.DataFrame(scored), ["accuracy"], hide_index=True, key="checks_table")



def accuracy_against_speed(frame: pd.DataFrame) -> alt.Chart:
    """Each finished run's test accuracy against the photos a second its model scores, its size as the area."""
    return alt.Chart(frame).mark_circle(opacity=0.8).encode(
        x=alt.X("photos a second:Q", scale=alt.Scale(zero=False), title="photos a second on this machine"),
        y=alt.Y("test accuracy:Q", axis=alt.Axis(format=".0%"), scale=alt.Scale(zero=False)),
        size=alt.Size("size (MB):Q", scale=alt.Scale(range=[60, 400]), legend=alt.Legend(orient="bottom")),
        color=alt.Color("model:N", title=None, legend=alt.Legend(orient="bottom")),
        tooltip=["name:N", "model:N", alt.Tooltip("test accuracy:Q", format=".1%"), "photos a second:Q",
                 "size (MB):Q", "training seconds:Q"]).properties(height=280)


costed = runs.dropna(subset=["test_acc", "photos_per_s"])
if len(costed):
    st.subheader("Accuracy against speed")
    common.chart(st, accuracy_against_speed, pd.DataFrame({
        "name": costed["name"], "model": costed["backbone"].map(lambda b: setting_words("backbone", b)[1]),
        "test accuracy": costed["test_acc"], "photos a second": costed["photos_per_s"],
        "size (MB)": costed["size_mb"], "training seconds": costed["train_seconds"]}), key="runs_speed")
    st.caption(speed_chart_help())


def manage() -> None:
    """Rename or delete (the owner only)."""
    with st.expander("Rename or delete a run"):
        target = st.selectbox("Run", runs["id"].tolist(), format_func=labels.get, key="manage_run")
        new_name = st.text_input("New name", key="rename_to")
        if st.button("Rename", key="rename_button") and new_name.strip():
            store.rename(target, new_name.strip())
            st.rerun()
        confirm = st.checkbox("Yes, delete this run and its files", key="delete_confirm")
        if st.button("Delete", key="delete_button", disabled=not confirm):
            try:
                store.delete(target)
            except GraftError as err:
                common.show_error(err)
            else:
                st.session_state.pop("delete_confirm", None)
                st.rerun()


if common.is_owner():
    manage()

st.header("Compare")
chosen = st.multiselect("Runs to compare", runs["id"].tolist(), format_func=labels.get,
                        default=runs["id"].tolist()[:2] if len(runs) >= 2 else None, key="compare_runs")
if len(chosen) < 2:
    st.caption("Pick two or more runs." if len(runs) >= 2 else "Train a second run to compare it with this one.")
    st.stop()

curves = pd.concat([charts.curves_long(store.epochs(r), labels[r]) for r in chosen], ignore_index=True)
if len(curves):
    common.chart(st, charts.curves, curves, "run", key="compare_curves")

configs = {labels[r]: store.get(r)["config"] for r in chosen}
keys = sorted(set().union(*configs.values()))
differ = [k for k in keys if len({str(c.get(k)) for c in configs.values()}) > 1]
st.subheader("What differs")
if differ:
    st.dataframe(pd.DataFrame({name: [setting_words(k, c.get(k))[1] for k in differ] for name, c in configs.items()},
                              index=pd.Index([setting_words(k, None)[0] for k in differ], name="setting")),
                 width="stretch", key="compare_config")
else:
    st.write("The configs are identical.")

per_class = []
for r in chosen:
    try:
        metrics = store.run_dir(r).metrics()
    except GraftError:
        continue
    if metrics is None:
        continue
    per_class += [{"run": labels[r], "class": p["class"], "accuracy": p["accuracy"]} for p in metrics["per_class"]]
if per_class:
    st.subheader("Per-class accuracy")
    frame = pd.DataFrame(per_class)
    st.altair_chart(alt.Chart(frame).mark_bar().encode(
        x=alt.X("accuracy:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=".0%")), y=alt.Y("run:N", title=None),
        color="run:N", row=alt.Row("class:N", header=alt.Header(labelAngle=0, labelAlign="left")),
        tooltip=["run", "class", alt.Tooltip("accuracy:Q", format=".0%")]).properties(width=420),
        key="compare_per_class")
    table = frame.pivot(index="class", columns="run", values="accuracy")
    common.percent_table(st, table, list(table.columns), width="stretch", key="compare_per_class_table")

# ------------------------------------------------------------------ is the difference real?
st.subheader("Is the difference real?")
first, second = chosen[0], chosen[1]
try:
    a, b = store.run_dir(first).predictions(), store.run_dir(second).predictions()
except (GraftError, OSError):
    a = b = None
if a is None or b is None:
    st.caption("Evaluate both runs (open them on Results) to compare them image by image.")
else:
    both = a.merge(b, on="path", suffixes=("_a", "_b"))
    if both.empty:
        st.caption("These runs were tested on different images, so they cannot be compared image by image.")
    else:
        test = mcnemar(both["correct_a"].astype(str) == "True", both["correct_b"].astype(str) == "True")
        st.write(md(difference_sentence(labels[first], labels[second], test)
                 + f" ({len(both)} test images in common; McNemar's exact test.)"))
        moved = compare(store.run_dir(first), store.run_dir(second)).changed
        if len(moved):
            with st.expander(f"The {len(moved)} test photos whose verdict changed (first → second run)"):
                st.dataframe(moved, hide_index=True, width="stretch", key="compare_moved")
