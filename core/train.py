"""Training: one readable loop, used for both paths.

- `head` mode with the feature cache (default): the frozen backbone runs once per image (and
  once per augmented view), and the loop trains the head on cached features.
- `partial` / `full` (or `--no-cache`): the same loop over decoded, augmented images.

Either way: AdamW or SGD, cosine or one-cycle schedule, label smoothing, class weights, early
stopping on val loss, best (by val loss) and last checkpoints, resume, a stop request checked
between batches, metrics written to the run store as training goes.
"""
from __future__ import annotations

import os
import random
import signal
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import data, distributed, models, runtime
from .choices import AUG_LEVELS, CLASS_WEIGHTS, HEAD_FITS, HEADS, OPTIMIZERS, SCHEDULES
from .decoded import DecodedDataset
from .errors import BadInput, log
from .estimate import epoch_seconds
from .features import FeatureCache
from .preprocess import Preprocessing, eval_transform, tensor_transforms, train_transform
from .rundir import RunDir, card_for, data_root
from .runs import RunStore
from .stages import evaluation_reserve, scoring_seconds
from .steps import (Checkpointer, ConsoleReporter, Deadline, EarlyStopping, EpochRow, LoopState, OnEpoch, Step,
                    StopTraining, StopWatch, StoreReporter)


