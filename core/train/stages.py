"""The best model within a time limit: `train --time-limit SECONDS` spends the budget in
stages and keeps the best model by validation accuracy at every moment:

1. the last layer on the pretrained network's cached view of the photos (a usable model within a
   minute; the run's own features, `pooled` for a frozen EfficientNet-Lite), fitted to convergence;
2. the last layer on a richer view (EfficientNet-Lite backbones): earlier stages pooled beside the
   last one, averaged over the 8 flips and quarter turns of each photo (`features="rich"`), fitted
   to convergence; about 5 times the first stage's reading time, so it runs only when that fits;
3. fine-tuning the last stages of the network on smaller photos (faster epochs);
4. fine-tuning the last stages at full size.

Stage 3 starts from stage 1's trained loop (not its converged head, whose weights fine-tuning
blows up; on the pooled view its head on the last block's features alone), stage 4 from where
stage 3 ended; each plans its epochs in a share of the time left (an epoch slower than estimated
may run into the next stage's share: only the run's deadline cuts one short); an epoch that would
not finish in time is not started, and a time is kept back for the final evaluation.
A stage whose model beats the best on validation rewrites best.pt and the model card (its
resolution and what trains), so evaluation, Predict and the export use that model.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

from core.base.errors import log
from core.models import backbones
from core.models.backbones import drop_taps, rich_view_available
from core.runs.folder import RunDir, card_for
from core.train.estimate import epoch_seconds, reading_factor, seconds_per_image
from core.train.head import fit_converged, keep_fitted
from core.train.loop import prepare, run_loop
from core.train.steps import ConsoleReporter, Deadline, EarlyStopping, LoopState, Step, StopWatch, StoreReporter

SMALL = 0.75  # stage 2 trains on photos at this share of the backbone's input size


@dataclass
class Stage:
    number: int
    words: str
    freeze: str
    input_size: int | None = None
    features: str = "plain"


FIRST_WORDS = "the last layer on the pretrained network's view of the photos"
RICH_WORDS = "the last layer on a richer view (earlier layers too, each photo in 8 orientations)"


def stages_for(input_size: int, rich: bool = True) -> list[Stage]:
    small = int(round(input_size * SMALL / 32) * 32)
    stages = [Stage(1, FIRST_WORDS, "head")] + ([Stage(2, RICH_WORDS, "head", features="rich")] if rich else [])
    stages += [Stage(0, f"fine-tuning the last layers on smaller photos ({small} px)", "partial", small),
               Stage(0, f"fine-tuning the last layers at full size ({input_size} px)", "partial", None)]
    return [replace(stage, number=i) for i, stage in enumerate(stages, 1)]


def rich_applies(config) -> bool:
    """Whether the richer view is a stage of this run: a frozen EfficientNet-Lite run on one view, not chosen
    within a budget (`--budget` tried the richer view as a candidate of its own and set it aside: its run
    only fine-tunes the model it kept, so the model at the end is the one its leaderboard names)."""

    return config.freeze == "head" and config.features != "rich" and rich_view_available(config.backbone) \
        and not config.budget


class KeepBest(Step):
    """Saves best.pt and the stage's model card when validation accuracy beats the best so far; runs
    after the store reporter, so the run store shows the best across stages."""

    def __init__(self, run: RunDir, model, stage_config, classes, prep, store, run_id, best: dict):
        self.run, self.model, self.config, self.classes, self.prep = run, model, stage_config, classes, prep
        self.store, self.run_id, self.best = store, run_id, best

    def on_epoch(self, state: LoopState, row) -> None:
        if row.val_acc > self.best["val_acc"]:
            self.best.update(val_acc=row.val_acc, epoch=row.epoch)
            self.run.keep_model(self.model.state_dict(), card_for(asdict(self.config), self.classes, self.prep))
        # after the store reporter (which writes this stage's own best): the run's best across stages
        self.store.update(self.run_id, best_val_acc=self.best["val_acc"], best_epoch=self.best.get("epoch"))


class StageTally(Step):
    """A stage's own record: its best validation accuracy (the figure KeepBest compares, not the one at
    the lowest validation loss) and how many photos a second its epochs passed through the network."""

    def __init__(self, photos_per_epoch: int):
        self.photos_per_epoch, self.epochs, self.seconds, self.best_acc = photos_per_epoch, 0, 0.0, None

    def on_epoch(self, state: LoopState, row) -> None:
        self.epochs, self.seconds = self.epochs + 1, self.seconds + row.seconds
        self.best_acc = row.val_acc if self.best_acc is None else max(self.best_acc, row.val_acc)

    def photos_per_s(self) -> float | None:
        return round(self.epochs * self.photos_per_epoch / self.seconds, 1) if self.seconds > 0 else None


def reading_rate(info: dict | None) -> float | None:
    """Photos read a second by a frozen backbone's feature pass (None when everything came from the cache)."""
    info = info or {}
    if not info.get("computed") or not info.get("cache_seconds"):
        return None
    return round(info["computed"] / info["cache_seconds"], 1)


