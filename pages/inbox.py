"""Inbox page: the photos to look at (likely mislabels, test mistakes, kept uploads) as cards; the
owner keeps, relabels, excludes or adds each (decisions kept beside the dataset, no photo moved),
retrains with the decisions applied, and sees what changed between two runs."""
import hashlib

import altair as alt
import pandas as pd
import streamlit as st

from core.base.errors import GraftError
from core.data import notes
from core.evaluate.compare import compare
from core.present import words
from core.runs.folder import RunDir
from core.train import jobs
from core.train.config import TrainConfig
from core.trust import audit, inbox
from pages import common, current_run
from pages.common import escape_markdown as md
from pages.current_run import thumbnail

common.ensure_navigation()

PER_PAGE = 12
OPTIONS = {"": "no decision yet", "keep": "keep as it is", "relabel": "relabel as…", "exclude": "exclude",
           "add": "add to class…"}

st.title("Inbox")
current = common.current_dataset()
if not current:
    st.stop()
folder, signature = current
index = common.scan(folder, signature)
owner = common.is_owner()
st.caption(words.inbox_help())
if index.items.empty:
    st.warning(words.no_images_sentence(md(folder), len(index.skipped)))
    st.stop()
names = notes.display_names(notes.load_class_notes(index.root), index.classes)
store = common.store()


def this_folders_runs() -> pd.DataFrame:
    """The finished runs trained on this folder, newest first."""
    runs = store.finished()
    if runs.empty:
        return pd.DataFrame(columns=["id", "name", "created"])
    return runs[[trained_here(store.run_dir(r)) for r in runs["id"]]].sort_values("created", ascending=False)


def trained_here(run: RunDir) -> bool:
    try:
        return run.card().data_root.resolve() == index.root.resolve()
    except (GraftError, OSError):
        return False


runs = this_folders_runs()
current_id = st.session_state.get("current_run")
run_id = current_id if current_id in set(runs["id"]) else (runs["id"].iloc[0] if len(runs) else None)
run = store.run_dir(run_id) if run_id else None

# ------------------------------------------------------------------ the label check (one source)
checked = audit.cached(index)
if checked is None and owner and st.button("Check the labels (adds the likely mislabels)", key="inbox_audit"):
    checked = current_run.check_labels(folder)
elif checked is None:
    st.caption("The label check has not run on the dataset as it is now: the likely mislabels listed are the last "
               "check's." if owner else "The presenter runs the label check; the likely mislabels listed are from "
               "the last one.")

table = inbox.build(folder, run, checked, index)
waiting, decided = int((table["decision"] == "").sum()), int((table["decision"] != "").sum())
st.markdown(words.inbox_sentence(waiting, decided)
            + (f" Test mistakes from {md(store.get(run_id)['name'])}." if run_id else " No run of this folder yet: "
               "no test mistakes."))

# ------------------------------------------------------------------ the cards
left, middle, right = st.columns([3, 2, 1])
sources = left.multiselect("Sources", inbox.SOURCES, default=list(inbox.SOURCES), key="inbox_sources")
show_decided = middle.toggle("Show decided photos too", value=False, key="inbox_decided")
shown = table[table["source"].map(lambda s: s == inbox.DECIDED or any(part in sources for part in s.split(" + ")))
               .astype(bool)]
if not show_decided:
    shown = shown[shown["decision"] == ""]
