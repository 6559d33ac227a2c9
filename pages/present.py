"""Present page: the current run's story for a room, one full-width step at a time (the data → how
good → where it fails → what to decide → try a photo), in type a room reads from the back. The
owner's step is saved (core.present.presenter); viewers may follow it."""
import hashlib

import pandas as pd
import streamlit as st

from core.base.errors import GraftError
from core.data.images import IMAGE_EXTENSIONS, ImageError, fit, open_image
from core.data.notes import display_names, load_class_notes, relabel_metrics
from core.evaluate.decision import at_threshold
from core.evaluate.metrics import needs_evaluation
from core.present import charts, presenter, words
from core.present.words import percent
from pages import common, current_run
from pages.common import escape_markdown as md

common.ensure_navigation()

# Large type, for this page only (every rule sits under its keyed container).
st.html("""<style>
.st-key-present p, .st-key-present li { font-size: 1.7rem; line-height: 1.35; }
.st-key-present h2 { font-size: 2.8rem; }
.st-key-present [data-testid="stMetricValue"], .st-key-present [data-testid="stMetricValue"] * { font-size: 4.2rem; }
.st-key-present [data-testid="stMetricLabel"] p { font-size: 1.5rem; }
.st-key-present [data-testid="stCaptionContainer"] p { font-size: 1.25rem; }
.st-key-present_nav button p { font-size: 1.4rem; }
.st-key-present_nav [data-testid="stHorizontalBlock"] { flex-wrap: nowrap; }
.st-key-present_nav [data-testid="stColumn"] { min-width: 0; }
@media (max-width: 640px) {
  .st-key-present p, .st-key-present li { font-size: 1.15rem; }
  .st-key-present h2 { font-size: 1.8rem; }
  .st-key-present [data-testid="stMetricValue"], .st-key-present [data-testid="stMetricValue"] * { font-size: 2.6rem; }
}
</style>""")

STEPS = words.PRESENT_STEPS
IMAGE_TYPES = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
st.session_state.setdefault("present_step", 0)


def _follow() -> None:
    """A follower's page takes the presenter's run and step (before the run picker is drawn)."""
    saved = presenter.read_step()
    if saved:
        st.session_state["current_run"] = saved["run"]
        st.session_state["present_run"] = saved["run"]
        st.session_state["present_step"] = min(saved["step"], len(STEPS) - 1)


following = not common.is_owner() and st.session_state.get("present_follow", False)
if following:
    _follow()

title_col, pick_col = st.columns([1, 2], vertical_alignment="bottom")
title_col.title("Present")
with pick_col:
    run_dir = current_run.pick_finished_run("Run", "present_run")
run_id = run_dir.id


def _move(by: int) -> None:
    """Back or Next: this page's step; the owner's is saved for the room, a viewer stops following."""
    st.session_state["present_step"] = max(0, min(len(STEPS) - 1, st.session_state["present_step"] + by))
    if common.is_owner():
        presenter.save_step(st.session_state.get("current_run", run_id), st.session_state["present_step"])
    else:
        st.session_state["present_follow"] = False


step = st.session_state["present_step"]
if common.is_owner() and (presenter.read_step() or {}).get("run") not in (None, run_id):
    presenter.save_step(run_id, step)  # the presenter picked another run: followers change run too
with st.container(key="present_nav"):
    back, where, ahead = st.columns([1, 4, 1], vertical_alignment="center")
    back.button("Back", key="present_back", on_click=_move, args=(-1,), disabled=step == 0, width="stretch",
                icon=":material/arrow_back:")
    where.markdown(f"**{words.present_step_of(step, len(STEPS), STEPS[step])}**")
    ahead.button("Next", key="present_next", on_click=_move, args=(1,), disabled=step == len(STEPS) - 1,
                 width="stretch", icon=":material/arrow_forward:")
if not common.is_owner():
    st.toggle("Follow the presenter", key="present_follow", help=words.present_follow_help())

# The arrow keys press Back and Next (not while typing in a box); only where this page is shown.
st.html("""<script>
const doc = document;
if (!doc.graftPresentKeys) {
  doc.graftPresentKeys = true;
  doc.addEventListener("keydown", (event) => {
    const target = event.target;
    if (!doc.querySelector(".st-key-present") || target.isContentEditable
        || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName)) return;
    const which = {ArrowRight: "present_next", ArrowLeft: "present_back"}[event.key];
    const button = which && doc.querySelector(".st-key-" + which + " button");
    if (button && !button.disabled) { event.preventDefault(); button.click(); }
  });
}
</script>""", unsafe_allow_javascript=True)  # a fixed script, nothing from a user in it


@st.fragment(run_every=2)
def _watch(shown: tuple) -> None:
    """A follower's page moves when the presenter's does."""
    saved = presenter.read_step()
    if saved and (saved["run"], saved["step"]) != shown:
        st.rerun(scope="app")


if following:
    st.caption(words.present_following(step, len(STEPS)))
    _watch((run_id, step))

# ------------------------------------------------------------------ the run, as people read it
try:
    metrics = run_dir.metrics()
    card = run_dir.card()
