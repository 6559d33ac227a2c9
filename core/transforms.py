"""Train / eval / TTA transform presets, built from a backbone's preprocessing (torchvision v2).

Evaluation: resize the shorter side to input/crop_pct, centre-crop, normalise — exactly what
`model.json` records and what prediction and export repeat.
"""
from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode, v2

from .choices import AUG_LEVELS
from .models import Preprocessing


def _interp(prep: Preprocessing) -> InterpolationMode:
    return InterpolationMode(prep.interpolation)


def _to_tensor(prep: Preprocessing) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(prep.mean, prep.std)]


def eval_transform(prep: Preprocessing) -> v2.Compose:
    return v2.Compose([v2.Resize(prep.resize_size, interpolation=_interp(prep), antialias=True),
                       v2.CenterCrop(prep.input_size), *_to_tensor(prep)])


def train_transform(prep: Preprocessing, level: str = "light") -> v2.Compose:
    """Augmentation presets: none < light < standard < strong."""
    if level not in AUG_LEVELS:
        raise ValueError(f"unknown augmentation {level!r}; choose one of {', '.join(AUG_LEVELS)}")
    if level == "none":
        return eval_transform(prep)
    size, interp = prep.input_size, _interp(prep)
    scale = {"light": (0.6, 1.0), "standard": (0.25, 1.0), "strong": (0.08, 1.0)}[level]
    steps = [v2.RandomResizedCrop(size, scale=scale, interpolation=interp, antialias=True),
             v2.RandomHorizontalFlip()]
    if level == "standard":
        steps.append(v2.ColorJitter(0.2, 0.2, 0.2))
    if level == "strong":
        steps += [v2.ColorJitter(0.3, 0.3, 0.3, 0.05), v2.TrivialAugmentWide(interpolation=interp)]
    return v2.Compose([*steps, *_to_tensor(prep)])


def preview(image, prep: Preprocessing, level: str, n: int = 16, seed: int = 0) -> list:
    """`n` augmented training views of one PIL image, as PIL images (the boat tutorial's figure)."""
    torch.manual_seed(seed)
    steps = train_transform(prep, level).transforms[:-3] or eval_transform(prep).transforms[:-3]
    augment = v2.Compose(steps)
    return [augment(image) for _ in range(n)]
