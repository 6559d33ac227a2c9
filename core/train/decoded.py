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

from core.base.errors import log
from core.base.storage import atomic_write, cache_home
from core.data.images import ImageError, load_rgb
from core.models.preprocess import Preprocessing, square


def cache_dir(prep: Preprocessing) -> Path:
    path = cache_home() / "decoded" / f"{prep.resize_size}-{prep.interpolation}"
    path.mkdir(parents=True, exist_ok=True)
    return path


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
            log.warning("skipping %s", err)
            return None
        atomic_write(file, lambda f: np.save(f, arr))
        return arr

    def __getitem__(self, i: int):
        arr = self.pixels(i)
        if arr is None:
            return None
        return self.transform(torch.from_numpy(np.array(arr)).permute(2, 0, 1)), self.labels[i]
