"""A budgeted run's leaderboard (leaderboard.json, `core.train.budget`): every model tried with its
validation accuracy and interval, its time a photo, size and seconds, the accuracy-against-speed picture
with the Pareto front, and the choice in one sentence. `draw_leaderboard(run_dir)` draws it where it is
called (the Train page under a finished run, the Runs page for an opened run, a Results tab)."""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core.base.errors import GraftError
from core.present.words import budget_choice_sentence, budget_help, budget_used_sentence, percent
from core.runs.folder import RunDir
from pages import common
from pages.common import escape_markdown as md


def _frame(board: dict) -> pd.DataFrame:
    rows = [e for e in board.get("candidates", []) if e.get("status") == "tried"]
    frame = pd.DataFrame(rows)
    frame["kept"] = frame["name"] == board.get("kept")
    frame["pareto"] = frame["pareto"].fillna(False).astype(bool) if "pareto" in frame else False
    frame["low"], frame["high"] = zip(*frame["val_ci"])
    frame["role"] = ["kept" if k else "on the front" if p else "tried" for k, p in zip(frame["kept"], frame["pareto"])]
    return frame.sort_values("kept", kind="stable")  # the kept model drawn last, over a twin at the same place


def accuracy_speed(frame: pd.DataFrame) -> alt.LayerChart:
    """Validation accuracy (with its 95 % interval) against milliseconds a photo, the size as the point's
    area, the Pareto front as a line."""
    base = alt.Chart(frame).encode(x=alt.X("ms_per_photo:Q", title="milliseconds a photo on this machine",
                                           scale=alt.Scale(zero=False)))
    bars = base.mark_rule(opacity=0.4).encode(y=alt.Y("low:Q", title="validation accuracy",
                                                      axis=alt.Axis(format=".0%")), y2="high:Q")
    front = base.transform_filter("datum.pareto").mark_line(strokeDash=[4, 3], color="gray").encode(
        y="val_acc:Q", order="ms_per_photo:Q")
    points = base.mark_circle(opacity=0.85).encode(
        y="val_acc:Q", size=alt.Size("size_mb:Q", title="model size (MB)", scale=alt.Scale(range=[60, 400]),
                                legend=alt.Legend(orient="bottom")),
        color=alt.Color("role:N", title=None, scale=alt.Scale(domain=["kept", "on the front", "tried"],
                                                              range=["#d62728", "#1f77b4", "#aaaaaa"]),
                        legend=alt.Legend(orient="bottom")),
        tooltip=["name:N", alt.Tooltip("val_acc:Q", format=".1%", title="validation accuracy"),
                 alt.Tooltip("ms_per_photo:Q", format=".1f", title="ms a photo"),
                 alt.Tooltip("size_mb:Q", format=".1f", title="MB"), alt.Tooltip("seconds:Q", title="seconds spent")])
    return alt.layer(bars, front, points).properties(height=300)


def draw_leaderboard(run_dir) -> None:
    """The run's leaderboard, when it has one (a run trained with a budget); nothing otherwise."""
    try:
        board = RunDir(run_dir).leaderboard()
    except GraftError:
        return
    tried = [e for e in (board or {}).get("candidates", []) if e.get("status") == "tried"]
    if not tried:
        return
    st.subheader("Models tried within the budget")
    sentence = budget_choice_sentence(board)
    if sentence:
        st.markdown(md(sentence))
    frame = _frame(board)
    shown = frame[["name", "val_acc", "low", "high", "ms_per_photo", "size_mb", "seconds", "pareto", "role"]]
    common.chart(st, accuracy_speed, shown, key=f"leaderboard_chart_{RunDir(run_dir).id}")
    st.caption(budget_help())
    table = pd.DataFrame({
        "model": frame["name"], "validation accuracy": frame["val_acc"],
        "95 % interval": [f"{percent(lo)}–{percent(hi)}" for lo, hi in zip(frame["low"], frame["high"])],
        "balanced": frame["val_balanced"], "ms a photo": frame["ms_per_photo"].round(1),
        "size (MB)": frame["size_mb"].round(1), "seconds spent": frame["seconds"],
        "on the front": frame["pareto"], "kept": frame["kept"]})
    common.percent_table(st, table, {"validation accuracy": "Share of the validation photos labelled right.",
                                     "balanced": "The average of the per-class accuracies on validation."},
                         hide_index=True, width="stretch", key=f"leaderboard_table_{RunDir(run_dir).id}")
    used = budget_used_sentence(board)
    if used:
        st.caption(md(used))
    skipped = [e for e in board.get("candidates", []) if e.get("status") == "skipped"]
    if skipped:
        with st.expander(f"Not tried ({len(skipped)}): they did not fit in the time left"):
            st.dataframe(pd.DataFrame({"model": [e["name"] for e in skipped], "why": [e["reason"] for e in skipped]}),
                         hide_index=True, width="stretch", key=f"leaderboard_skipped_{RunDir(run_dir).id}")
