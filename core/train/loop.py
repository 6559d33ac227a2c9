"""One readable training loop, for both paths: a head on a frozen backbone's cached features, or the
network fine-tuned on decoded, augmented images. AdamW or SGD, cosine or one-cycle schedule, label
smoothing, class weights; what happens around each batch and epoch (reporting, checkpoints, early
stopping, a stop request, a deadline) is done by the steps it is given (`train.steps`)."""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from core.base import distributed, runtime
from core.base.errors import BadInput, log
from core.data import catalog
from core.models import backbones
from core.models.features import FeatureCache
from core.models.preprocess import Preprocessing, eval_transform
from core.runs.folder import RunDir, card_for, data_root
from core.train.batches import Batches, feature_batches, image_batches
from core.train.config import CLASS_WEIGHTS, TrainConfig
from core.train.estimate import epoch_seconds
from core.train.steps import EpochRow, LoopState, Step, StopTraining


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def class_weights(counts: list[int], mode: str) -> torch.Tensor | None:
    """Loss weights per class, mean 1, or None.

    `sqrt`: 1/sqrt(count), which lifts rare classes with less loss of overall accuracy than full
    inverse-frequency weights;
    `balanced`: 1/count; `auto`: `sqrt` when the largest class is ≥ 3× the smallest, else none.
    """
    counts_arr = np.maximum(np.asarray(counts, dtype=np.float64), 1)
    if mode not in CLASS_WEIGHTS:
        raise BadInput(f"class weights must be one of {CLASS_WEIGHTS}")
    if mode == "off" or (mode == "auto" and counts_arr.max() < 3 * counts_arr.min()):
        return None
    weights = 1 / counts_arr if mode == "balanced" else 1 / np.sqrt(counts_arr)
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def make_optimizer(model: backbones.GraftModel, config: TrainConfig) -> torch.optim.Optimizer:
    lr = config.learning_rate
    groups = [{"params": list(model.head.parameters()), "lr": lr}]
    backbone = model.backbone_parameters()
    if backbone:
        groups.append({"params": backbone, "lr": lr * config.backbone_lr_mult})
    if config.optimizer == "sgd":
        wd = 1e-4 if config.weight_decay is None else config.weight_decay
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, weight_decay=wd)
    wd = 0.01 if config.weight_decay is None else config.weight_decay
    return torch.optim.AdamW(groups, lr=lr, weight_decay=wd)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total,
                                                          eta_min=config.learning_rate * 0.01)
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def run_epoch(module: nn.Module, loader, criterion: nn.Module, device: torch.device,
              optimizer: torch.optim.Optimizer | None = None, scheduler=None, on_batch=None,
              scaler: torch.amp.GradScaler | None = None, channels_last: bool = False) -> tuple[float, float]:
    """One pass over `loader`; trains when an optimizer is given. Returns (mean loss, accuracy)."""
    training = optimizer is not None
    module.train(training)
    total_loss, correct, seen = 0.0, 0, 0
    with torch.set_grad_enabled(training):
        for batch in loader:
            if batch is None:
                continue
            inputs = runtime.to_input(batch[0], device, channels_last)
            labels = batch[1].to(device, non_blocking=True)
            with runtime.autocast(device):
                logits = module(inputs)
            loss = criterion(logits.float(), labels)
            if training:
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None and scaler.is_enabled():
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                scheduler.step()
            n = labels.numel()
            total_loss += loss.item() * n
            correct += (logits.argmax(1) == labels).sum().item()
            seen += n
            if on_batch:
                on_batch(loss.item())
    total_loss, correct, seen = distributed.all_reduce_sum([total_loss, correct, seen])
    return total_loss / max(seen, 1), correct / max(seen, 1)


@dataclass
class Plan:
    """Everything the loop needs, prepared from a config: the split, the model and what trains,
    the loaders, the loss, the optimiser and schedule, and where the loop starts."""

    config: TrainConfig
    split: catalog.Split
    model: backbones.GraftModel
    module: nn.Module
    batches: Batches
    device: torch.device
    channels_last: bool
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    state: LoopState


def load_split(config: TrainConfig, run: RunDir | None, resume: bool, progress: bool) -> catalog.Split:
    """The run's manifest when resuming, else a fresh scan and split (saved as the manifest)."""
    if resume and run is not None and run.manifest_file.is_file():
        return run.manifest(run.card().labels)
    root = data_root(config.data)
    index = catalog.scan(root, progress=progress)
    for row in index.skipped.itertuples():
        log.info(f"skipped {row.path}: {row.reason}" + (f" ({row.detail})" if row.detail else ""))
    split = catalog.split(index, config.fractions, config.seed, config.min_per_class)
    for label, count in split.dropped.items():
        log.info(f"dropped class {label!r}: {count} images < --min-per-class {config.min_per_class}")
    if len(split.classes) < 2:
        raise BadInput(f"{root}: need at least 2 classes with ≥ {config.min_per_class} images; "
                       f"found {len(split.classes)}")
    if run is not None:
        run.write_manifest(split)
    return split


