"""Dataset page: class counts by split, the min-per-class filter, a sample browser, data health
and an augmentation preview."""
import math
import time

import altair as alt
import pandas as pd
import streamlit as st

from core.base import settings
from core.base.errors import GraftError
from core.data import decoding, health, notes, thumbs
from core.data.images import ImageError, load_rgb
from core.data.notes import MAX_DESCRIPTION, MAX_NAME, display_names, load_class_notes, save_class_notes
from core.models import backbones
from core.models.choices import AUG_LEVELS
from core.models.preprocess import preview
from core.present import charts, words
from core.train.config import TrainConfig
from core.trust import audit, inbox
from pages import common, current_run
from pages.common import escape_markdown as md
from pages.map_view import draw_map

common.ensure_navigation()

PER_PAGE = 24
MAX_ROWS = 500  # rows of a health table sent to the browser

st.title("Dataset")
current = common.current_dataset()
if not current:
    st.stop()
folder, signature = current
index = common.scan(folder, signature)
st.caption(md(index.root.name) + " · " + words.split_sentence(index.layout))
if index.items.empty:
    st.warning(words.no_images_sentence(md(folder), len(index.skipped)))
    if len(index.skipped):
        st.dataframe(index.skipped[["path", "reason", "detail"]], hide_index=True)
    st.stop()

# ------------------------------------------------------------------ counts
min_per_class = st.number_input("Minimum images per class (smaller classes are dropped; Train uses this too)",
                                min_value=1, max_value=100_000, step=1, key="min_per_class")
if common.is_owner() and min_per_class != settings.load()["min_per_class"]:  # a viewer's choice stays in the session
    settings.save(min_per_class=int(min_per_class))
split = common.split(folder, signature, int(min_per_class))
if split.dropped:
    st.warning(words.dropped_sentence({md(c): n for c, n in split.dropped.items()}, min_per_class))
if len(split.classes) < 2:
    st.error("Fewer than two classes remain: lower the minimum or add images.")
    st.stop()

counts = split.counts()
totals = counts.sum(axis=1).sort_values(ascending=False)
ratio = totals.max() / max(totals.min(), 1)
cols = st.columns(4)
cols[0].metric("Classes", len(split.classes), help="One per sub-folder with at least the minimum number of photos.")
cols[1].metric("Images used", f"{int(totals.sum()):,}", help="The readable photos of the classes kept.")
cols[2].metric("Imbalance (largest / smallest)", f"{ratio:.1f}×",
               help="The largest class's photo count over the smallest's: above 3×, accuracy alone flatters the model.")
cols[3].metric("Skipped files", f"{len(index.skipped):,}",
               help="Files that are not readable images; Data health lists each with the reason.")
small = totals[totals < 10]
if len(small):
    st.warning(words.small_classes_sentence([md(c) for c in small.index]))
if ratio > 10:
    st.warning(words.imbalance_sentence(ratio))

long = counts.reset_index().melt(id_vars="label", var_name="split", value_name="images")
chart = alt.Chart(long).mark_bar().encode(
    x=alt.X("images:Q", title="images", stack="zero"),
    y=alt.Y("label:N", sort=totals.index.tolist(), title=None),
    color=alt.Color("split:N", sort=["train", "val", "test"], scale=charts.SPLIT_COLOURS),
    order=alt.Order("split_order:Q"),
    tooltip=["label", "split", "images"],
).transform_calculate(split_order="indexof(['train','val','test'], datum.split)")
left, right = st.columns([3, 2])
left.altair_chart(chart, width="stretch")
count_table = counts.assign(total=counts.sum(axis=1)).loc[totals.index]
right.dataframe(count_table, width="stretch",  # 174,885 rather than 174885
                column_config={c: st.column_config.NumberColumn(format="localized") for c in count_table.columns})

# ------------------------------------------------------------------ class names
st.header("What the classes mean")
class_notes = load_class_notes(index.root)
glossary = pd.DataFrame({"folder": split.classes,
                         "display name": [class_notes.get(c, {}).get("name", "") for c in split.classes],
                         "what it means": [class_notes.get(c, {}).get("description", "") for c in split.classes]})
if common.is_owner():
    st.caption("Names the room reads on every page and in the report instead of the folder names (kept in the "
               "dataset's hidden .graft folder; your photos are not touched).")
    edited = st.data_editor(glossary, hide_index=True, disabled=["folder"], key="class_notes", width="stretch",
                            column_config={"display name": st.column_config.TextColumn(max_chars=MAX_NAME),
                                           "what it means": st.column_config.TextColumn(max_chars=MAX_DESCRIPTION)})
    if st.button("Save the names", key="save_class_notes"):
        try:
            save_class_notes(index.root, {row["folder"]: {"name": row["display name"], "description": row["what it means"]}
                                          for row in edited.to_dict("records")})
            st.toast("Saved: every page and the report now use these names.")
        except (GraftError, OSError) as err:
            common.show_error(err, "The names could not be saved")
