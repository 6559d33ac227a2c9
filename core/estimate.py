"""Rough training-time estimates for this machine, before a run starts."""
from __future__ import annotations

import time
from functools import lru_cache

import torch

from . import models


@lru_cache(maxsize=32)
def seconds_per_image(backbone: str, freeze: str, input_size: int | None = None) -> tuple[float, float]:
    """(training step, inference) seconds per image, timed on a small random batch."""
    from .runtime import configure_threads

    configure_threads()
    prep = models.preprocessing_for(backbone, input_size)
    model = models.create(backbone, 4, freeze, pretrained=False)
    x = torch.randn(8, 3, prep.input_size, prep.input_size)
    model.eval()
    with torch.inference_mode():
        model(x[:2])  # warm-up
        start = time.perf_counter()
        model(x)
        infer = (time.perf_counter() - start) / len(x)
    if freeze == "head":
        return infer, infer
    model.train()
    start = time.perf_counter()
    model(x).sum().backward()
    return (time.perf_counter() - start) / len(x), infer


VIEW_COST = 0.6  # one of a photo's 8 views against reading the photo alone: the 8 are decoded once and run in
# one batch (ELPV, ONNX Runtime on 2 cores: 215 s for 2,219 photos × 8 against 44.7 s for the 2,219 alone)


def reading_factor(features: str) -> float:
    """A feature view's reading time in single readings of each photo: 1, or the rich view's 8
    orientations at VIEW_COST each (`pooled` reads each photo once, like `plain`)."""
    return models.DihedralViews.views_per_image * VIEW_COST if features == "rich" else 1.0


def epoch_seconds(backbone: str, freeze: str, n_train: int, n_val: int, cached: bool = True,
                  input_size: int | None = None) -> tuple[float, float]:
    """(first epoch, later epochs) in seconds. A cached frozen backbone pays one forward pass
    over every image in its first epoch, then trains the head in well under a second."""
    train, infer = seconds_per_image(backbone, freeze, input_size)
    if freeze == "head" and cached:
        return (n_train + n_val) * infer, 0.5
    per_epoch = n_train * train + n_val * infer
    return per_epoch, per_epoch