def prepare(config: TrainConfig, run: RunDir | None, resume: bool = False, progress: bool = True,
            report=None, split: catalog.Split | None = None) -> Plan:
    """Scan and split (or reload the manifest), build the model, write the run's config and card,
    make the loaders (cached features when the backbone is frozen), loss, optimiser and schedule,
    and restore the loop's state from last.pt when resuming. `run` is None on torchrun ranks > 0."""
    seed_everything(config.seed)
    split = split if split is not None else _shared_split(config, run, resume, progress)
    counts = split.counts()
    log.info(f"{len(split.classes)} classes; images per split: "
             + ", ".join(f"{s} {int(counts[s].sum())}" for s in counts.columns))
    prep = backbones.preprocessing_for(config.backbone, config.input_size)
    model = backbones.create(config.backbone, len(split.classes), config.freeze, config.head,
                          weights=config.weights, dropout=config.dropout, features=config.features)
    if run is not None and not (resume and run.card_file.is_file()):  # a resumed run keeps the card of its kept model
        run.write_config(asdict(config))
        run.write_card(card_for(asdict(config), split.classes, prep))
    device = distributed.setup() or runtime.pick_device()
    model, channels_last = runtime.place(model, device, training=True)
    batches = (feature_batches(model, split, data_root(config.data), config, prep, progress and run is not None, report)
               if config.uses_cache else image_batches(model, split, data_root(config.data), config, prep))
    if config.uses_cache and distributed.active():
        _test_features(model, split, config, prep)
    if batches.info:
        log.info(f"feature cache {batches.info['cache_key']}: {batches.info['computed']} image views computed, "
                 f"the rest from the cache ({batches.info['cache_seconds']:.1f} s)")
    module = batches.module
    if module is model and run is not None:
        estimate = epoch_seconds(config.backbone, config.freeze, len(batches.train.dataset),
                                 len(batches.val.dataset), False, config.input_size)[0]
        log.info(f"estimated time per epoch on this machine: ~{estimate:.0f} s "
                 f"(~{estimate * config.epochs / 60:.1f} min for {config.epochs} epochs)")
    if distributed.active() and module is model:  # the image path: each rank its share of every epoch
        module = torch.nn.parallel.DistributedDataParallel(model)
    weights = class_weights(counts["train"].tolist(), config.class_weights)
    if weights is not None:
        log.info("class weights: " + ", ".join(f"{c} {w:.2f}" for c, w in zip(split.classes, weights.tolist())))
        weights = weights.to(device)
    optimizer = make_optimizer(model, config)
    plan = Plan(config, split, model, module, batches, device, channels_last and module is model,
                nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing), optimizer,
                make_scheduler(optimizer, config, max(1, len(batches.train))), runtime.grad_scaler(device),
                LoopState(epochs=config.epochs))
    if resume and run is not None:
        _restore(plan, run)
    return plan


def _shared_split(config: TrainConfig, run: RunDir | None, resume: bool, progress: bool) -> catalog.Split:
    """The run's split: under torchrun rank 0 scans and splits (or reloads the manifest) and sends it to
    the others, or sends the error that stopped it, so every rank stops with it."""
    if not distributed.active():
        return load_split(config, run, resume, progress and run is not None)
    split: catalog.Split | str | None = None
    if distributed.is_main():
        try:
            split = load_split(config, run, resume, progress and run is not None)
        except Exception as err:  # every rank stops, none waits for a split that never comes
            distributed.broadcast(str(err))
            raise
    split = distributed.broadcast(split)
    if isinstance(split, str):
        raise BadInput(split)  # rank 0 raised the error itself; this rank names it (its log is quiet)
    return split


def _test_features(model: backbones.GraftModel, split: catalog.Split, config: TrainConfig, prep: Preprocessing) -> None:
    """Under torchrun, the test photos' features too are read in shares into the cache, so that rank 0,
    which evaluates the run alone after the loop, finds them there."""
    rows = split.manifest[split.manifest["split"] == "test"]
    root = data_root(config.data)
    FeatureCache(model.backbone, prep, shared=True).features(
        [root / p for p in rows["path"]], rows["sha1"].tolist(), "eval", eval_transform(prep),
        workers=config.workers, batch_size=max(config.batch_size, 32), log=None)


def _restore(plan: Plan, run: RunDir) -> None:
    last = run.load_last()
    if last is None:
        return
    plan.model.load_state_dict(last["model"])
    plan.optimizer.load_state_dict(last["optimizer"])
    plan.scheduler.load_state_dict(last["scheduler"])
    for key, value in plan.state.saved().items():
        setattr(plan.state, key, last.get(key, value))
    plan.state.step = plan.state.epoch * len(plan.batches.train)
    log.info(f"resuming after epoch {plan.state.epoch}")


def run_loop(plan: Plan, steps: list[Step]) -> str:
    """Train epoch after epoch, telling `steps` what happens; returns `completed` or `stopped`."""
    state, batches = plan.state, plan.batches
    steps_per_epoch = len(batches.train)
    for step in steps:
        step.on_start(state, steps_per_epoch)

    def on_batch(loss: float) -> None:
        state.step += 1
        for step in steps:
            step.on_batch(state, loss)

    status = "completed"
    try:
        for epoch in range(state.epoch + 1, state.epochs + 1):
            state.epoch = epoch
            if batches.sampler is not None:
                batches.sampler.set_epoch(epoch)
            started, lr = time.perf_counter(), plan.optimizer.param_groups[0]["lr"]
            train_loss, train_acc = run_epoch(plan.module, batches.train, plan.criterion, plan.device,
                                              plan.optimizer, plan.scheduler, on_batch, plan.scaler,
                                              plan.channels_last)
            val_loss, val_acc = run_epoch(plan.module, batches.val, plan.criterion, plan.device,
                                          channels_last=plan.channels_last)
            state.record(val_loss, val_acc)
            row = EpochRow(epoch, train_loss, train_acc, val_loss, val_acc, lr, time.perf_counter() - started)
            for step in steps:
                step.on_epoch(state, row)
            if state.stop_reason:
                break
    except StopTraining:
        status = "stopped"
    for step in steps:
        step.on_end(state, status)
    return status
