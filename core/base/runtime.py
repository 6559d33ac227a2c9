"""Where and how tensors run: device, threads, mixed precision, memory format, DataLoaders.

One policy for training, feature extraction, evaluation and prediction:
- the GPU when there is one (mixed precision: bf16 where supported, else fp16 with a grad
  scaler), else the CPU in fp32 (bf16 autocast is ~4× slower on CPUs without AMX);
- torch threads = the cores (shared between the processes of a torchrun launch on one machine),
  DataLoader workers = cores − 1 (max 4) with one thread each, so decoding runs beside the model;
- channels_last for CNN inference (1.8× on CPU) and for GPU training; not for CPU training,
  where it is slower.
"""
from __future__ import annotations

import os
from contextlib import AbstractContextManager

import torch
from torch import nn

from core.base.cores import cpu_count  # noqa: F401  (runtime.cpu_count: the cores, torch-free for the scan)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_workers() -> int:
    """Decoding workers beside the model: one on a 2-core machine, never more than cores - 1 (the cores of
    this process's share when torchrun starts several on one machine)."""
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(max(1, cpu_count() // local) - 1, 4))


def configure_threads() -> int:
    """torch threads = cores ÷ processes of this launch on this machine; returns the count."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = max(1, cpu_count() // max(local, 1))
    torch.set_num_threads(threads)
    return threads


def one_thread(_: int = 0) -> None:
    """DataLoader worker init: one torch thread, so workers × threads never exceed the cores."""
    torch.set_num_threads(1)


def make_loader(dataset, batch_size: int, *, shuffle: bool = False, workers: int | None = None, seed: int = 0,
                sampler=None, drop_last: bool = False, collate_fn=None) -> torch.utils.data.DataLoader:
    """A DataLoader with the project's worker policy (seeded shuffling, pinned memory on a GPU)."""
    workers = default_workers() if workers is None else workers
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        num_workers=workers, collate_fn=collate_fn, worker_init_fn=one_thread if workers else None,
        drop_last=drop_last, pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed), prefetch_factor=4 if workers else None)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on a GPU (bf16 where supported, else fp16); None on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device) -> AbstractContextManager:
    dtype = amp_dtype(device)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 training (a no-op scaler otherwise)."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)


def uses_channels_last(module: nn.Module) -> bool:
    """CNNs run faster in channels_last for inference (PERF.md: 1.8× on CPU)."""
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def channels_last_for(module: nn.Module, device: torch.device, training: bool) -> bool:
    """Whether inputs should be channels_last: CNN inference anywhere, CNN training on a GPU."""
    return uses_channels_last(module) and (not training or device.type == "cuda")


def place(module: nn.Module, device: torch.device, training: bool = False) -> tuple[nn.Module, bool]:
    """Move `module` to `device` in the memory format the policy wants → (module, channels_last)."""
    module = module.to(device)
    channels_last = channels_last_for(module, device, training)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module, channels_last


def to_input(batch: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    batch = batch.to(device, non_blocking=True)
    if channels_last and batch.dim() == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def lower_priority(increment: int = 10) -> int:
    """Run this process below the dashboard server (`nice`); returns the new niceness."""
    try:
        return os.nice(increment)
    except OSError:  # pragma: no cover  (not permitted: keep the current priority)
        return os.nice(0)
