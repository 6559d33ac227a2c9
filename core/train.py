"""Training: one readable loop, used for both paths.

- `head` mode with the feature cache (default): the frozen backbone runs once per image (and
  once per augmented view), and the loop trains the head on cached features.
- `partial` / `full` (or `--no-cache`): the same loop over decoded, augmented images.

Either way: AdamW or SGD, cosine or one-cycle schedule, label smoothing, class weights, early
stopping on val loss, best (by val loss) and last checkpoints, resume, a stop request checked
between batches, metrics written to the run store as training goes.
"""
from __future__ import annotations

import math
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
from tqdm.auto import tqdm

from . import __version__, data, distributed, models
from .choices import CLASS_WEIGHTS, OPTIMIZERS, SCHEDULES
from .features import FeatureCache, configure_threads, default_workers, make_loader, pick_device
from .runs import RunStore
from .storage import load_torch, read_json, save_torch, write_json
from .decoded import DecodedDataset, tensor_transforms
from .estimate import epoch_seconds
from .transforms import eval_transform, train_transform



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

    def __post_init__(self) -> None:
        self.data = str(self.data)
        self.fractions = tuple(self.fractions)
        if self.freeze not in models.FREEZE_MODES:
            raise ValueError(f"freeze must be one of {models.FREEZE_MODES}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}")

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


class StopTraining(Exception):
    """Raised between batches when a stop was requested."""


@dataclass
class _Stopper:
    store: RunStore | None
    run_id: str
    every_s: float = 0.5
    _last: float = 0.0
    signalled: bool = False

    def check(self) -> None:
        now = time.monotonic()
        if self.signalled and distributed.world_size() == 1:
            raise StopTraining
        if distributed.world_size() == 1 and now - self._last < self.every_s:
            return  # under torchrun every rank checks every batch, so the broadcasts line up
        self._last = now
        flag = self.signalled or bool(self.store and self.store.stop_requested(self.run_id))
        if distributed.broadcast_flag(flag):
            raise StopTraining


@dataclass
class _Batches:
    """What the loop trains: a module, and loaders of (input, label) for train and val."""

    module: nn.Module
    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    sampler: object = None
    info: dict = field(default_factory=dict)


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
        raise ValueError(f"class weights must be one of {CLASS_WEIGHTS}")
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


def model_card(config: TrainConfig, classes: list[str], prep: models.Preprocessing,
               metrics: dict | None = None) -> dict:
    """The run's model.json: everything needed to rebuild and use the model."""
    return {"format": "graft-model", "version": __version__, "backbone": config.backbone,
            "head": config.head, "freeze": config.freeze, "dropout": config.dropout,
            "num_classes": len(classes), "labels": classes, "preprocessing": prep.to_dict(),
            "checkpoint": "best.pt", "config": asdict(config), "metrics": metrics or {}}


# ---------------------------------------------------------------------- the loop


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision on a GPU: bf16 where supported, else fp16 (with a grad scaler); none on CPU
    (bf16 autocast is ~4x slower on CPUs without AMX)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def run_epoch(module: nn.Module, loader, criterion: nn.Module, device: torch.device,
              optimizer: torch.optim.Optimizer | None = None, scheduler=None,
              on_batch=None, bar=None, scaler: torch.amp.GradScaler | None = None) -> tuple[float, float]:
    """One pass over `loader`; trains when an optimizer is given. Returns (mean loss, accuracy)."""
    training = optimizer is not None
    module.train(training)
    dtype = amp_dtype(device)
    total_loss, correct, seen = 0.0, 0, 0
    with torch.set_grad_enabled(training):
        for batch in loader:
            if batch is None:
                continue
            inputs, labels = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            if dtype is not None and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
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
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if on_batch:
                on_batch(loss.item())
    total_loss, correct, seen = distributed.all_reduce_sum([total_loss, correct, seen])
    return total_loss / max(seen, 1), correct / max(seen, 1)


def _image_batches(model: models.GraftModel, split: data.Split, root: Path, config: TrainConfig,
                   prep: models.Preprocessing) -> _Batches:
    """Loaders over images: decoded once into the decoded-image cache when fine-tuning (`cache`),
    or decoded every epoch (the plain loop, `--no-cache`)."""
    frames = {s: split.manifest[split.manifest["split"] == s] for s in ("train", "val")}
    index = {c: i for i, c in enumerate(split.classes)}

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
    workers = default_workers() if config.workers is None else config.workers
    train = torch.utils.data.DataLoader(
        train_set, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
        num_workers=workers, collate_fn=data.collate_skip_none, drop_last=len(train_set) > config.batch_size,
        worker_init_fn=_one_thread if workers else None,
        generator=torch.Generator().manual_seed(config.seed), pin_memory=torch.cuda.is_available())
    val = make_loader(val_set, config.batch_size, workers=workers)
    return _Batches(model, train, val, sampler)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def _feature_batches(model: models.GraftModel, split: data.Split, root: Path, config: TrainConfig,
                     prep: models.Preprocessing, progress: bool, report=None) -> _Batches:
    """Cached backbone features for train (plain view + augmented views) and val; `report(phase,
    done, total)` hears how feature extraction goes."""
    cache = FeatureCache(model.backbone, prep)
    rows = {s: split.manifest[split.manifest["split"] == s] for s in ("train", "val")}
    index = {c: i for i, c in enumerate(split.classes)}

    def tensors(name: str, view: str, transform, seed=None, view_index=0):
        frame = rows[name]
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
    generator = torch.Generator().manual_seed(config.seed)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train_x, train_y),
                                        batch_size=config.batch_size, shuffle=True, generator=generator)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(val_x, val_y), batch_size=1024)
    return _Batches(model.head, train, val, None, info)