pages = max(1, -(-len(shown) // PER_PAGE))
page = right.number_input(f"Page (of {pages})", 1, pages, 1, key="inbox_page")
chunk = shown.iloc[(page - 1) * PER_PAGE: page * PER_PAGE]


def card_key(file: str) -> str:
    return "inbox_" + hashlib.sha1(file.encode()).hexdigest()[:12]


choices: dict[str, tuple[str, str]] = {}
with st.form("inbox_cards", border=False):
    for start in range(0, len(chunk), 4):
        for col, row in zip(st.columns(4), chunk.iloc[start:start + 4].itertuples()):
            thumb = thumbnail(str(index.root / row.file), row.sha1 or row.file)
            if thumb:
                col.image(thumb, width="stretch")
            label, suggested = md(names.get(row.label, row.label)), md(names.get(row.suggested, row.suggested))
            col.markdown(words.inbox_card(label, suggested, row.source), help=md(row.file))
            if row.decision:
                col.caption("decided: " + OPTIONS[row.decision].rstrip("…")
                            + (f" {md(names.get(row.new_label, row.new_label))}" if row.new_label else ""))
            if owner:
                upload = not row.label
                options = ["", "keep", "add", "exclude"] if upload else ["", "keep", "relabel", "exclude"]
                picked = col.radio("Decision", options, index=options.index(row.decision) if row.decision in options
                                   else 0, format_func=OPTIONS.get, key=card_key(row.file), label_visibility="collapsed")
                classes = index.classes
                default = row.new_label or (row.suggested if row.suggested in classes else classes[0])
                target = col.selectbox("Class", classes, index=classes.index(default) if default in classes else 0,
                                       format_func=names.get, key=card_key(row.file) + "_class",
                                       label_visibility="collapsed")
                choices[row.file] = (picked, target)
    saved = st.form_submit_button("Save these decisions", disabled=not owner or not len(chunk), key="inbox_save")
if saved and owner:
    rows = [{"file": f, "decision": (picked or inbox.UNDO), "label": target if picked in ("relabel", "add") else ""}
            for f, (picked, target) in choices.items()
            if picked or table.set_index("file").loc[f, "decision"]]
    try:
        kept, problems = inbox.decide(folder, rows, index)
        for problem in problems:
            st.warning(md(problem))
        st.toast(f"{kept} decision{'s' if kept != 1 else ''} kept in the dataset's .graft folder; no photo was moved.")
        st.rerun()
    except (GraftError, OSError) as err:
        common.show_error(err, "The decisions could not be saved")
if not len(chunk):
    st.caption("Nothing here with these filters.")
elif not owner:
    st.caption("The presenter decides; you see what is waiting.")

# ------------------------------------------------------------------ as a table, and decisions from a CSV
with st.expander("The inbox as a table (CSV), and decisions from a CSV"):
    st.download_button("The whole inbox (CSV)", inbox.inbox_csv(table), file_name=f"{index.root.name}-inbox.csv",
                       mime="text/csv", key="inbox_csv")
    if owner:
        sent = st.file_uploader("Decisions: a CSV with the columns file,decision,label", type=["csv"],
                                key="inbox_decide_csv")
        if sent is not None and st.button("Apply these decisions", key="inbox_apply_csv"):
            try:
                kept, problems = inbox.decide_csv(folder, sent.getvalue())
                st.success(f"{kept} decision{'s' if kept != 1 else ''} kept; no photo was moved.")
                for problem in problems:
                    st.warning(md(problem))
            except (GraftError, OSError) as err:
                common.show_error(err, "The decisions could not be applied")

kept_decisions = notes.load_decisions(index.root)
if kept_decisions:
    with st.expander(f"Decisions kept for this dataset ({len(kept_decisions)})"):
        st.dataframe(pd.DataFrame([{"photo": p, "decision": d["decision"], "new label": names.get(d["label"], d["label"]),
                                    "old label": names.get(d["old_label"], d["old_label"]), "when": d["when"]}
                                   for p, d in kept_decisions.items()]), hide_index=True, width="stretch",
                     key="inbox_kept")

# ------------------------------------------------------------------ retrain
st.header("Retrain with the decisions")
if run_id is None:
    st.caption("Train a first run on this dataset (Train page); then retrain here after deciding.")
elif owner:
    st.caption(words.retrain_help())
    busy = jobs.active(common.runs_root())
    if st.button("Retrain from the inbox", type="primary", key="inbox_retrain",
                 disabled=busy is not None or not notes.load_corrections(index.root),
                 help="Needs at least one relabel, exclusion or addition; one training at a time."):
        record = store.get(run_id)
        try:
            config = TrainConfig.from_dict({**record["config"], "name": f"{record['name']} · after the inbox"})
            st.session_state["watch_run"] = jobs.start(config, common.runs_root())
            st.session_state["inbox_retrained_from"] = run_id
            st.success("Training started with the decisions applied.")
            st.page_link("pages/train.py", label="Follow it on Train", icon=":material/model_training:")
        except GraftError as err:
            common.show_error(err)
else:
    st.caption("The presenter retrains after deciding.")

# ------------------------------------------------------------------ what changed
st.header("What changed")
if len(runs) < 2:
    st.caption("Two runs of this dataset are compared here photo by photo (retrain after deciding to get a second).")
    st.stop()
labels = {r.id: r.name for r in runs.itertuples()}
ids = runs["id"].tolist()
c1, c2 = st.columns(2)
before = c1.selectbox("Before", ids, index=1, format_func=labels.get, key="changed_a")
after = c2.selectbox("After", ids, index=0, format_func=labels.get, key="changed_b")
try:
    result = compare(store.run_dir(before), store.run_dir(after))
except (GraftError, OSError) as err:
    common.show_error(err, "These runs cannot be compared")
    st.stop()
st.markdown(md(words.what_changed_sentence(labels[before], labels[after], result)))
for title, part in (("Wrong → right", result.fixed), ("Right → wrong", result.broken)):
    if not len(part):
        continue
    st.subheader(f"{title} ({len(part)})")
    cards = part.head(24)
    images = [thumbnail(str(index.root / p), p) for p in cards["path"]]
    st.image([i for i in images if i], width=110,
             caption=[f"{names.get(r.label_b, r.label_b)}: was {names.get(r.predicted_a, r.predicted_a)}, now "
                      f"{names.get(r.predicted_b, r.predicted_b)}" for r, i in zip(cards.itertuples(), images) if i])
if len(result.classes):
    st.subheader("The classes that moved")
    moved = result.classes.assign(**{"class": result.classes["class"].map(lambda c: names.get(c, c))})
    long = moved.melt(id_vars=["class", "photos"], value_vars=["accuracy_a", "accuracy_b"], var_name="run",
                      value_name="accuracy").replace({"accuracy_a": "before", "accuracy_b": "after"})
    st.altair_chart(alt.Chart(long).mark_bar().encode(
        x=alt.X("accuracy:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format=".0%")),
        y=alt.Y("run:N", title=None, sort=["before", "after"]), color=alt.Color("run:N", sort=["before", "after"]),
        row=alt.Row("class:N", header=alt.Header(labelAngle=0, labelAlign="left"), sort=moved["class"].tolist()),
        tooltip=["class", "run", alt.Tooltip("accuracy:Q", format=".0%"), "photos"]).properties(width=420),
        key="changed_classes")
    common.percent_table(st, moved.rename(columns={"accuracy_a": "before", "accuracy_b": "after"}),
                         ["before", "after", "change"], hide_index=True, key="changed_table")