def default_features(backbone: str, freeze: str) -> str:
    """What the head sees by default: for a frozen EfficientNet-Lite its earlier blocks pooled beside the
    last (`pooled`: the same reading time, on ELPV 0.793 test accuracy against 0.768, on Fashion-MNIST
    0.883 against 0.877; README), else the backbone's own pooled output (`plain`)."""
    try:
        lite = models.rich_view_available(backbone)
    except BadInput:  # an unknown backbone: its own error comes from create()
        lite = False
    return "pooled" if freeze == "head" and lite else "plain"


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as the run's config.json)."""

    data: str
    backbone: str = models.DEFAULT_BACKBONE
    weights: str | None = None
    head: str = "linear"
    freeze: str = "head"
    epochs: int = 10
    batch_size: int = 32
    lr: float | None = None  # default: 1e-2 for a frozen backbone's head, 1e-3 when fine-tuning
    backbone_lr_mult: float = 0.1  # the backbone trains at lr × this when it trains
    optimizer: str = "adamw"
    weight_decay: float | None = None  # default: 0.01 (AdamW) / 1e-4 (SGD)
    momentum: float = 0.9
    schedule: str = "cosine"
    label_smoothing: float = 0.1
    class_weights: str = "auto"  # auto: sqrt weights when the largest class is ≥ 3× the smallest
    patience: int = 5
    aug: str = "auto"  # auto: none for a cached frozen backbone, light when fine-tuning
    aug_views: int = 2  # augmented views per training image cached in head mode (when aug != none)
    dropout: float = 0.2
    seed: int = 0
    name: str | None = None
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    min_per_class: int = 5
    input_size: int | None = None  # override the backbone's input resolution
    cache: bool = True  # feature cache (head) or decoded-image cache (partial/full); False: plain loop
    workers: int | None = None
    tta: int = 0  # evaluate with N TTA views as well
    features: str = "auto"  # auto: pooled for a frozen EfficientNet-Lite, else plain (models.FEATURES, resolved here)
    head_fit: str = "converge"  # converge: a frozen linear head also fitted to convergence, kept if better on val
    time_limit: float | None = None  # seconds: the best model within this time, in stages (core/stages.py)

    def __post_init__(self) -> None:
        self.data = str(self.data)
        self.fractions = tuple(float(f) for f in self.fractions)
        choices = {"freeze": models.FREEZE_MODES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES, "head": HEADS,
                   "class_weights": CLASS_WEIGHTS, "aug": ("auto", *AUG_LEVELS), "head_fit": HEAD_FITS,
                   "features": ("auto", *models.FEATURES)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise BadInput(f"{name} must be one of {', '.join(allowed)} (got {getattr(self, name)!r})")
        ranges = {"epochs": (1, 10_000), "batch_size": (1, 65_536), "patience": (1, 10_000), "aug_views": (1, 64),
                  "min_per_class": (1, 10**9), "tta": (0, 64), "label_smoothing": (0.0, 0.99),
                  "dropout": (0.0, 0.99), "momentum": (0.0, 0.9999), "backbone_lr_mult": (0.0, 100.0)}
        if self.lr is not None:
            ranges["lr"] = (1e-9, 10.0)
        if self.weight_decay is not None:
            ranges["weight_decay"] = (0.0, 10.0)
        if self.input_size is not None:
            ranges["input_size"] = (32, 1024)
        if self.time_limit is not None:
            ranges["time_limit"] = (30, 7 * 24 * 3600)
        if self.workers is not None:
            ranges["workers"] = (0, 64)
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise BadInput(f"{name.replace('_', '-')} must be between {low} and {high} (got {value!r})")
        if len(self.fractions) != 3 or min(self.fractions) < 0 or abs(sum(self.fractions) - 1) > 1e-6 \
                or self.fractions[0] <= 0:
            raise BadInput(f"fractions must be three shares (train > 0) that add up to 1 (got {self.fractions})")
        if self.features == "auto":
            self.features = default_features(self.backbone, self.freeze)
        if self.features != "plain" and (self.freeze != "head" or not models.rich_view_available(self.backbone)):
            raise BadInput(f"features {self.features} need a frozen backbone (freeze head) and an EfficientNet-Lite "
                           f"model: they pool known blocks (got {self.backbone}, freeze {self.freeze})")

    def resolved(self) -> "TrainConfig":
        """The same config with every path absolute (`~` expanded), for a process started elsewhere."""
        values = asdict(self)
        values["data"] = str(data_root(self.data))
        if self.weights:
            values["weights"] = str(data_root(self.weights))
        return TrainConfig(**values)

    @property
    def augmentation(self) -> str:
        if self.aug != "auto":
            return self.aug
        return "none" if self.uses_cache else "light"

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return 1e-2 if self.freeze == "head" else 1e-3

    @property
    def uses_cache(self) -> bool:
        return self.freeze == "head" and self.cache

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def class_weights(counts: list[int], mode: str) -> torch.Tensor | None:
    """Loss weights per class, mean 1, or None.

    `sqrt`: 1/sqrt(count), which lifts rare classes without giving up overall accuracy (on ELPV,
    full inverse-frequency weights cost ~17 points of accuracy for ~3 of balanced accuracy);
    `balanced`: 1/count; `auto`: `sqrt` when the largest class is ≥ 3× the smallest, else none.
    """
    counts_arr = np.maximum(np.asarray(counts, dtype=np.float64), 1)
    if mode not in CLASS_WEIGHTS:
        raise BadInput(f"class weights must be one of {CLASS_WEIGHTS}")
    if mode == "off" or (mode == "auto" and counts_arr.max() < 3 * counts_arr.min()):
        return None
    weights = 1 / counts_arr if mode == "balanced" else 1 / np.sqrt(counts_arr)
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def make_optimizer(model: models.GraftModel, config: TrainConfig) -> torch.optim.Optimizer:
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


# ---------------------------------------------------------------------- the loop


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


# ---------------------------------------------------------------------- what the loop trains


@dataclass
class _Batches:
    """What the loop trains: a module, and loaders of (input, label) for train and val."""

    module: nn.Module
    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    sampler: object = None
    info: dict = field(default_factory=dict)


def _frames(split: data.Split) -> dict:
    return {s: split.manifest[split.manifest["split"] == s] for s in ("train", "val")}


def _image_batches(model: models.GraftModel, split: data.Split, root: Path, config: TrainConfig,
                   prep: Preprocessing) -> _Batches:
    """Loaders over images: decoded once into the decoded-image cache when fine-tuning (`cache`),
    or decoded every epoch (the plain loop, `--no-cache`)."""
    frames, index = _frames(split), {c: i for i, c in enumerate(split.classes)}

    def dataset(name: str, transform):
        frame = frames[name]
        paths, labels = [root / p for p in frame["path"]], [index[c] for c in frame["label"]]
        if config.cache:
            return DecodedDataset(paths, frame["sha1"].tolist(), labels, prep, transform)
        return data.ImageDataset(paths, labels, transform)

    if config.cache:
        train_tf, eval_tf = tensor_transforms(prep, config.augmentation)
    else:
        train_tf, eval_tf = train_transform(prep, config.augmentation), eval_transform(prep)
    train_set, val_set = dataset("train", train_tf), dataset("val", eval_tf)
    sampler = None
    if distributed.world_size() > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(train_set, seed=config.seed)
    train = runtime.make_loader(train_set, config.batch_size, shuffle=True, workers=config.workers,
                                seed=config.seed, sampler=sampler, drop_last=len(train_set) > config.batch_size,
                                collate_fn=data.collate_skip_none)
    val = runtime.make_loader(val_set, config.batch_size, workers=config.workers, collate_fn=data.collate_skip_none)
    return _Batches(model, train, val, sampler)


def _feature_batches(model: models.GraftModel, split: data.Split, root: Path, config: TrainConfig,
                     prep: Preprocessing, progress: bool, report=None) -> _Batches:
    """Cached backbone features for train (plain view + augmented views) and val; `report(phase,
    done, total)` hears how feature extraction goes."""
    cache = FeatureCache(model.backbone, prep)
    frames, index = _frames(split), {c: i for i, c in enumerate(split.classes)}

    def tensors(name: str, view: str, transform, seed=None, view_index=0):
        frame = frames[name]
        feats, ok = cache.features([root / p for p in frame["path"]], frame["sha1"].tolist(), view,
                                   transform, seed=seed, view_index=view_index, workers=config.workers,
                                   batch_size=max(config.batch_size, 32), progress=progress,
                                   on_progress=(lambda d, t: report(f"features {name} {view}", d, t)) if report else None)
        labels = np.array([index[c] for c in frame["label"]], dtype=np.int64)
        return torch.from_numpy(feats[ok]), torch.from_numpy(labels[ok])

    started = time.perf_counter()
    train_parts = [tensors("train", "eval", eval_transform(prep))]
    if config.augmentation != "none":
        augment = train_transform(prep, config.augmentation)
        for k in range(config.aug_views):
            train_parts.append(tensors("train", f"{config.augmentation}/{config.seed}/{k}", augment,
                                       seed=config.seed, view_index=k))
    val_x, val_y = tensors("val", "eval", eval_transform(prep))
    train_x = torch.cat([x for x, _ in train_parts])
    train_y = torch.cat([y for _, y in train_parts])
    info = {"cache_seconds": time.perf_counter() - started, "computed": cache.computed,
            "cache_key": cache.key}
    train = runtime.make_loader(torch.utils.data.TensorDataset(train_x, train_y), config.batch_size,
                                shuffle=True, workers=0, seed=config.seed)
    val = runtime.make_loader(torch.utils.data.TensorDataset(val_x, val_y), 1024, workers=0)
    return _Batches(model.head, train, val, None, info)


# ---------------------------------------------------------------------- prepare → plan


@dataclass
class Plan:
    """Everything the loop needs, prepared from a config: the split, the model and what trains,
    the loaders, the loss, the optimiser and schedule, and where the loop starts."""

    config: TrainConfig
    split: data.Split
    model: models.GraftModel
    module: nn.Module
    batches: _Batches
    device: torch.device
    channels_last: bool
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    state: LoopState


def load_split(config: TrainConfig, run: RunDir | None, resume: bool, progress: bool) -> data.Split:
    """The run's manifest when resuming, else a fresh scan and split (saved as the manifest)."""
    if resume and run is not None and run.manifest_file.is_file():
        return run.manifest(run.card().labels)
    root = data_root(config.data)
    index = data.scan(root, progress=progress)
    for row in index.skipped.itertuples():
        log.info(f"skipped {row.path}: {row.reason}" + (f" ({row.detail})" if row.detail else ""))
    split = data.split(index, config.fractions, config.seed, config.min_per_class)
    for label, count in split.dropped.items():
        log.info(f"dropped class {label!r}: {count} images < --min-per-class {config.min_per_class}")
    if len(split.classes) < 2:
        raise BadInput(f"{root}: need at least 2 classes with ≥ {config.min_per_class} images; "
                       f"found {len(split.classes)}")
    if run is not None:
        run.write_manifest(split)
    return split


def prepare(config: TrainConfig, run: RunDir | None, resume: bool = False, progress: bool = True,
            report=None, split: data.Split | None = None) -> Plan:
    """Scan and split (or reload the manifest), build the model, write the run's config and card,
    make the loaders (cached features when the backbone is frozen), loss, optimiser and schedule,
    and restore the loop's state from last.pt when resuming. `run` is None on torchrun ranks > 0."""
    seed_everything(config.seed)
    split = split if split is not None else load_split(config, run, resume, progress and run is not None)
    counts = split.counts()
    log.info(f"{len(split.classes)} classes; images per split: "
             + ", ".join(f"{s} {int(counts[s].sum())}" for s in counts.columns))
    prep = models.preprocessing_for(config.backbone, config.input_size)
    model = models.create(config.backbone, len(split.classes), config.freeze, config.head,
                          weights=config.weights, dropout=config.dropout, features=config.features)
    if run is not None:
        run.write_config(asdict(config))
        run.write_card(card_for(asdict(config), split.classes, prep))
    device = distributed.setup() or runtime.pick_device()
    model, channels_last = runtime.place(model, device, training=True)
    use_features = config.uses_cache and distributed.world_size() == 1
    batches = (_feature_batches(model, split, data_root(config.data), config, prep, progress and run is not None, report)
               if use_features else _image_batches(model, split, data_root(config.data), config, prep))
    if batches.info:
        log.info(f"feature cache {batches.info['cache_key']}: {batches.info['computed']} image views computed, "
                 f"the rest from the cache ({batches.info['cache_seconds']:.1f} s)")
    module = batches.module
    if module is model and run is not None:
        estimate = epoch_seconds(config.backbone, config.freeze, len(batches.train.dataset),
                                 len(batches.val.dataset), False, config.input_size)[0]
        log.info(f"estimated time per epoch on this machine: ~{estimate:.0f} s "
                 f"(~{estimate * config.epochs / 60:.1f} min for {config.epochs} epochs)")
    if distributed.world_size() > 1 and module is model:
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


# ---------------------------------------------------------------------- the loop


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
        # timed before `prepare` seeds the run: timing a model draws random numbers, and a time-limited
        # run's first stage must be the same model as the run without a limit
        per_image = scoring_seconds(config.backbone) if config.time_limit else 0.0
        limit = _time_limit(config, reporter, started)
        plan = prepare(config, run, resume, progress, reporter.phase if reporter else None)
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
        if limit is not None and limit.reached:
            status = "completed"  # out of time is a normal end: the best so far is the model
        if main and status == "completed" and converges(plan):
            converge_head(plan, run, store, run_id)
        if main and status == "completed" and limit is not None:
            from .stages import later_stages

            status = later_stages(config, run, store, run_id, reporter, watch, limit.deadline, plan, progress)
        if main and status == "completed":
            _evaluate(run, store, run_id, config, progress)
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
    from .stages import FIRST_WORDS, rich_applies

    deadline = started + float(config.time_limit)
    if reporter is not None:
        reporter.extra = {"stage": 1, "stages": 4 if rich_applies(config) else 3, "stage_words": FIRST_WORDS,
                          "deadline_wall": time.time() + (deadline - time.monotonic())}
    return Deadline(deadline)


def converges(plan: Plan) -> bool:
    """Whether the run's head is also fitted to convergence: a linear head on cached features."""
    return (plan.config.head_fit == "converge" and plan.config.head == "linear" and bool(plan.batches.info)
            and plan.state.best_val_acc is not None)


def fit_converged(plan: Plan):
    """The head fitted to convergence on the plan's cached features, with its class weights
    (`probe.FittedHead`: a logistic regression or a two-layer network, chosen on validation)."""
    from .probe import fit_head

    train_x, train_y = plan.batches.train.dataset.tensors
    val_x, val_y = plan.batches.val.dataset.tensors
    weights = plan.criterion.weight
    sample_weight = weights.cpu().numpy()[train_y.numpy()] if weights is not None else None
    return fit_head(train_x.numpy(), train_y.numpy(), val_x.numpy(), val_y.numpy(), len(plan.split.classes),
                    sample_weight)


MLP_LAYERS = ("head.0", "head.3")  # models.make_head("mlp"): Linear, ReLU, Dropout, Linear


def with_head(state: dict, fitted) -> dict:
    """A model state with its head replaced by a fitted one's: the last linear layer for a `linear`
    fit, the `mlp` head's two layers (in place of the whole head) for a network."""
    if fitted.kind == "mlp":
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        names = MLP_LAYERS
    else:
        names = (_linear_key(state),)
    for name, (weight, bias) in zip(names, fitted.layers):
        state[f"{name}.weight"], state[f"{name}.bias"] = torch.from_numpy(weight), torch.from_numpy(bias)
    return state


def keep_fitted(run: RunDir, state: dict, fitted, config: TrainConfig, classes: list[str]) -> None:
    """Save a model state with a fitted head as best.pt, and the card that names the head's kind."""
    run.save_best(with_head(state, fitted))
    run.write_card(card_for({**asdict(config), "head": fitted.kind}, classes,
                            models.preprocessing_for(config.backbone, config.input_size)))


def describe_head_fit(record: dict) -> str:
    """head_fit.json in one sentence: which last layer was kept, and the fitted one's figures."""
    from .probe import head_words

    fitted = head_words(record.get("kind", "linear"), record.get("penalty", record.get("C")))  # C: older runs
    if record["chosen"] == "converged":
        return (f"last layer **fitted to convergence**: {fitted}, validation accuracy {record['val_acc']:.1%} against "
                f"{record['loop_val_acc']:.1%} for the training loop's best epoch")
    return (f"last layer **the training loop's** (validation accuracy {record['loop_val_acc']:.1%}); fitted to "
            f"convergence, {fitted} reached {record['val_acc']:.1%}")


def converge_head(plan: Plan, run: RunDir, store: RunStore, run_id: str) -> dict:
    """Fit the head to convergence on the cached features (`fit_converged`) and keep it as best.pt
    (with a card naming its kind) when its validation score (the mean of accuracy and balanced
    accuracy) is `clearly_better` than the loop's best epoch's; the choice is saved as
    head_fit.json and logged. Seconds: a few fits on features already in memory."""
    from .probe import clearly_better, val_score

    store.set_progress(run_id, phase="converge")
    started = time.perf_counter()
    fitted = fit_converged(plan)
    val_x, val_y = plan.batches.val.dataset.tensors
    state = run.load_best()
    linear = _linear_key(state)
    with torch.inference_mode():
        loop_logits = val_x @ state[f"{linear}.weight"].T + state[f"{linear}.bias"]
    loop_score, loop_acc, loop_balanced = val_score(val_y.numpy(), loop_logits.argmax(1).numpy())
    chosen = "converged" if clearly_better(fitted.val_score, loop_score, len(val_y)) else "loop"
    if chosen == "converged":
        keep_fitted(run, state, fitted, plan.config, plan.split.classes)
        store.update(run_id, best_val_acc=fitted.val_acc)
    record = {"chosen": chosen, **fitted.record(), "val_acc": fitted.val_acc, "val_balanced": fitted.val_balanced,
              "val_score": fitted.val_score, "loop_val_acc": loop_acc, "loop_val_balanced": loop_balanced,
              "loop_val_score": loop_score, "loop_best_epoch": plan.state.best_epoch, "tried": fitted.tried,
              "seconds": round(time.perf_counter() - started, 1)}
    run.write_head_fit(record)
    log.info(f"head fitted to convergence, {fitted.words}: validation accuracy {fitted.val_acc:.4f}, "
             f"balanced {fitted.val_balanced:.4f}, against the loop's {loop_acc:.4f}, {loop_balanced:.4f} → "
             f"{'the converged head is kept' if chosen == 'converged' else 'the loop head is kept'}"
             f" ({record['seconds']:.1f} s)")
    return record


def _linear_key(state: dict) -> str:
    """The state-dict prefix of the head's (last) linear layer."""
    return max((k[:-len(".weight")] for k in state if k.startswith("head.") and k.endswith(".weight")),
               key=lambda k: int(k.rsplit(".", 1)[-1]))


def _evaluate(run: RunDir, store: RunStore, run_id: str, config: TrainConfig, progress: bool) -> None:
    from .evaluate import evaluate_run

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
        return fit(config, store.root, run_id=run_id, progress=progress, resume=True)
    finally:
        store.release(run_id)
