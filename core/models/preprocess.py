"""Preprocessing and every rendering of it.

A backbone's `Preprocessing` (input size, resize ratio, interpolation, mean/std) is the model card's
record of what the network expects. Everything that turns an image into the network's input is
built here, from that one record:

- `eval_transform`: resize the shorter side to `resize_size`, centre-crop `input_size`, normalise
  (evaluation, prediction, export parity);
- `train_transform`: the augmentation presets (none < light < standard < strong) for PIL images;
- `tensor_transforms`: the same presets for the decoded-image cache's uint8 squares (`square`);
- `preview`: what the augmentation does to one image, as pictures (the Dataset page);
- `crop_box`: where the centre crop sits in the original image (Grad-CAM draws its map there);
- `numpy_input`: the numpy twin that an export's standalone `graft_predict.py` runs (the same
  code, from `export_loader.py`), parity-tested against `eval_transform`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from core.base.errors import BadCheckpoint, BadInput, log
from core.data.images import ImageError, load_rgb
from core.models.choices import AUG_LEVELS

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


@dataclass(frozen=True)
class Preprocessing:
    input_size: int = 224
    crop_pct: float = 0.875  # resize the shorter side to input_size / crop_pct, then centre-crop
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"

    @property
    def resize_size(self) -> int:
        return int(round(self.input_size / self.crop_pct))

    def to_dict(self) -> dict:
        return {**asdict(self), "resize_size": self.resize_size, "crop": "center"}

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        """Read a model card's preprocessing, refusing values no trained model could have."""
        try:
            prep = cls(int(data["input_size"]), float(data["crop_pct"]), tuple(map(float, data["mean"])),
                       tuple(map(float, data["std"])), str(data["interpolation"]))
        except (KeyError, TypeError, ValueError) as err:
            raise BadCheckpoint(f"preprocessing is incomplete or malformed ({type(err).__name__}: {err})") from None
        if not 16 <= prep.input_size <= 1024 or not 0.3 <= prep.crop_pct <= 1.0:
            raise BadCheckpoint(f"preprocessing input_size {prep.input_size} / crop_pct {prep.crop_pct} "
                                "is out of range (16–1024 px, 0.3–1.0)")
        if len(prep.mean) != 3 or len(prep.std) != 3 or min(prep.std) <= 0:
            raise BadCheckpoint("preprocessing mean/std must be three numbers (std > 0)")
        if prep.interpolation not in INTERPOLATIONS:
            raise BadCheckpoint(f"preprocessing interpolation {prep.interpolation!r} is not one of {INTERPOLATIONS}")
        return prep

    @property
    def interpolation_mode(self) -> InterpolationMode:
        return InterpolationMode(self.interpolation)


# ---------------------------------------------------------------------- pieces


def _resize_crop(prep: Preprocessing) -> list:
    return [v2.Resize(prep.resize_size, interpolation=prep.interpolation_mode, antialias=True),
            v2.CenterCrop(prep.input_size)]


def _normalise(prep: Preprocessing) -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(prep.mean, prep.std)]


def _augment(prep: Preprocessing, level: str) -> list:
    """The geometric and colour steps of an augmentation preset (no tensor conversion)."""
    if level not in AUG_LEVELS:
        raise BadInput(f"unknown augmentation {level!r}; choose one of {', '.join(AUG_LEVELS)}")
    if level == "none":
        return []
    interp = prep.interpolation_mode
    scale = {"light": (0.6, 1.0), "standard": (0.25, 1.0), "strong": (0.08, 1.0)}[level]
    steps = [v2.RandomResizedCrop(prep.input_size, scale=scale, interpolation=interp, antialias=True),
             v2.RandomHorizontalFlip()]
    if level == "standard":
        steps.append(v2.ColorJitter(0.2, 0.2, 0.2))
    if level == "strong":
        steps += [v2.ColorJitter(0.3, 0.3, 0.3, 0.05), v2.TrivialAugmentWide(interpolation=interp)]
    return steps


