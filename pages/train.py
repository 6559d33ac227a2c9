"""Train page: a form that launches training outside the script run, then live curves,
progress and Stop, polled from the run store once a second."""
import time

import streamlit as st

from core.base.errors import GraftError
from core.models import backbones
from core.models.choices import backbone_title
from core.present import charts
from core.present.words import describe_progress, kept_sentence
from core.runs.store import LiveMetrics
from core.train import estimate, jobs
from core.train.config import TrainConfig, default_features, setting
from pages import common
from pages.common import escape_markdown as md
from pages.leaderboard_view import draw_leaderboard

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


def about(name: str) -> dict:
    """A setting's caption and help, as core.train.config describes it (the page only places them)."""
    described = setting(name)
    return {"label": described.title, "help": described.help}


def number(place, name: str, key: str):
    """A whole-number setting: its caption, help, range and default from its description."""
    low, high = setting(name).between or (0, 2**31 - 1)
    return place.number_input(**about(name), min_value=int(low), max_value=int(high), value=setting(name).default,
                              key=key)


def choice(place, name: str, key: str):
    """A setting with choices, each in words, its default chosen."""
    described = setting(name)
    return place.selectbox(**about(name), options=described.choices, index=described.choices.index(described.default),
                           format_func=described.option, key=key)


def launch_form() -> None:
    """The training form (the owner only)."""
    with st.form("train_form"):
        st.caption(f"{len(split.classes)} classes · {n_train} training and {n_val} validation images "
                   f"(min {min_per_class} per class)")
        c1, c2, c3 = st.columns([3, 2, 1])
        backbone = c1.selectbox(**about("backbone"), options=[s.name for s in backbones.list_backbones()],
                                format_func=describe, key="tr_backbone")
        freeze = choice(c2, "freeze", "tr_freeze")
        epochs = number(c3, "epochs", "tr_epochs")
        c1, c2 = st.columns([3, 2])
        name = c1.text_input(**about("name"), value="", key="tr_name", placeholder="optional")
        minutes = c2.selectbox(**about("time_limit"), options=(0, 5, 15, 30), key="tr_minutes",  # 0: no clear (×)
                               format_func=lambda m: "the epochs set here" if not m else
                               f"the best model within {m} minutes")
        with st.expander("Advanced settings"):
            c1, c2, c3 = st.columns(3)
            batch_size = number(c1, "batch_size", "tr_batch")
            low, high = setting("lr").between
            lr = c2.number_input(**about("lr"), min_value=low, max_value=high, value=None, format="%g", key="tr_lr",
                                 placeholder=setting("lr").unset)
            aug = choice(c3, "aug", "tr_aug")
            c1, c2, c3 = st.columns(3)
            weights = choice(c1, "class_weights", "tr_class_weights")
            patience = number(c2, "patience", "tr_patience")
            seed = number(c3, "seed", "tr_seed")
            features = choice(st, "features", "tr_features")
        st.caption(time_words(backbone, freeze, features))
        submitted = st.form_submit_button("Start training", type="primary", disabled=running is not None)

    if running:
        st.info("A training is running (below); one training at a time on this machine. Start is ready again "
                "when it ends.")
    if submitted:
        try:
            config = TrainConfig(data=folder, backbone=backbone, freeze=freeze, epochs=int(epochs),
                                 batch_size=int(batch_size), lr=None if lr is None else float(lr), aug=aug,
                                 class_weights=weights, patience=int(patience), seed=int(seed), name=name or None,
                                 min_per_class=min_per_class, time_limit=60.0 * minutes if minutes else None,
                                 features=features)
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


def budget_form() -> None:
    """"Find the best model in … minutes" (the owner only): every model whose weights are here is tried and
    the best on validation kept (`core.train.budget`), the other settings at their defaults."""
    with st.form("budget_form"):
        c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
        minutes = c1.number_input("Find the best model in … minutes", min_value=1, max_value=600, value=10, step=1,
                                  key="tr_budget", help=setting("budget").help)
        submitted = c2.form_submit_button("Find the best model", disabled=running is not None)
    if submitted:
        try:
            config = TrainConfig(data=folder, min_per_class=min_per_class, budget=60.0 * float(minutes))
            st.session_state["watch_run"] = jobs.start(config, runs_root)
        except GraftError as err:
            common.show_error(err)
            return
        st.rerun()


if owner:
    launch_form()
    budget_form()
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
        draw_leaderboard(store.run_dir(run_id).path)
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
