"""The decoded-image cache for fine-tuning on CPU (`partial` / `full`).

Each image is decoded once, resized (shorter side to the eval resize size) and centre-cropped to
a square, and kept as a uint8 `.npy` file keyed by its content hash; epochs then read it
memory-mapped instead of re-decoding the JPEG. Augmentation (RandomResizedCrop, flip, ...) runs
on that square; evaluation centre-crops it exactly as the eval transform would.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from .images import ImageError, load_rgb
from .models import Preprocessing
from .storage import atomic_write, cache_home


def cache_dir(prep: Preprocessing) -> Path:
    path = cache_home() / "decoded" / f"{prep.resize_size}-{prep.interpolation}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def square(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """Shorter side → resize size, centre crop to a square: uint8 HWC."""
    size = prep.resize_size
    resize = v2.Compose([v2.Resize(size, interpolation=InterpolationMode(prep.interpolation), antialias=True),
                         v2.CenterCrop(size)])
    return np.asarray(resize(image), dtype=np.uint8)


class DecodedDataset(torch.utils.data.Dataset):
    """(uint8 CHW tensor through `transform`, label); decodes a file only the first time."""

    def __init__(self, paths: list[Path], shas: list[str], labels: list[int], prep: Preprocessing,
                 transform: Callable):
        self.paths, self.shas, self.labels = list(paths), list(shas), list(labels)
        self.prep, self.transform, self.folder = prep, transform, cache_dir(prep)

    def __len__(self) -> int:
        return len(self.paths)

    def pixels(self, i: int) -> np.ndarray | None:
        file = self.folder / f"{self.shas[i]}.npy"
        size = self.prep.resize_size
        try:
            arr = np.load(file, mmap_mode="r")
            if arr.shape == (size, size, 3) and arr.dtype == np.uint8:
                return arr
        except (OSError, ValueError):
            pass  # missing or torn: decode again
        try:
            arr = square(load_rgb(self.paths[i]), self.prep)
        except ImageError as err:
            print(f"warning: skipping {err}", flush=True)
            return None
        atomic_write(file, lambda f: np.save(f, arr))
        return arr

    def __getitem__(self, i: int):
        arr = self.pixels(i)
        if arr is None:
            return None
        return self.transform(torch.from_numpy(np.array(arr)).permute(2, 0, 1)), self.labels[i]


def tensor_transforms(prep: Preprocessing, level: str) -> tuple[Callable, Callable]:
    """(train, eval) transforms for the cached uint8 squares."""
    from .transforms import train_transform

    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(prep.mean, prep.std)]
    evaluate = v2.Compose([v2.CenterCrop(prep.input_size), *tail])
    if level == "none":
        return evaluate, evaluate
    steps = [t for t in train_transform(prep, level).transforms if not isinstance(t, (v2.ToImage, v2.ToDtype, v2.Normalize))]
    return v2.Compose([*steps, *tail]), evaluate


