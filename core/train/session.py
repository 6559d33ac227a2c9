"""A training session: the policy above the loop. It opens the run, plans what runs (the loop, the head
fitted to convergence, the later stages of a time-limited run, the final evaluation) and ends the run
as completed, stopped or failed. `resume` continues a run from its last checkpoint."""
from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from core.base import distributed, runtime
from core.base.errors import log
from core.evaluate.metrics import evaluate_run
from core.models import backbones
from core.runs.folder import RunDir
from core.runs.store import RunStore
from core.train import budget
from core.train.config import TrainConfig
from core.train.estimate import evaluation_reserve, scoring_seconds
from core.train.head import converge_head, converges
from core.train.loop import prepare, run_loop
from core.train.stages import FIRST_WORDS, later_stages, rich_applies
from core.train.steps import (
    Checkpointer,
    ConsoleReporter,
    Deadline,
    EarlyStopping,
    OnEpoch,
    Step,
    StopTraining,
    StopWatch,
    StoreReporter,
)


def fit(config: TrainConfig, runs_root: str | Path | None = None, run_id: str | None = None,
        progress: bool = True, resume: bool = False, on_epoch=None) -> str:
    """Train according to `config` into the run store at `runs_root`; returns the run id.

    The run ends as `completed`, `stopped` (stop request, SIGTERM or Ctrl-C; best checkpoint
    kept) or `failed` (with the error text). `on_epoch(epoch, model)` is called after each epoch.
    """
    started = time.monotonic()
    runtime.configure_threads()
    distributed.setup()
    main = distributed.is_main()
    store = RunStore.open(runs_root) if main else None
    if main and run_id is None:
        run_id = store.create(asdict(config), config.name)
    run_id = run_id or "worker"
    run = store.run_dir(run_id) if main else None
    watch = StopWatch(lambda: store is not None and store.stop_requested(run_id))
    handle_signals = main and threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM)
    if main:
        store.mark_running(run_id)
    if handle_signals:
        signal.signal(signal.SIGTERM, lambda *_: setattr(watch, "signalled", True))
    try:
        reporter = StoreReporter(store, run_id) if main else None
        split = None
        if config.budget and not resume:  # the candidates first; the kept one's run then goes on below
            config, split = budget.explore(config, run, store, run_id, reporter, watch, started, progress)
        # timed before `prepare` seeds the run: timing a model draws random numbers, and a time-limited
        # run's first stage must be the same model as the run without a limit
        per_image = scoring_seconds(config.backbone) if config.time_limit else 0.0
        limit = _time_limit(config, reporter, started)
        plan = prepare(config, run, resume, progress, reporter.phase if reporter else None, split=split)
        if main and resume:
            store.truncate_metrics(run_id, plan.state.epoch)
        if limit is not None:
            limit.deadline -= evaluation_reserve(len(plan.split.manifest), per_image)  # time to score the model
        steps: list[Step] = [watch, EarlyStopping(config.patience)] + ([limit] if limit else [])
        if main:
            steps += [reporter, Checkpointer(run, plan.model, plan.optimizer, plan.scheduler),
                      ConsoleReporter(config.patience, progress)]
        if on_epoch is not None:
            steps.append(OnEpoch(on_epoch, plan.model))
        status = run_loop(plan, steps)
        distributed.finish_together()  # under torchrun rank 0 finishes the run alone, on all the cores
        if limit is not None and limit.reached:
            status = "completed"  # out of time is a normal end: the best so far is the model
        if main and status == "completed" and converges(plan):
            converge_head(plan, run, store, run_id)
        if main and status == "completed" and limit is not None:
            status = later_stages(config, run, store, run_id, reporter, watch, limit.deadline, plan, progress)
        if main and status == "completed":
            trained = time.monotonic() - started
            _evaluate(run, store, run_id, config, progress)
            record_cost(run, store, run_id, trained,
                        budget.kept_photo_seconds(run) if config.budget else _reading_pace(plan, run))
            if config.budget:
                budget.conclude(run, store, run_id, started)
        if main:
            store.finish(run_id, status)
    except (StopTraining, KeyboardInterrupt):
        if main:
            store.finish(run_id, "stopped")
    except Exception as err:
        if main:
            store.finish(run_id, "failed", f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=4)}")
        raise
    finally:
        if handle_signals:
            signal.signal(signal.SIGTERM, previous)
        distributed.cleanup()
    return run_id