elif class_notes:
    st.dataframe(glossary, hide_index=True, width="stretch", key="class_notes_view")
else:
    st.caption("The folder names are the class names.")

# ------------------------------------------------------------------ samples
st.header("Samples")
pick_col, page_col = st.columns([3, 1])
choice = pick_col.selectbox("Class", ["All classes", *index.classes], key="browse_class")
items = index.items if choice == "All classes" else index.items[index.items["label"] == choice]
pages = max(1, math.ceil(len(items) / PER_PAGE))
page = page_col.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key="browse_page")
chunk = items.iloc[(page - 1) * PER_PAGE: page * PER_PAGE]
shown, captions = [], []
for row in chunk.itertuples():
    thumb = thumbs.thumbnail(index.root / row.path, row.sha1)
    if thumb:
        shown.append(thumb)
        captions.append(f"{row.path.rsplit('/', 1)[-1]} · {row.width}×{row.height} · {row.bytes / 1024:.0f} KB")
if shown:
    st.image(shown, caption=captions, width=150)

# ------------------------------------------------------------------ health
@st.fragment(run_every=1.0)
def decoding_progress(folder: str) -> None:
    """The background decoding's progress, read each second; the whole page again when it has ended."""
    job = decoding.status(folder)
    if job is None or not job.running:
        st.rerun()
    st.progress(job.done / max(job.total, 1), text=words.decoding_progress(job.done, job.total, time.time() - job.started))


st.header("Data health")
report = common.check_health(folder, signature, int(min_per_class))
summary = pd.DataFrame(list(report.summary().items()), columns=["check", "count"])
if len(report.leakage):
    st.error(words.leakage_sentence(report.leakage["group"].nunique()))
problems = summary[(summary["count"] > 0) & ~summary["check"].isin(["converted on load", health.UNDECODED])]
left, right = st.columns([2, 3])
if problems.empty:
    left.success("No problems found: no broken or skipped files, no duplicates, no tiny images." if not report.undecoded
                 else "No problems found so far: no skipped files, exact duplicates or tiny images among what was read.")
else:
    left.dataframe(problems, hide_index=True, width="stretch")
if len(report.converted):
    left.info(words.converted_sentence(len(report.converted)))
if report.undecoded:
    left.info(words.undecoded_sentence(report.undecoded))
    job = decoding.status(folder)
    if job is not None and job.state == "failed":
        left.warning(words.decoding_failed(md(job.error)))
    if job is not None and job.running:
        with left:
            decoding_progress(folder)
    elif common.is_owner() and left.button("Decode every photo now", key="decode_all",
                                           help="Reads each photo once more, fully, in the background: about a "
                                                "millisecond a photo on each core. You can leave this page meanwhile."):
        decoding.start(folder)
        st.rerun()
widths, heights = index.items["width"], index.items["height"]
if widths.nunique() == 1 and heights.nunique() == 1:
    right.markdown(words.same_size_sentence(widths.iloc[0], heights.iloc[0]))
else:
    sizes = common.size_histogram(folder, signature)
    right.altair_chart(alt.Chart(sizes).mark_bar().encode(
        x=alt.X("lo:Q", bin="binned", title="shorter side (pixels)"), x2="hi:Q",
        y=alt.Y("images:Q", title="images"), tooltip=["lo", "hi", "images"]).properties(
        title="Image sizes"), width="stretch")
    right.caption("The model sees every photo at a few hundred pixels; very small ones lose detail.")
for title, table in (("Leakage across splits", report.leakage), ("Skipped files", report.skipped),
                     ("Exact duplicates", report.exact_duplicates), ("Near-duplicates (perceptual hash)", report.near_duplicates),
                     ("Tiny images", report.tiny), ("Converted on load", report.converted)):
    if not len(table):
        continue  # nothing to show: no empty sections
    with st.expander(f"{title} ({len(table):,})", expanded=title == "Leakage across splits" and len(table) > 0):
        st.dataframe(table.head(MAX_ROWS), hide_index=True, width="stretch")
        if len(table) > MAX_ROWS:
            st.caption(words.first_rows(MAX_ROWS, len(table)))

# ------------------------------------------------------------------ label check
st.header("Photos that may be labelled wrong")
st.caption("Each photo is scored by a quick model that never saw it (5-fold, on the pretrained network's view of "
           "the photos); where the data contradicts the folder a photo sits in, cleanlab's confident learning flags "
           "it. A flag is a question for a person who knows the photos, not a verdict.")
names = display_names(class_notes, index.classes)
result = audit.cached(index)
if result is None and common.is_owner():
    if st.button("Check the labels", key="run_audit", help="Seconds once a training has read the photos; the first "
                 "time, about a minute per 3,000 photos."):
        result = current_run.check_labels(folder)
