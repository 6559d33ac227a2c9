"""Train page: a form that launches training outside the script run, then live curves,
progress and Stop, polled from the run store once a second."""
import time

import streamlit as st

from core.base.errors import GraftError
from core.models import backbones
from core.models.choices import AUG_LEVELS, backbone_title
from core.present import charts
from core.present.words import kept_sentence
from core.runs.store import LiveMetrics
from core.train import estimate, jobs
from core.train.config import CLASS_WEIGHTS, TrainConfig, default_features
from core.train.steps import describe_progress
from pages import common
from pages.common import escape_markdown as md

common.ensure_navigation()

st.title("Train")
current = common.current_dataset()
if not current:
    st.stop()
folder, signature = current
min_per_class = int(st.session_state.get("min_per_class", 5))
split = common.split(folder, signature, min_per_class)
if len(split.classes) < 2:
    st.error("Training needs at least two classes with enough images: check the Dataset page.")
    st.stop()
counts = split.counts()
n_train, n_val = int(counts.get("train", 0).sum()), int(counts.get("val", 0).sum())
runs_root = common.runs_root()


@st.cache_data(show_spinner="Timing the backbone on this machine…")
def epoch_estimate(backbone: str, freeze: str, n_train: int, n_val: int) -> tuple[float, float]:
    return estimate.epoch_seconds(backbone, freeze, n_train, n_val)


def time_words(backbone: str, freeze: str, features: str) -> str:
    """The rough time of a run with these choices, in words: with a frozen backbone, only the photos
    whose features are not cached yet are read (a rerun on the same photos trains in seconds)."""
    first, later = epoch_estimate(backbone, freeze, n_train, n_val)
    later_words = "under a second" if later < 1 else f"~{later:.0f} s"
    if freeze != "head":
        return f"Rough time on this machine: first epoch ~{first:.0f} s, later epochs {later_words}."
    view = default_features(backbone, freeze) if features == "auto" else features
    shas = split.manifest.loc[split.manifest["split"].isin(["train", "val"]), "sha1"].tolist()
    missing = estimate.photos_to_read(backbone, view, shas)
    if missing <= 0:
        return ("Rough time on this machine: every photo's features are already computed, so each epoch takes "
                f"{later_words}.")
    first *= estimate.reading_factor(view) * missing / max(len(shas), 1)
    still = f" for the {missing:,} of {len(shas):,} photos not read before" if missing < len(shas) else ""
    return (f"Rough time on this machine: first epoch ~{first:.0f} s (reading the photos{still}; their features are "
            f"then cached), later epochs {later_words}.")


def describe(name: str) -> str:
    spec = backbones.get_spec(name)
    weights = "" if backbones.weights_available(name) else " · weights missing"
    return (f"{backbone_title(name)} ({spec.params_m:.1f} M parameters, "
            f"{spec.preprocessing.input_size} px){weights}")


running = jobs.active(runs_root)
owner = common.is_owner()