def _time_limit(config: TrainConfig, reporter: StoreReporter | None, started: float) -> Deadline | None:
    """The deadline step of a time-limited run (stage 1 of 3 announced), or None."""
    if not config.time_limit:
        return None
    deadline = started + float(config.time_limit)
    if reporter is not None:
        reporter.extra = {"stage": 1, "stages": 4 if rich_applies(config) else 3, "stage_words": FIRST_WORDS,
                          "deadline_wall": time.time() + (deadline - time.monotonic())}
    return Deadline(deadline, finish_an_epoch=True)  # a model first, however short the limit


def record_cost(run: RunDir, store: RunStore, run_id: str, trained: float, seconds: float | None = None) -> None:
    """What the run cost beside its accuracy: seconds of training (everything before scoring), photos a
    second its kept model scores on this machine (`seconds` a photo as measured, else its network timed:
    `budget.photo_seconds`), and its checkpoint's size."""
    card = run.card()
    if not seconds:
        seconds = budget.photo_seconds(card.backbone, card.freeze, card.preprocessing.input_size, card.features)
    store.update(run_id, train_seconds=round(trained, 1), photos_per_s=round(1.0 / max(seconds, 1e-6), 1),
                 size_mb=round(run.best_file.stat().st_size / 1e6, 2))


def _reading_pace(plan, run: RunDir) -> float | None:
    """Seconds a photo of the frozen network's feature pass as this run measured it, when the kept model is
    that network at that size and view and enough photos were read to tell; else None."""
    info, card = plan.batches.info or {}, run.card()
    same = card.freeze == "head" and card.features == plan.config.features and \
        card.preprocessing.input_size == backbones.preprocessing_for(plan.config.backbone, plan.config.input_size).input_size
    return info["cache_seconds"] / info["computed"] if same and info.get("computed", 0) >= budget.MEASURED_PHOTOS \
        else None


def _evaluate(run: RunDir, store: RunStore, run_id: str, config: TrainConfig, progress: bool) -> None:
    store.set_progress(run_id, phase="evaluate")
    result = evaluate_run(run, tta=config.tta, progress=progress, store=store, run_id=run_id)
    log.info(f"test accuracy {result['accuracy']:.4f} on {result['n']} {result['split']} images")


def resume(run_ref: str, runs_root: str | Path | None = None, progress: bool = True) -> str:
    """Continue a run from its last checkpoint (same manifest, same config), holding the runs
    folder's training slot like any training."""
    run_id, run = RunStore.open(runs_root).resolve(run_ref)
    config = TrainConfig.from_dict(run.read_config())
    store = RunStore.open(run.path.parent)  # the run's own folder, wherever it was given
    store.claim(run_id, os.getpid())
    store.update(run_id, stop_requested=0)  # the stop that ended it last time is not a stop for this resume
    try:
        if config.time_limit and run.stages() is not None:
            return _finish_with_the_kept_model(run, store, run_id, config, progress)
        return fit(config, store.root, run_id=run_id, progress=progress, resume=True)
    finally:
        store.release(run_id)


def _finish_with_the_kept_model(run: RunDir, store: RunStore, run_id: str, config: TrainConfig,
                                progress: bool) -> str:
    """A time-limited run stopped after its first stage: its time is spent, so it ends with the best model
    kept so far, evaluated (a later stage does not start again from a loop that has moved on)."""
    kept = next((stage for stage in run.stages() or [] if stage.get("kept")), None)
    log.info("this time-limited run was stopped after its first stage: it ends with the model kept so far"
             + (f" (stage {kept['stage']}, {kept['words']})" if kept else ""))
    store.mark_running(run_id)
    try:
        _evaluate(run, store, run_id, config, progress)
    except Exception as err:
        store.finish(run_id, "failed", f"{type(err).__name__}: {err}")
        raise
    store.finish(run_id, "completed")
    return run_id
