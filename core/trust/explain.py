"""Grad-CAM: which parts of the image drove the model's choice.

A short hook-based implementation (Selvaraju et al.): the gradients of the class score with
respect to the last 4-D feature map of the backbone, averaged per channel, weight that map.
Works for every CNN in the registry (EfficientNet-Lite, ResNet, MobileNet, EfficientNet,
ConvNeXt, timm CNNs); a backbone with no spatial feature map (a ViT) raises `NotSupported`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from core.base.errors import GraftError
from core.models.preprocess import Preprocessing, crop_box, eval_transform


class NotSupported(GraftError, RuntimeError):
    """The model cannot be explained this way (a backbone with no spatial feature map)."""


def last_spatial_module(model: nn.Module, input_size: int) -> nn.Module:
    """The last module of the backbone whose output is a 4-D (N, C, H, W) map with H, W > 1."""
    found: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, _i, out: found.append(mod)
                                     if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-1] > 1
                                     and out.shape[-2] > 1 else None)
             for m in model.backbone.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in hooks:
            h.remove()
    if not found:
        raise NotSupported("Grad-CAM needs a convolutional backbone with a spatial feature map")
    return found[-1]


def gradcam(model: nn.Module, image: Image.Image, prep: Preprocessing, target: int | None = None
            ) -> tuple[np.ndarray, int, np.ndarray]:
    """(heatmap in [0, 1] of the image's size, explained class, class probabilities).

    The map covers the centre crop the model saw; outside it the heatmap is 0.
    """
    layer = last_spatial_module(model, prep.input_size)
    store: dict[str, torch.Tensor] = {}

    def keep(_m, _i, out):
        out.retain_grad()
        store["act"] = out

    handle = layer.register_forward_hook(keep)
    try:
        x = eval_transform(prep)(image).unsqueeze(0).requires_grad_(True)
        model.eval()
        with torch.enable_grad():
            logits = model(x)
            probs = torch.softmax(logits, 1)[0].detach().numpy()
            target = int(probs.argmax()) if target is None else int(target)
            model.zero_grad(set_to_none=True)
            logits[0, target].backward()
    finally:
        handle.remove()
    act, grad = store["act"].detach(), store["act"].grad
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(prep.input_size, prep.input_size), mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    cam = (cam / cam.max()).numpy() if cam.max() > 0 else cam.numpy()
    return _to_image_frame(cam, image.size, prep), target, probs


def _to_image_frame(cam: np.ndarray, size: tuple[int, int], prep: Preprocessing) -> np.ndarray:
    """Place the crop-sized map back where the centre crop sits in the original image."""
    width, height = size
    left, top, right, bottom = crop_box(size, prep)
    box = (int(round(max(left, 0))), int(round(max(top, 0))),
           int(round(min(right, width))), int(round(min(bottom, height))))
    full = np.zeros((height, width), dtype=np.float32)
    crop = Image.fromarray((cam * 255).astype(np.uint8)).resize((box[2] - box[0], box[3] - box[1]),
                                                              Image.Resampling.BILINEAR)
    full[box[1]:box[3], box[0]:box[2]] = np.asarray(crop, dtype=np.float32) / 255
    return full


class Explainer:
    """Grad-CAM on a model of its own (on the CPU), so explaining never moves, or leaves gradients
    in, a model that prediction shares; one explanation at a time."""

    def __init__(self, model: nn.Module, labels: list[str], prep: Preprocessing):
        import threading

        self.model, self.labels, self.prep = model.cpu().eval(), labels, prep
        self._lock = threading.Lock()

    @classmethod
    def from_run(cls, run_dir) -> "Explainer":
        from core.runs.folder import RunDir

        model, card = RunDir(run_dir).load_model()
        return cls(model, card.labels, card.preprocessing)

    def gradcam(self, image: Image.Image, target: int | None = None) -> tuple[np.ndarray, int, np.ndarray]:
        with self._lock:
            try:
                return gradcam(self.model, image, self.prep, target)
            finally:
                self.model.zero_grad(set_to_none=True)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The image with the heatmap blended over it (dark blue → red → yellow)."""
    h = np.clip(heatmap, 0, 1)[..., None]
    colours = np.concatenate([np.clip(3 * h, 0, 1), np.clip(3 * h - 1, 0, 1), np.clip(1 - 3 * h, 0, 1) * 0.6], -1)
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    mixed = base * (1 - alpha * h) + colours * alpha * h
    return Image.fromarray((np.clip(mixed, 0, 1) * 255).astype(np.uint8))
