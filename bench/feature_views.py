"""Which frozen-feature view helps, measured (issue 14): the evidence behind `features="rich"`.

    python bench/feature_views.py [--data ELPV] [--setting efficientnet_lite0:224:0.875 ...]
                                  [--per-class N] [--seed 0]

A setting is backbone : input size : crop share (the centre crop's share of the resized photo; 1.0
keeps the whole photo). For each setting every photo of the product's own split (`catalog.split`,
the given seed) is read once, in its 8 flips and quarter turns (ONNX Runtime), and the network's
blocks 3, 4 and 5 and its last map are pooled three ways (mean, max, GeM with p=3). A logistic
regression is then fitted on each way of combining them, C chosen on validation exactly as a run
chooses it (`core.probe.fit_head`, the mean of accuracy and balanced accuracy). With two settings
or more, the first two are also combined: their probabilities averaged, and their features side by
side. Prints validation and test accuracy / balanced accuracy and the reading time; only the
validation figures may choose, the test figures are there to check that they chose well.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

from core.base.runtime import configure_threads
from core.data import catalog, samples
from core.models import backbones
from core.models.features import forward_images, onnx_backbone
from core.models.preprocess import eval_transform
from core.models.probe import fit_head, val_score

POOLS = ("mean", "max", "gem")


class ThreeWayPooled(nn.Module):
    """Every tapped map and the last one, each pooled by mean, max and GeM, for the 8 orientations
    of each photo: [N, 8 × sum(widths) × 3], orientation-major."""

    def __init__(self, body: nn.Module, taps: tuple[int, ...]):
        super().__init__()
        self.body, self.taps = body, taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, body, pooled = x.shape[0], self.body, []
        y = body.bn1(body.conv_stem(backbones.DihedralViews.views(x)))
        for i, block in enumerate(body.blocks):
            y = block(y)
            if i in self.taps:
                pooled += self._pool(y)
        pooled += self._pool(body.bn2(body.conv_head(y)))
        views = torch.cat(pooled, 1)
        return views.reshape(backbones.DihedralViews.views_per_image, n, -1).transpose(0, 1).flatten(1)

    @staticmethod
    def _pool(y: torch.Tensor) -> list[torch.Tensor]:
        return [y.mean((2, 3)), y.amax((2, 3)), y.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3)]


def map_widths(body: nn.Module, taps: tuple[int, ...]) -> list[int]:
    """Channels of each tapped map and of the last one."""
    with torch.no_grad():
        y, widths = body.bn1(body.conv_stem(torch.zeros(1, 3, 64, 64))), []
        for i, block in enumerate(body.blocks):
            y = block(y)
            if i in taps:
                widths.append(int(y.shape[1]))
    return widths + [int(body.conv_head.out_channels)]


def read(setting: str, root: Path, split: catalog.Split) -> dict:
    """Every photo's 8-orientation, three-way pooled features for one setting."""
    name, size, crop = setting.split(":")
    body = backbones.create(name, len(split.classes)).backbone.eval()
    widths = map_widths(body, backbones.LITE_TAPS)
    prep = dataclasses.replace(backbones.preprocessing_for(name, int(size)), crop_pct=float(crop))
    pooled = ThreeWayPooled(body, backbones.LITE_TAPS)
    module = onnx_backbone(pooled, int(size), f"bench-views-{name}-{size}") or pooled
    started = time.perf_counter()
    out, ok = forward_images(module, [root / p for p in split.manifest["path"]], eval_transform(prep),
                             batch_size=4, progress=True, desc=f"reading {setting}", log=None)
    seconds = time.perf_counter() - started
    feats = out.reshape(len(out), backbones.DihedralViews.views_per_image, -1)
    return {"setting": setting, "feats": feats, "ok": ok, "widths": widths, "seconds": seconds}


def columns(widths: list[int], pools: tuple[str, ...], maps: str) -> np.ndarray:
    """Column indices of the chosen pools of the last map (`last`) or of every map (`all`)."""
    chosen, offset = [], 0
    for i, width in enumerate(widths):
        for pool in POOLS:
            if pool in pools and (maps == "all" or i == len(widths) - 1):
                chosen.append(np.arange(offset, offset + width))
            offset += width
    return np.concatenate(chosen)