def launch_form() -> None:
    """The training form (the owner only)."""
    with st.form("train_form"):
        st.caption(f"{len(split.classes)} classes · {n_train} training and {n_val} validation images "
                   f"(min {min_per_class} per class)")
        c1, c2, c3 = st.columns([3, 2, 1])
        backbone = c1.selectbox("Model", [s.name for s in backbones.list_backbones()], format_func=describe,
                                key="tr_backbone", help="An ImageNet-pretrained network: larger ones are a little more "
                                "accurate and slower. The first one is the fast default.")
        freeze = c2.selectbox("What trains", backbones.FREEZE_MODES, key="tr_freeze",
                              format_func={"head": "only the last layer (fastest)",
                                           "partial": "the last stages too (slower, often better)",
                                           "full": "the whole network (slowest)"}.get,
                              help="Only the last layer: the pretrained network reads each photo once, then training takes "
                                   "seconds. Training more of it adapts it to your photos but takes minutes to hours on a CPU.")
        epochs = c3.number_input("Epochs", 1, 500, 10, key="tr_epochs",
                                 help="Passes over the training photos. Training stops earlier when the validation "
                                      "figures stop improving.")
        c1, c2 = st.columns([3, 2])
        name = c1.text_input("Name (optional)", "", key="tr_name",
                             placeholder="a name for the run; by default the model, what trains, epochs and the date")
        minutes = c2.selectbox("How long", (0, 5, 15, 30), key="tr_minutes",  # 0, not None: no clear (×) button
                               format_func=lambda m: "the epochs set here" if not m else
                               f"the best model within {m} minutes",
                               help="Within a time: the last layer first (a usable model within a minute), then "
                                    "the last layer on a richer view of the photos when reading them in 8 orientations fits, "
                                    "then the last layers of the network are fine-tuned on smaller photos, then at "
                                    "full size, "
                                    "as long as time allows; the best on the validation photos is kept at every "
                                    "moment, and the time includes scoring it.")
        with st.expander("Advanced settings"):
            c1, c2, c3 = st.columns(3)
            batch_size = c1.number_input("Batch size", 1, 1024, 32, key="tr_batch",
                                         help="Photos per training step. 32 suits a CPU; lower it if memory runs out.")
            lr = c2.number_input("Learning rate (0 = automatic)", 0.0, 1.0, 0.0, format="%.4f", key="tr_lr",
                                 help="How big each training step is. Automatic picks a value suited to what trains.")
            aug = c3.selectbox("Augmentation", ("auto", *AUG_LEVELS), key="tr_aug",
                               help="Varied copies of the training photos (flips, crops, colour): helps small datasets. "
                                    "Automatic chooses by dataset size and what trains.")
            c1, c2, c3 = st.columns(3)
            weights = c1.selectbox("Class weights", CLASS_WEIGHTS, key="tr_class_weights",
                                   help="Give rare classes more weight so the model does not ignore them. "
                                        "Automatic applies a mild weighting when the classes are unbalanced.")
            patience = c2.number_input("Stop after this many epochs without improvement", 1, 500, 5, key="tr_patience",
                                       help="Early stopping: the best epoch's model is kept.")
            seed = c3.number_input("Seed", 0, 2**31 - 1, 0, key="tr_seed",
                                   help="Fixes the random choices (split, order, augmentation) so a run can be repeated.")
            features = st.selectbox("What the last layer sees", ("auto", *backbones.FEATURES), key="tr_features",
                                    format_func={"auto": "automatic: the best view that costs one reading",
                                                 "plain": "the network's summary of each photo",
                                                 "pooled": "the summary and earlier layers' patterns (same time)",
                                                 "rich": "earlier layers too, each photo in 8 orientations "
                                                         "(about 5× the reading time)"}.get,
                                    help="Automatic: with 'only the last layer' and an EfficientNet-Lite model, the "
                                         "earlier layers' patterns beside the summary (on the solar-cell sample right "
                                         "on 79 photos in 100 against 77), else the summary. The 8 orientations suit "
                                         "photos with no up or down (cells, parts, tissue, textures): on the solar-cell "
                                         "sample 82 in 100. Both need 'only the last layer' and an EfficientNet-Lite model.")
        st.caption(time_words(backbone, freeze, features))
        submitted = st.form_submit_button("Start training", type="primary", disabled=running is not None)

    if running:
        st.info("A training is running (below); one training at a time on this machine. Start is ready again "
                "when it ends.")
    if submitted:
        try:
            config = TrainConfig(data=folder, backbone=backbone, freeze=freeze, epochs=int(epochs),
                                 batch_size=int(batch_size), lr=float(lr) or None, aug=aug, class_weights=weights,
                                 patience=int(patience), seed=int(seed), name=name or None, min_per_class=min_per_class,
                                 time_limit=60.0 * minutes if minutes else None, features=features)
        except GraftError as err:  # a setting that cannot apply, refused with the reason
            common.show_error(err)
            return
        if not backbones.weights_available(backbone):
            st.error(f"Pretrained weights for {backbone} are not on this machine: "
                     f"`python -m core backbones` says where to put them.")
        else:
            try:
                st.session_state["watch_run"] = jobs.start(config, runs_root)
                st.rerun()  # redraw the form as busy
            except GraftError as err:
                common.show_error(err)


