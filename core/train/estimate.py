"""Rough training-time estimates for this machine, before a run starts."""
from __future__ import annotations

import time
from functools import lru_cache

import torch

from core.models import backbones

ONNX_SPEEDUP = 2.0  # ONNX Runtime reads photos about this much faster than PyTorch on a CPU (docs/benchmarks.md)


@lru_cache(maxsize=32)
def seconds_per_image(backbone: str, freeze: str, input_size: int | None = None) -> tuple[float, float]:
    """(training step, inference) seconds per image on this machine, timed the way the product runs
    them on a batch of 8 random images: each after a call of the same shape (the first call sets up
    oneDNN's kernels and costs several times a later one), the better of two; inference in the memory
    format `runtime.place` picks, a frozen backbone's reading divided by ONNX_SPEEDUP where ONNX Runtime
    does it (`features.onnx_reads`)."""
    from core.base.runtime import channels_last_for, configure_threads
    from core.models.features import onnx_reads

    configure_threads()
    prep = backbones.preprocessing_for(backbone, input_size)
    model = backbones.create(backbone, 4, freeze, pretrained=False).eval()
    x = torch.randn(8, 3, prep.input_size, prep.input_size)
    cpu = torch.device("cpu")
    if freeze == "head":
        if channels_last_for(model, cpu, training=False):
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            infer = _timed(lambda: model(x)) / len(x)
        infer /= ONNX_SPEEDUP if onnx_reads() else 1.0
        return infer, infer
    with torch.inference_mode():  # a fine-tuning run's validation: the training layout
        infer = _timed(lambda: model(x)) / len(x)
    model.train()
    return _timed(lambda: model(x).sum().backward()) / len(x), infer


def _timed(call) -> float:
    """Seconds of the better of two calls after one warm-up call."""
    call()
    times = []
    for _ in range(2):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


VIEW_COST = 0.6  # one of a photo's 8 views against reading the photo alone: the 8 are decoded once and run in
# one batch


def reading_factor(features: str) -> float:
    """A feature view's reading time in single readings of each photo: 1, or the rich view's 8
    orientations at VIEW_COST each (`pooled` reads each photo once, like `plain`)."""
    return backbones.DihedralViews.views_per_image * VIEW_COST if features == "rich" else 1.0


LOOP_OVERHEAD = 1.3  # what a real pass adds to the network's own timed time: decoding, the loaders, the
# optimiser's steps


def epoch_seconds(backbone: str, freeze: str, n_train: int, n_val: int, cached: bool = True,
                  input_size: int | None = None) -> tuple[float, float]:
    """(first epoch, later epochs) in seconds. A cached frozen backbone pays one forward pass
    over every image in its first epoch, then trains the head in well under a second."""
    train, infer = seconds_per_image(backbone, freeze, input_size)
    if freeze == "head" and cached:
        return (n_train + n_val) * infer * LOOP_OVERHEAD, 0.5
    per_epoch = (n_train * train + n_val * infer) * LOOP_OVERHEAD
    return per_epoch, per_epoch


@lru_cache(maxsize=16)
def _feature_cache_key(backbone: str, features: str) -> str | None:
    """The feature cache holding this frozen backbone's view (None where the model cannot be built here)."""
    from core.models.features import cache_key

    try:
        model = backbones.create(backbone, 2, "head", features=features)
    except Exception:  # no weights here, a view this backbone lacks: every photo counts as unread
        return None
    return cache_key(model.backbone, backbones.preprocessing_for(backbone))


def photos_to_read(backbone: str, features: str, shas: list[str]) -> int:
    """How many of these photos (by SHA-1) a frozen run would still read: those whose features of this
    view are not in the feature cache yet (a rerun on the same photos reads none)."""
    from core.models.features import cached_count

    key = _feature_cache_key(backbone, features)
    return len(shas) - (cached_count(key, shas) if key else 0)


def scoring_seconds(backbone: str) -> float:
    """Seconds to score one photo with a fine-tuned network through ONNX Runtime (timed on this machine)."""
    return seconds_per_image(backbone, "partial", None)[1] / ONNX_SPEEDUP


def evaluation_reserve(n_images: int, per_image: float) -> float:
    """Seconds kept back for what follows training: scoring the test photos and reading every photo
    once for the unfamiliar-photo detector (with a fine-tuned network: one forward pass each), plus
    exporting that network once."""
    return 15.0 + n_images * per_image