def later_stages(config, run: RunDir, store, run_id: str, reporter: StoreReporter, watch: StopWatch,
                 deadline: float, first_plan, progress: bool) -> str:
    """Stages 2 and 3 after stage 1 (done by `train.fit`); returns the run's status."""

    all_stages = stages_for(_input_size(config), rich_applies(config))
    best = {"val_acc": float(first_plan.state.best_val_acc or 0.0), "epoch": first_plan.state.best_epoch}
    head_fit = run.head_fit()
    if head_fit and head_fit["chosen"] == "converged":
        best["val_acc"] = head_fit["val_acc"]
    record = [{"stage": 1, "words": all_stages[0].words, "epochs": first_plan.state.epoch,
               "val_acc": best["val_acc"], "read_per_s": reading_rate(first_plan.batches.info), "kept": True}]
    run.write_stages(record)  # from here on the run is past its first stage (`session.resume` reads it)
    epoch = first_plan.state.epoch
    # Fine-tuning starts from the loop's own head (last.pt), never from the converged one: its weights
    # are fitted to these exact features, and gradient steps through them blow the loss up.
    start = _fine_tuning_start(run.load_last()["model"], first_plan)
    n_train, n_val = (int((first_plan.split.manifest["split"] == s).sum()) for s in ("train", "val"))
    for stage in all_stages[1:]:
        left = deadline - time.monotonic()
        if stage.features == "rich":
            record.append(_rich_stage(stage, config, run, store, run_id, reporter, watch, deadline, first_plan,
                                      best, epoch))
            for earlier in record[:-1]:
                earlier["kept"] = earlier.get("kept", False) and not record[-1].get("kept")
            epoch += record[-1]["epochs"]  # its epochs are on the live curve: the next stage numbers on from them
            run.write_stages(record)
            continue
        share = left / 2 if stage is all_stages[-2] else left
        per_epoch = epoch_seconds(config.backbone, "partial", n_train, n_val, True, stage.input_size)[1]
        epochs = int(share // per_epoch)
        if epochs < 1:
            log.info(f"stage {stage.number} skipped: one epoch (~{per_epoch:.0f} s) does not fit in the "
                     f"{max(left, 0):.0f} s left")
            record.append({"stage": stage.number, "words": stage.words, "epochs": 0, "skipped": True})
            continue
        reporter.extra = {**reporter.extra, "stage": stage.number, "stage_words": stage.words}
        store.set_progress(run_id, phase="prepare", **reporter.extra)
        stage_config = replace(config, freeze=stage.freeze, input_size=stage.input_size, epochs=epochs,
                               aug="auto", lr=None, head_fit="loop", time_limit=None, features="plain")
        plan = prepare(stage_config, None, progress=False, split=first_plan.split)  # the run's own split
        plan.model.load_state_dict(start)
        plan.state = LoopState(epochs=epoch + epochs, epoch=epoch, step=epoch * len(plan.batches.train))
        log.info(f"stage {stage.number}: {stage.words}, {epochs} epochs of ~{per_epoch:.0f} s")
        # the share sets how many epochs are planned; only the run's own deadline cuts an epoch short, so an
        # epoch slower than estimated still ends with its validation (it was cut at the share: "1 epoch", no figure)
        limit, tally = Deadline(deadline), StageTally(n_train + n_val)
        steps: list[Step] = [watch, limit, tally, EarlyStopping(config.patience), reporter,
                             ConsoleReporter(config.patience, progress), KeepBest(run, plan.model, stage_config, plan.split.classes,
                                      _prep(stage_config), store, run_id, best)]
        before = dict(best)
        status = run_loop(plan, steps)
        record.append({"stage": stage.number, "words": stage.words, "first_epoch": epoch + 1,
                       "epochs": plan.state.epoch - epoch, "best_val_acc": tally.best_acc,
                       "trained_per_s": tally.photos_per_s(), "kept": best != before})
        for earlier in record[:-1]:
            earlier["kept"] = earlier.get("kept", False) and best == before
        epoch, start = plan.state.epoch, plan.model.state_dict()  # the next stage goes on from here
        run.write_stages(record)
        if status == "stopped" and not limit.reached:
            return "stopped"  # a stop request: the best so far is kept
    run.write_stages(record)
    log.info(f"best within the time limit: validation accuracy {best['val_acc']:.4f} (stage "
             f"{next(r['stage'] for r in record if r.get('kept'))})")
    return "completed"


def _fine_tuning_start(state: dict, first_plan) -> dict:
    """Stage 1's loop model as the fine-tuning stages take it: on the `pooled` (or `rich`) view, the
    backbone's own weights and the head's first layer on the last block's features alone, the earlier
    blocks' share folded into its bias at their mean over the training photos; on the plain view, unchanged."""
    if first_plan.config.features == "plain":
        return state

    return drop_taps(state, first_plan.batches.train.dataset.tensors[0].mean(0), first_plan.model.backbone.summary_dim)


READ_MARGIN = 1.25  # the richer view's reading time as estimated, with this much to spare


def _rich_stage(stage: Stage, config, run: RunDir, store, run_id: str, reporter: StoreReporter, watch: StopWatch,
                deadline: float, first_plan, best: dict, epoch: int) -> dict:
    """Stage 2: the head on the richer view, converged; kept (best.pt and the card) when it beats
    the best validation accuracy so far. Skipped when reading every photo in 8 orientations would not fit."""

    n_read = int(first_plan.split.manifest["split"].isin(["train", "val"]).sum())
    seconds = READ_MARGIN * reading_factor("rich") * n_read * _read_seconds(config, first_plan) + 30.0
    left = deadline - time.monotonic()
    entry = {"stage": stage.number, "words": stage.words}
    if seconds > left:
        log.info(f"stage {stage.number} skipped: reading the photos in 8 orientations (~{seconds:.0f} s) does not "
                 f"fit in the {max(left, 0):.0f} s left")
        return {**entry, "epochs": 0, "skipped": True}
    reporter.extra = {**reporter.extra, "stage": stage.number, "stage_words": stage.words}
    store.set_progress(run_id, phase="prepare", **reporter.extra)
    stage_config = replace(config, features="rich", aug="none", lr=None, head_fit="loop", time_limit=None)
    log.info(f"stage {stage.number}: {stage.words} (reading ~{seconds:.0f} s)")
    plan = prepare(stage_config, None, progress=False, split=first_plan.split, report=reporter.phase)
    plan.state = LoopState(epochs=epoch + config.epochs, epoch=epoch, step=epoch * len(plan.batches.train))
    steps: list[Step] = [watch, Deadline(deadline), EarlyStopping(config.patience), reporter,
                         ConsoleReporter(config.patience, False),
                         KeepBest(run, plan.model, stage_config, plan.split.classes, _prep(stage_config), store,
                                  run_id, best)]
    before = dict(best)
    run_loop(plan, steps)
    fitted = fit_converged(plan)
    if fitted.val_acc > best["val_acc"]:  # the backbone is frozen: the loop's model with the converged head
        best.update(val_acc=fitted.val_acc, epoch=plan.state.epoch)
        keep_fitted(run, plan.model.state_dict(), fitted, stage_config, plan.split.classes)
        store.update(run_id, best_val_acc=fitted.val_acc, best_epoch=plan.state.epoch)
    log.info(f"stage {stage.number}: validation accuracy {fitted.val_acc:.4f} with the converged head ({fitted.words}), "
             f"best so far {best['val_acc']:.4f}")
    return {**entry, "first_epoch": epoch + 1, "epochs": plan.state.epoch - epoch, "best_val_acc": fitted.val_acc,
            "head": fitted.record(), "read_per_s": reading_rate(plan.batches.info), "kept": best != before}


def _read_seconds(config, first_plan) -> float:
    """Seconds to read one photo with the frozen backbone: measured by stage 1 when it read photos,
    else timed on this machine (`estimate.seconds_per_image`, ONNX Runtime's speed-up included)."""
    rate = reading_rate(first_plan.batches.info)
    return 1.0 / rate if rate else seconds_per_image(config.backbone, "head", config.input_size)[1]


def _prep(config):

    return backbones.preprocessing_for(config.backbone, config.input_size)


def _input_size(config) -> int:
    return _prep(config).input_size