# ---------------------------------------------------------------------- renderings


class ThreeChannels(torch.nn.Module):
    """A one-channel (greyscale) image tensor as three equal channels; three channels unchanged."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.expand(3, -1, -1) if image.shape[-3] == 1 else image


def eval_transform(prep: Preprocessing) -> v2.Compose:
    """PIL RGB (or L) image → normalised float tensor (3, H, W): what the model sees at evaluation. A
    greyscale image is resized as one channel and then copied into three: the same numbers as resizing
    its RGB copy, for a third of the resizing (`takes_grey`)."""
    return v2.Compose([*_resize_crop(prep), v2.ToImage(), ThreeChannels(), *_normalise(prep)])


def takes_grey(transform) -> bool:
    """Whether a transform accepts greyscale (L) images as they are: it copies them into three channels
    (`ThreeChannels`, as `eval_transform` does)."""
    return any(isinstance(step, ThreeChannels) for step in getattr(transform, "transforms", ()))


def train_transform(prep: Preprocessing, level: str = "light") -> v2.Compose:
    """PIL RGB image → augmented, normalised tensor; `none` is the eval transform."""
    steps = _augment(prep, level)
    if not steps:
        return eval_transform(prep)
    return v2.Compose([*steps, v2.ToImage(), *_normalise(prep)])


def square(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """Shorter side → resize size, centre crop to a square: the decoded-image cache's uint8 HWC."""
    size = prep.resize_size
    resize = v2.Compose([v2.Resize(size, interpolation=prep.interpolation_mode, antialias=True),
                         v2.CenterCrop(size)])
    return np.asarray(resize(image), dtype=np.uint8)


def tensor_transforms(prep: Preprocessing, level: str) -> tuple[Callable, Callable]:
    """(train, eval) transforms for `square`'s uint8 CHW tensors."""
    evaluate = v2.Compose([v2.CenterCrop(prep.input_size), *_normalise(prep)])
    steps = _augment(prep, level)
    return (v2.Compose([*steps, *_normalise(prep)]) if steps else evaluate), evaluate


def preview(image: Image.Image, prep: Preprocessing, level: str, n: int = 16, seed: int = 0) -> list[Image.Image]:
    """`n` views of one PIL image as the training would see them (before normalisation)."""
    torch.manual_seed(seed)
    augment = v2.Compose(_augment(prep, level) or _resize_crop(prep))
    return [augment(image) for _ in range(n)]


def crop_box(size: tuple[int, int], prep: Preprocessing) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the centre crop in the original image's pixels, for an image of
    `size` (width, height): the same arithmetic as `v2.Resize` + `v2.CenterCrop`."""
    width, height = size
    if width <= height:
        new_w, new_h = prep.resize_size, int(prep.resize_size * height / width)
    else:
        new_w, new_h = int(prep.resize_size * width / height), prep.resize_size
    crop = prep.input_size
    left, top = int(round((new_w - crop) / 2.0)), int(round((new_h - crop) / 2.0))
    sx, sy = width / new_w, height / new_h
    return left * sx, top * sy, (left + crop) * sx, (top + crop) * sy


class ImageDataset:
    """A torch-style dataset over image paths: loads through the one loader, then transforms.

    A file that became unreadable after the scan yields None (dropped by `collate_skip_none`)
    and is reported once, rather than crashing the run.
    """

    def __init__(self, paths: list[Path], labels: list[int], transform=None):
        self.paths, self.labels, self.transform = list(paths), list(labels), transform
        self.grey = takes_grey(transform)  # greyscale photos stay one channel until the transform copies it

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            image = load_rgb(self.paths[i], grey=self.grey)
        except ImageError as err:
            log.warning("skipping %s", err)
            return None
        return self.apply(i, image), self.labels[i]

    def apply(self, i: int, image):
        return self.transform(image) if self.transform else image


def collate_skip_none(batch):
    import torch.utils.data

    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return torch.utils.data.default_collate(batch)