def fit(config: TrainConfig, runs_root: str | Path = "runs", run_id: str | None = None,
        progress: bool = True, resume: bool = False, on_epoch=None) -> str:
    """Train according to `config` into the run store at `runs_root`; returns the run id.

    The run ends as `completed`, `stopped` (stop request, SIGTERM or Ctrl-C; best checkpoint
    kept) or `failed` (with the error text). `on_epoch(epoch, model)` is called after each epoch.
    """
    configure_threads()
    distributed.setup()
    main = distributed.is_main()
    store = RunStore(runs_root) if main else None
    if main and run_id is None:
        run_id = store.create(asdict(config), config.name)
    run_id = run_id or "worker"
    stopper = _Stopper(store, run_id)
    previous = signal.getsignal(signal.SIGTERM)
    handle_signals = main and threading.current_thread() is threading.main_thread()
    if main:
        store.mark_running(run_id)
    if handle_signals:
        signal.signal(signal.SIGTERM, lambda *_: setattr(stopper, "signalled", True))
    try:
        status = _fit(config, store, run_id, stopper, progress, resume, on_epoch)
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


def _fit(config: TrainConfig, store: RunStore | None, run_id: str, stopper: _Stopper,
         progress: bool, resume: bool, on_epoch=None) -> str:
    main = store is not None
    log = print if main else (lambda *_: None)
    seed_everything(config.seed)
    root = Path(config.data).expanduser()
    run_dir = store.run_dir(run_id) if main else None
    manifest_path = run_dir / "manifest.csv" if main else None
    if resume and main and manifest_path.is_file():
        split = data.load_manifest(manifest_path, read_json(run_dir / "model.json")["labels"])
    else:
        index = data.scan(root, progress=progress and main)
        for row in index.skipped.itertuples():
            log(f"skipped {row.path}: {row.reason}" + (f" ({row.detail})" if row.detail else ""))
        split = data.split(index, config.fractions, config.seed, config.min_per_class)
        for label, count in split.dropped.items():
            log(f"dropped class {label!r}: {count} images < --min-per-class {config.min_per_class}")
        if main:
            data.save_manifest(split, manifest_path)
    if len(split.classes) < 2:
        raise ValueError(f"{root}: need at least 2 classes with ≥ {config.min_per_class} images; "
                         f"found {len(split.classes)}")
    counts = split.counts()
    log(f"{len(split.classes)} classes; images per split: "
        + ", ".join(f"{s} {int(counts[s].sum())}" for s in counts.columns))
    prep = models.preprocessing_for(config.backbone, config.input_size)
    model = models.create(config.backbone, len(split.classes), config.freeze, config.head,
                          weights=config.weights, dropout=config.dropout)
    if main:
        write_json(run_dir / "config.json", asdict(config))
        write_json(run_dir / "model.json", model_card(config, split.classes, prep))
    device = distributed.setup() or pick_device()
    model.to(device)
    if device.type == "cuda" and models.uses_channels_last(model):
        model.to(memory_format=torch.channels_last)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)
    def report(phase: str, done: int, total: int) -> None:
        if main and (done == total or time.monotonic() - last_report[0] > 1.0):
            last_report[0] = time.monotonic()
            store.set_progress(run_id, phase=phase, phase_done=done, phase_total=total)

    last_report = [0.0]
    batches = (_feature_batches(model, split, root, config, prep, progress and main, report)
               if config.uses_cache and distributed.world_size() == 1
               else _image_batches(model, split, root, config, prep))
    module = batches.module
    if batches.info:
        log(f"feature cache {batches.info['cache_key']}: {batches.info['computed']} image views computed, "
            f"the rest from the cache ({batches.info['cache_seconds']:.1f} s)")
    if module is model and main:
        estimate = epoch_seconds(config.backbone, config.freeze, len(batches.train.dataset),
                                 len(batches.val.dataset), False, config.input_size)[0]
        log(f"estimated time per epoch on this machine: ~{estimate:.0f} s "
            f"(~{estimate * config.epochs / 60:.1f} min for {config.epochs} epochs)")
    if distributed.world_size() > 1 and module is model:
        module = torch.nn.parallel.DistributedDataParallel(model)
    weights = class_weights(counts["train"].tolist(), config.class_weights)
    if weights is not None:
        log("class weights: " + ", ".join(f"{c} {w:.2f}" for c, w in zip(split.classes, weights.tolist())))
        weights = weights.to(device)
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, max(1, len(batches.train)))
    state = {"epoch": 0, "best_val_loss": math.inf, "best_val_acc": None, "best_epoch": None, "bad_epochs": 0}
    if resume and main and (run_dir / "last.pt").is_file():
        last = load_torch(run_dir / "last.pt")
        model.load_state_dict(last["model"])
        optimizer.load_state_dict(last["optimizer"])
        scheduler.load_state_dict(last["scheduler"])
        state.update({k: last[k] for k in state})
        store.truncate_metrics(run_id, state["epoch"])
        log(f"resuming after epoch {state['epoch']}")
    steps = len(batches.train)
    step_counter = [state["epoch"] * steps]
    pending: list[tuple[int, int, float]] = []
    last_flush = [time.monotonic()]
    started = time.monotonic()

    def on_batch(loss: float) -> None:
        step_counter[0] += 1
        if main:
            pending.append((epoch, step_counter[0], loss))
            if time.monotonic() - last_flush[0] > 1.0:
                _flush()
        stopper.check()

    def _flush() -> None:
        if pending:
            store.log_batches(run_id, pending)
            done = step_counter[0]
            elapsed = time.monotonic() - started
            total = config.epochs * steps
            eta = elapsed / max(done - start_step, 1) * (total - done)
            store.set_progress(run_id, epoch=epoch, epochs=config.epochs, step=done, steps=total,
                               elapsed=elapsed, eta=eta, bad_epochs=state["bad_epochs"],
                               best_val_acc=state["best_val_acc"], best_epoch=state["best_epoch"])
            pending.clear()
        last_flush[0] = time.monotonic()

    start_step = step_counter[0]
    status = "completed"
    epoch = state["epoch"]
    epochs = range(state["epoch"] + 1, config.epochs + 1)
    bar = tqdm(total=len(epochs) * steps, desc="train", unit="batch", disable=not (progress and main))
    try:
        for epoch in epochs:
            if batches.sampler is not None:
                batches.sampler.set_epoch(epoch)
            t0 = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            train_loss, train_acc = run_epoch(module, batches.train, criterion, device, optimizer,
                                              scheduler, on_batch, bar, scaler)
            val_loss, val_acc = run_epoch(module, batches.val, criterion, device)
            seconds = time.perf_counter() - t0
            improved = val_loss < state["best_val_loss"]
            if improved:
                state.update(best_val_loss=val_loss, best_val_acc=val_acc, best_epoch=epoch, bad_epochs=0)
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            if main:  # metrics before last.pt: a kill in between replays the epoch on resume, losing nothing
                if improved:
                    save_torch(run_dir / "best.pt", model.state_dict())
                store.log_epoch(run_id, epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss,
                                val_acc=val_acc, lr=lr, seconds=seconds)
                store.update(run_id, best_epoch=state["best_epoch"], best_val_loss=state["best_val_loss"],
                             best_val_acc=state["best_val_acc"])
                save_torch(run_dir / "last.pt", {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                                 "scheduler": scheduler.state_dict(), **state})
                _flush()
                bar.write(f"epoch {epoch}/{config.epochs}: train loss {train_loss:.4f} acc {train_acc:.3f} | "
                          f"val loss {val_loss:.4f} acc {val_acc:.3f} | {seconds:.1f} s"
                          + ("  *best*" if improved else f"  (no improvement {state['bad_epochs']}/{config.patience})"))
            if on_epoch is not None:
                on_epoch(epoch, model)
            if state["bad_epochs"] >= config.patience:
                log(f"early stopping: val loss has not improved for {config.patience} epochs")
                break
    except StopTraining:
        status = "stopped"
        log(f"stop requested: ending the run; best checkpoint (epoch {state['best_epoch']}) kept")
    finally:
        bar.close()
    if not main:
        return status
    if status == "stopped":
        raise StopTraining
    from .evaluate import evaluate_run

    result = evaluate_run(run_dir, tta=config.tta, progress=progress, store=store, run_id=run_id)
    log(f"test accuracy {result['accuracy']:.4f} on {result['n']} {result['split']} images")
    return status


def resume(run_ref: str, runs_root: str | Path = "runs", progress: bool = True) -> str:
    """Continue a run from its last checkpoint (same manifest, same config)."""
    run_id, run_dir = RunStore(runs_root).resolve(run_ref)
    config = TrainConfig.from_dict(read_json(run_dir / "config.json"))
    return fit(config, run_dir.parent, run_id=run_id, progress=progress, resume=True)