ORIENTATIONS = {"1 view": [0], "mean of 4 flips": [0, 1, 2, 3], "mean of 8 orientations": list(range(8))}
ROWS = [("last", ("mean",), "1 view"), ("last", ("mean",), "mean of 8 orientations"),
        ("all", ("mean",), "1 view"), ("all", ("mean",), "mean of 4 flips"),
        ("all", ("mean",), "mean of 8 orientations"), ("all", ("max",), "mean of 8 orientations"),
        ("all", ("gem",), "mean of 8 orientations"), ("all", ("mean", "max"), "mean of 8 orientations")]


def fitted(x: np.ndarray, y: np.ndarray, masks: dict) -> tuple[float, np.ndarray]:
    """(C, class probabilities for every photo) of the head chosen on validation."""
    head = fit_head(x[masks["train"]], y[masks["train"]], x[masks["val"]], y[masks["val"]], int(y.max()) + 1)
    logits = head.logits(x)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return f"{head.kind} {head.penalty:g}", probs / probs.sum(1, keepdims=True)


def line(name: str, c, probs: np.ndarray, y: np.ndarray, masks: dict, seconds: str = "") -> str:
    figures = []
    for part in ("val", "test"):
        _, acc, balanced = val_score(y[masks[part]], probs[masks[part]].argmax(1))
        figures.append(f"{acc:.3f} / {balanced:.3f}")
    return f"| {name} | {c} | {' | '.join(figures)} | {seconds} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="the ELPV folder (default: the sample, fetched once)")
    parser.add_argument("--setting", nargs="*", default=["efficientnet_lite0:224:0.875"],
                        help="backbone:input size:crop share, e.g. efficientnet_lite2:260:0.875")
    parser.add_argument("--per-class", type=int, default=None, help="at most this many photos a class (a quick look)")
    parser.add_argument("--seed", type=int, default=0, help="the split seed")
    args = parser.parse_args()
    configure_threads()
    root = Path(args.data) if args.data else samples.fetch("elpv", progress=False)
    if args.per_class:
        root = subset(root, args.per_class)
    split = catalog.split(catalog.scan(root, use_cache=False), seed=args.seed)
    manifest = split.manifest
    y = manifest["label"].map({c: i for i, c in enumerate(split.classes)}).to_numpy()
    print(f"{root}: {len(manifest)} photos, split seed {args.seed}: "
          + ", ".join(f"{s} {int((manifest['split'] == s).sum())}" for s in ("train", "val", "test")), flush=True)
    print("\n| features | head (penalty) | validation accuracy / balanced | test accuracy / balanced | reading s |\n|---|---|---|---|---|")
    probs = []
    for setting in args.setting:
        got = read(setting, root, split)
        masks = {s: (manifest["split"] == s).to_numpy() & got["ok"] for s in ("train", "val", "test")}
        for maps, pools, views in ROWS:
            x = got["feats"][:, ORIENTATIONS[views]][:, :, columns(got["widths"], pools, maps)].mean(1)
            c, p = fitted(x, y, masks)
            if (maps, pools, views) == ("all", ("mean",), "mean of 8 orientations"):
                probs.append((got, x, p))
            which = "the last map" if maps == "last" else "blocks 3-5 and the last map"
            print(line(f"{setting}: {which}, {'+'.join(pools)} pooled, {views}", c, p, y, masks,
                       f"{got['seconds']:.0f} (one pass for the setting)"), flush=True)
    if len(probs) >= 2:
        (a, xa, pa), (b, xb, pb) = probs[:2]
        masks = {s: (manifest["split"] == s).to_numpy() & a["ok"] & b["ok"] for s in ("train", "val", "test")}
        print(line(f"{a['setting']} and {b['setting']}: probabilities averaged", "–", (pa + pb) / 2, y, masks))
        c, p = fitted(np.concatenate([xa, xb], 1), y, masks)
        print(line(f"{a['setting']} and {b['setting']}: features side by side", c, p, y, masks))


def subset(root: Path, per_class: int) -> Path:
    """A folder of links to the first `per_class` photos of each class."""
    out = Path(tempfile.mkdtemp(prefix="views-subset-"))
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        (out / folder.name).mkdir()
        for photo in sorted(folder.iterdir())[:per_class]:
            (out / folder.name / photo.name).symlink_to(photo)
    return out


if __name__ == "__main__":
    main()