if owner:
    launch_form()
else:
    st.caption("The presenter starts and stops training; you can follow it live here.")


def watched_run() -> str | None:
    return jobs.active(runs_root) or st.session_state.get("watch_run") or common.store().latest()


def live_metrics(store, run_id: str, epochs_done: int) -> LiveMetrics:
    """This session's copy of the run's curves, topped up with only the rows added since the last poll
    (read afresh when the run changes, or when a resume rewound it)."""
    live_state = st.session_state.get("live_metrics")
    rewound = live_state is not None and len(live_state.epochs) and live_state.epochs["epoch"].max() > epochs_done
    if live_state is None or live_state.run_id != run_id or live_state.store is not store or rewound:
        live_state = st.session_state["live_metrics"] = LiveMetrics(store, run_id)
        return live_state
    return live_state.refresh()


def live() -> None:
    """The watched run's status, progress and curves: redrawn every second while a training runs, every
    10 s otherwise (only to notice a training started elsewhere), so an idle Train page costs the server
    next to nothing."""
    run_id = watched_run()
    if not run_id:
        st.write("No runs yet.")
        return
    store = common.store()
    try:
        run = store.get(run_id)
    except GraftError:
        return
    status = run["status"]
    if bool(running) != (jobs.active(runs_root) is not None):
        st.rerun(scope="app")  # a run ended (the form is ready again) or started elsewhere (poll faster)
    st.subheader(f"{md(run['name'])} — {status}")
    progress = run.get("progress") or {}
    if status in ("queued", "running"):
        if owner and st.button("Stop training", key="stop_run", type="secondary", icon=":material/stop_circle:",
                              help="Ends the run after the current step; the best model so far is kept."):
            jobs.stop(run_id, runs_root)
            st.toast("Stop requested: the run ends after the current batch.")
        elapsed = time.time() - (run["started"] or run["created"])
        fraction, words = describe_progress(progress, run["config"], elapsed)
        st.progress(fraction, text=words)
    elif status == "failed":
        st.error(f"The run failed: {md(run['error'])}")
    elif status == "stopped":
        st.warning("Stopped on request; the best checkpoint is kept.")
    else:
        st.success(f"Finished: right on {run['test_acc']:.0%} of the held-out test photos." if run["test_acc"] is not None
                   else "Finished.")
        if st.session_state.get("_finished_seen") != run_id:  # the run just trained becomes the current one
            st.session_state["_finished_seen"] = st.session_state["current_run"] = run_id
        st.page_link("pages/results.py", label="See the results", icon=":material/arrow_forward:")
    cols = st.columns(3)
    cols[0].metric("Best validation accuracy", f"{run['best_val_acc']:.0%}" if run["best_val_acc"] is not None else "—",
                   help="Share of the validation photos (held out, used to pick the best epoch) labelled correctly, "
                        "at the best epoch so far.")
    cols[1].metric("Best epoch", run["best_epoch"] or "—", help="The epoch whose model is kept: the lowest validation loss.")
    cols[2].metric("Epochs without improvement", f"{progress.get('bad_epochs', 0)} of {run['config'].get('patience')}",
                   help="Training stops early when the validation loss has not improved for this many epochs.")
    if status in ("completed", "stopped"):
        try:
            finished = store.run_dir(run_id)
            kept = kept_sentence(finished.stages(), finished.head_fit())
        except GraftError:
            kept = None
        if kept:
            st.caption(md(kept))
    metrics = live_metrics(store, run_id, int(run["epochs_done"] or 0))
    epochs_df = metrics.epochs
    if len(epochs_df):
        common.chart(st, charts.curves, epochs_df, key="live_curves")
        batches = metrics.batches
        if len(batches) > 1:
            common.chart(st, charts.batch_loss, batches, key="live_batches", height=240)
    with st.expander("Details for engineers (the epoch table and the log)"):
        if len(epochs_df):
            st.dataframe(epochs_df.drop(columns=["run_id", "time"]), hide_index=True, key="live_table")
        if owner:
            st.code(jobs.log_tail(run_id, runs_root) or "(empty)")


st.fragment(live, run_every=1 if running else 10)()