elif result is None:
    st.info("The presenter has not run the label check on this dataset yet.")
if result is not None:
    flagged = result.flagged
    st.markdown(words.flagged_sentence(len(flagged), result.photos))
    if len(flagged) > 0.1 * result.photos:
        st.info("When this many are flagged, the classes themselves may overlap (the pretrained network sees them "
                "as alike) rather than the labels being wrong: check a few with someone who knows the photos before "
                "changing many.")
    shown = st.slider("How many to show", 4, max(4, min(48, len(flagged))), min(12, max(4, len(flagged))), 4,
                      key="audit_shown") if len(flagged) > 4 else len(flagged)
    top = flagged.head(shown)
    choices = {}
    with st.form("audit_choices", border=False):
        for start in range(0, len(top), 4):
            for col, row in zip(st.columns(4), top.iloc[start:start + 4].itertuples()):
                thumb = thumbs.thumbnail(index.root / row.file, row.sha1)
                if thumb:
                    col.image(thumb, width="stretch")
                given, suggested = md(names.get(row.given, row.given)), md(names.get(row.suggested, row.suggested))
                col.markdown(words.flagged_photo(given, suggested),
                             help=words.flagged_photo_help(md(row.file), row.p_given, suggested, row.p_suggested))
                if common.is_owner():
                    options = {"keep": "keep", "relabel": f"relabel as {suggested}", "exclude": "exclude"}
                    choices[row.file] = (col.radio("decision", list(options), format_func=options.get,
                                                   key=f"audit_{row.sha1}", label_visibility="collapsed"), row)
        saved = st.form_submit_button("Save these decisions", disabled=not common.is_owner() or not len(top))
    if saved:
        changes = {file: None if choice == "keep" else
                   {"action": choice, "label": row.suggested if choice == "relabel" else "", "sha1": row.sha1}
                   for file, (choice, row) in choices.items()}
        try:
            notes.save_corrections(index.root, changes)
            st.toast("Saved in the dataset's .graft folder: the next split and training use them; your photos "
                     "are not moved.")
            st.rerun()
        except (GraftError, OSError) as err:
            common.show_error(err, "The decisions could not be saved")
    st.download_button("Every photo, most likely mislabelled first (CSV)", audit.audit_csv(result),
                       file_name=f"{index.root.name}-label-check.csv", mime="text/csv", key="audit_csv")
corrections = notes.load_corrections(index.root)
if corrections:
    with st.expander(f"Decisions kept for this dataset ({len(corrections)})"):
        kept = pd.DataFrame([{"photo": p, "decision": "exclude" if c["action"] == "exclude" else
                              f"{'add to' if c['action'] == 'add' else 'relabel as'} {names.get(c['label'], c['label'])}"}
                             for p, c in corrections.items()])
        st.dataframe(kept, hide_index=True, width="stretch")
        if common.is_owner() and st.button("Undo every decision", key="undo_corrections"):
            notes.save_corrections(index.root, {p: None for p in corrections})
            st.rerun()
st.page_link("pages/inbox.py", label="Every photo to look at, and what changed after a retraining: Inbox",
             icon=":material/inbox:")

# ------------------------------------------------------------------ map
st.header("Map")
map_run = inbox.latest_run(common.runs_root(), index.root)
chosen_run = st.session_state.get("current_run")
if chosen_run:
    try:
        candidate = common.store().run_dir(chosen_run)
        if candidate.has_model() and candidate.card().data_root.resolve() == index.root.resolve():
            map_run = candidate
    except (GraftError, OSError):
        pass
if map_run is None:
    st.caption("Train a run on this dataset to see every photo on one map (test mistakes and likely mislabels marked).")
else:
    st.caption(md(f"From run {common.store().get(map_run.id)['name']}."))
    draw_map(map_run)

# ------------------------------------------------------------------ augmentation
st.header("Augmentation preview")
next_level = TrainConfig(data=folder, freeze=st.session_state.get("tr_freeze", "head"),
                         aug=st.session_state.get("tr_aug", "auto")).augmentation
st.caption(words.augmentation_caption(next_level))
level = st.selectbox("Preset", AUG_LEVELS, index=AUG_LEVELS.index(next_level), key="aug_preview_level")
sample_row = chunk.iloc[0] if len(chunk) else items.iloc[0]
try:
    image = load_rgb(index.root / sample_row["path"])
    views = preview(image, backbones.preprocessing_for(backbones.DEFAULT_BACKBONE), level)
    st.image(views, width=120, caption=[f"view {i + 1}" for i in range(len(views))])
    st.caption(f"from {md(str(sample_row['path']))}")
except ImageError as err:
    st.warning(md(str(err)))
