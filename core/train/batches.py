"""What the loop trains on: loaders of (input, label) over images (decoded once into the decoded-image
cache, or every epoch) or over a frozen backbone's cached features."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.base import distributed, runtime
from core.data import catalog
from core.models import backbones
from core.models.features import FeatureCache
from core.models.preprocess import (
    ImageDataset,
    Preprocessing,
    collate_skip_none,
    eval_transform,
    tensor_transforms,
    train_transform,
)
from core.train.config import TrainConfig
from core.train.decoded import DecodedDataset


@dataclass
class Batches:
    """What the loop trains: a module, and loaders of (input, label) for train and val."""

    module: nn.Module
    train: torch.utils.data.DataLoader
    val: torch.utils.data.DataLoader
    sampler: object = None
    info: dict = field(default_factory=dict)


def _frames(split: catalog.Split) -> dict:
    return {s: split.manifest[split.manifest["split"] == s] for s in ("train", "val")}


def image_batches(model: backbones.GraftModel, split: catalog.Split, root: Path, config: TrainConfig,
                   prep: Preprocessing) -> Batches:
    """Loaders over images: decoded once into the decoded-image cache when fine-tuning (`cache`),
    or decoded every epoch (the plain loop, `--no-cache`)."""
    frames, index = _frames(split), {c: i for i, c in enumerate(split.classes)}

    def dataset(name: str, transform):
        frame = frames[name]
        paths, labels = [root / p for p in frame["path"]], [index[c] for c in frame["label"]]
        if config.cache:
            return DecodedDataset(paths, frame["sha1"].tolist(), labels, prep, transform)
        return ImageDataset(paths, labels, transform)

    if config.cache:
        train_tf, eval_tf = tensor_transforms(prep, config.augmentation)
    else:
        train_tf, eval_tf = train_transform(prep, config.augmentation), eval_transform(prep)
    train_set, val_set = dataset("train", train_tf), dataset("val", eval_tf)
    sampler = None
    if distributed.active():
        sampler = torch.utils.data.distributed.DistributedSampler(train_set, seed=config.seed)
    train = runtime.make_loader(train_set, config.batch_size, shuffle=True, workers=config.workers,
                                seed=config.seed, sampler=sampler, drop_last=len(train_set) > config.batch_size,
                                collate_fn=collate_skip_none)
    val = runtime.make_loader(val_set, config.batch_size, workers=config.workers, collate_fn=collate_skip_none)
    return Batches(model, train, val, sampler)


def feature_batches(model: backbones.GraftModel, split: catalog.Split, root: Path, config: TrainConfig,
                     prep: Preprocessing, progress: bool, report=None) -> Batches:
    """Cached backbone features for train (plain view + augmented views) and val; `report(phase,
    done, total)` hears how feature extraction goes."""
    cache = FeatureCache(model.backbone, prep, shared=True)  # under torchrun, each rank reads its share
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
    return Batches(model.head, train, val, None, info)