except GraftError as err:  # a damaged run: said, never a traceback
    common.show_error(err, "This run cannot be presented")
    st.stop()
if needs_evaluation(metrics):
    st.info(words.present_not_evaluated())
    st.stop()
root = card.data_root
names = display_names(load_class_notes(root), metrics["labels"])
shown_metrics = relabel_metrics(metrics, names)
manifest = current_run.table(run_dir.manifest_file)
predictions = current_run.table(run_dir.predictions_file).copy()
predictions["correct"] = predictions["correct"].astype(str) == "True"
sha = dict(zip(manifest["path"], manifest["sha1"]))


def photos(rows: pd.DataFrame) -> list[bytes]:
    """Thumbnails of the rows' photos (those that still open)."""
    found = [current_run.thumbnail(str(root / path), sha.get(path, path.replace("/", "_"))) for path in rows["path"]]
    return [data for data in found if data]


def the_data() -> None:
    counts = manifest["label"].value_counts().to_dict()
    st.markdown(words.present_data(len(manifest), len(metrics["labels"]), int((manifest["split"] == "train").sum())))
    left, right = st.columns([2, 3])
    common.chart(left, charts.class_counts, {names[c]: counts.get(c, 0) for c in metrics["labels"]},
                 [names[c] for c in metrics["labels"]], key="present_counts")
    left.caption(words.present_data_help())
    with right:
        for label in metrics["labels"]:
            shown = photos(manifest[(manifest["label"] == label) & (manifest["split"] == "train")].head(4))
            if shown:
                st.markdown(f"**{md(names[label])}**")
                st.image(shown, width=100)
        st.caption(words.present_photos_help())


def how_good() -> None:
    split_word = "test" if metrics["split"] == "test" else "validation"
    st.markdown("## " + md(words.present_good(metrics["accuracy"], metrics["baseline"]["accuracy"])))
    lo, hi = metrics["accuracy_ci"]
    cols = st.columns(3)
    cols[0].metric("Right", percent(metrics["accuracy"]), help=words.accuracy_help(metrics["n"], split_word, lo, hi))
    cols[1].metric("Always one answer", percent(metrics["baseline"]["accuracy"]),
                   help=words.baseline_help(md(names.get(metrics["baseline"]["class"], metrics["baseline"]["class"]))))
    cols[2].metric(f"{split_word.capitalize()} photos", metrics["n"],
                   help="How many held-out photos the figures rest on: fewer photos, wider intervals.")
    st.markdown(md(words.accuracy_sentence(shown_metrics, split_word)))
    st.caption(words.present_good_help())


def where_it_fails() -> None:
    pairs = metrics["most_confused"][:3]
    if not pairs:
        st.markdown(words.present_fails_none())
        return
    for pair in pairs:
        st.markdown("**" + md(words.present_fails(names[pair["true"]], names[pair["predicted"]], pair["count"])) + "**")
        wrong = predictions[(predictions["label"] == pair["true"]) & (predictions["predicted"] == pair["predicted"])]
        shown = photos(wrong.sort_values("loss", ascending=False).head(6))
        if shown:
            st.image(shown, width=150)
    st.caption(words.present_fails_help())


def what_to_decide() -> None:
    decision = current_run.decision_of(run_dir)
    if decision is None:
        st.markdown(words.present_decide_none())
        return
    st.markdown(md(words.decision_rule(decision, names)))
    row = at_threshold(predictions, decision.inspect, decision.threshold)
    caught = words.count_of(row["caught"], row["defects"], row["caught_share"])
    sent = words.count_of(row["good_sent"], row["good"], row["good_sent_share"])
    cols = st.columns(2)
    cols[0].metric("Defects caught", percent(row["caught_share"]), help=words.present_decide_help())
    cols[1].metric("Good parts inspected", percent(row["good_sent_share"]), help=words.present_decide_help())
    st.markdown(md(words.present_decide(caught, sent)))


def try_a_photo() -> None:
    upload = st.file_uploader("Drop a photo", type=IMAGE_TYPES, key="present_upload", help=words.present_try_help())
    if upload is None:
        st.caption(words.present_try_help())
        return
    data = upload.getvalue()
    try:
        loaded = open_image(data)
    except ImageError as err:
        st.error(md(f"{upload.name}: {err.reason}"))
        return
    model = current_run.predictor(run_dir)
    result = current_run.predict_image(str(run_dir), current_run.model_stamp(run_dir),
                                       hashlib.sha1(data).hexdigest(), 3, loaded.image)
    left, right = st.columns([2, 3])
    left.image(fit(loaded.image), width="stretch")
    right.markdown("## " + md(words.verdict(result, names, float(model.threshold or 0.5))))
    common.chart(right, charts.top_k_bars, [(names.get(c, c), p) for c, p in result["top"]], key="present_topk")
    right.caption(words.present_topk_help())
    decision = current_run.decision_of(run_dir)
    if decision and "probabilities" in result:
        right.markdown(md(words.decision_sentence(decision, result["probabilities"], names)))


with st.container(key="present"):
    st.header(STEPS[step])
    (the_data, how_good, where_it_fails, what_to_decide, try_a_photo)[step]()
