"""Time to accuracy on the full ELPV set: the tutorial loop vs this project's default `train`
vs the physical floor (one batched backbone forward pass over every image).

    python bench/time_to_accuracy.py [--data DIR] [--epochs 10] [--skip-tutorial]

All three run in one process, one after the other, on the same split and seed. The clock of
each excludes only the per-epoch test evaluation used to draw its accuracy curve.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torchvision.transforms import v2

from core.base.runtime import configure_threads
from core.data import catalog, samples
from core.models import backbones, preprocess
from core.models.features import FeatureCache, forward_images
from core.models.preprocess import eval_transform
from core.runs.store import RunStore
from core.train.config import TrainConfig
from core.train.session import fit


class Clock:
    """Wall time with pauses (the evaluation that only draws the curve is not counted)."""

    def __init__(self):
        self.start, self.paused = time.perf_counter(), 0.0

    def now(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def pause(self):
        clock = self

        class _P:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *_):
                clock.paused += time.perf_counter() - self.t
        return _P()


def test_accuracy(model, feats: torch.Tensor | None, loader=None, labels=None) -> float:
    model.eval()
    with torch.inference_mode():
        if feats is not None:
            return (model.head(feats).argmax(1) == labels).float().mean().item()
        correct = seen = 0
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            seen += len(y)
        return correct / seen


def tutorial(root: Path, split: catalog.Split, epochs: int, seed: int) -> dict:
    """The flowers tutorial: frozen backbone, new linear layer, SGD 1e-3 momentum 0.9, batch 32,
    RandomResizedCrop(224) + flip, Resize + CenterCrop for eval, train and val phases each
    epoch, no DataLoader workers."""
    torch.manual_seed(seed)
    clock = Clock()
    prep = backbones.preprocessing_for("efficientnet_lite0")
    model = backbones.create("efficientnet_lite0", len(split.classes), freeze="head", dropout=0.0)
    train_tf = v2.Compose([v2.RandomResizedCrop(224), v2.RandomHorizontalFlip(), v2.ToImage(),
                           v2.ToDtype(torch.float32, scale=True), v2.Normalize(prep.mean, prep.std)])
    sets = {s: preprocess.ImageDataset(*split.paths(root, s), train_tf if s == "train" else eval_transform(prep))
            for s in ("train", "val", "test")}
    loaders = {s: torch.utils.data.DataLoader(d, batch_size=32, shuffle=s == "train", num_workers=0)
               for s, d in sets.items()}
    optimizer = torch.optim.SGD(model.head.parameters(), lr=1e-3, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()
    curve = []
    for epoch in range(1, epochs + 1):
        for phase in ("train", "val"):
            model.train(phase == "train")
            with torch.set_grad_enabled(phase == "train"):
                for x, y in loaders[phase]:
                    loss = criterion(model(x), y)
                    if phase == "train":
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
        with clock.pause():
            acc = test_accuracy(model, None, loaders["test"])
        curve.append((clock.now(), acc))
        print(f"  tutorial epoch {epoch}: {clock.now():7.1f} s  test acc {acc:.4f}", flush=True)
    return {"wall": clock.now(), "acc": curve[-1][1], "curve": curve}


def project(root: Path, runs: Path, epochs: int, seed: int, aug: str = "auto", test_cache: Path | None = None,
            test_split: catalog.Split | None = None) -> dict:
    """This project's default `train` (in-process, same code as the CLI)."""
    clock = Clock()
    curve: list[tuple[float, float]] = []
    holder: dict = {}

    def on_epoch(epoch, model):
        reached = clock.now()  # before the pause: the test features below are not the run's time
        with clock.pause():
            if "feats" not in holder:  # test features from a separate cache: the run's own cache stays cold
                paths, labels = test_split.paths(root, "test")
                shas = test_split.manifest[test_split.manifest["split"] == "test"]["sha1"].tolist()
                cache = FeatureCache(model.backbone, backbones.preprocessing_for("efficientnet_lite0"), test_cache)
                feats, ok = cache.features(paths, shas, "eval", eval_transform(cache_prep()), log=None)
                holder["feats"], holder["labels"] = torch.from_numpy(feats), torch.tensor(labels)
            curve.append((reached, test_accuracy(model, holder["feats"], labels=holder["labels"])))

    run_id = fit(TrainConfig(data=str(root), epochs=epochs, seed=seed, aug=aug), runs, progress=False,
                 on_epoch=on_epoch if test_split is not None else None)
    wall = clock.now()
    return {"wall": wall, "acc": RunStore(runs).get(run_id)["test_acc"], "curve": curve}


def cache_prep():
    return backbones.preprocessing_for("efficientnet_lite0")


def floor(root: Path, split: catalog.Split) -> dict:
    """One batched backbone forward pass over every image, at the best settings found here."""
    model = backbones.create("efficientnet_lite0", 2, freeze="head")
    paths = [root / p for p in split.manifest["path"]]
    best = None
    for batch_size in (32, 64):
        start = time.perf_counter()
        forward_images(model.backbone, paths[:256], eval_transform(cache_prep()), batch_size=batch_size, log=None)
        rate = 256 / (time.perf_counter() - start)
        best = max(best or (0, 0), (rate, batch_size))
    start = time.perf_counter()
    forward_images(model.backbone, paths, eval_transform(cache_prep()), batch_size=best[1], log=None)
    wall = time.perf_counter() - start
    return {"wall": wall, "img_s": len(paths) / wall, "batch_size": best[1]}


def first_reaching(curve, target: float) -> float | None:
    return next((t for t, acc in curve if acc >= target - 1e-9), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="default: the ELPV sample (fetched when missing)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-tutorial", action="store_true")
    args = parser.parse_args()
    root = Path(args.data) if args.data else samples.fetch("elpv")
    configure_threads()
    work = Path(tempfile.mkdtemp(prefix="graft-bench-"))
    os.environ["GRAFT_HOME"] = str(work / "home")  # cold caches for the project runs
    split = catalog.split(catalog.scan(root, use_cache=False), seed=args.seed)
    print(f"{root}: {len(split.manifest)} images; split "
          + ", ".join(f"{s} {n}" for s, n in split.counts().sum().items()), flush=True)

    print("floor: one batched forward pass over every image", flush=True)
    fl = floor(root, split)
    print(f"  {fl['wall']:.1f} s ({fl['img_s']:.1f} img/s, batch {fl['batch_size']})", flush=True)
    print("project: default train, cold cache", flush=True)
    cold = project(root, work / "runs", args.epochs, args.seed, test_cache=work / "test-cache", test_split=split)
    print(f"  {cold['wall']:.1f} s, test acc {cold['acc']:.4f}", flush=True)
    print("project: rerun with a warm cache", flush=True)
    warm = project(root, work / "runs", args.epochs, args.seed)
    print(f"  {warm['wall']:.1f} s, test acc {warm['acc']:.4f}", flush=True)
    tut = None
    if not args.skip_tutorial:
        print("tutorial loop (this takes a while)", flush=True)
        tut = tutorial(root, split, args.epochs, args.seed)

    print("\n| run | wall s | test acc | s to tutorial's final acc |")
    print("|---|---:|---:|---:|")
    target = tut["acc"] if tut else None
    if tut:
        print(f"| tutorial loop | {tut['wall']:.1f} | {tut['acc']:.4f} | {first_reaching(tut['curve'], target):.1f} |")
    reach = first_reaching(cold["curve"], target) if target is not None else None
    print(f"| project default (cold cache) | {cold['wall']:.1f} | {cold['acc']:.4f} | "
          f"{'—' if reach is None else f'{reach:.1f}'} |")
    print(f"| project rerun (warm cache) | {warm['wall']:.1f} | {warm['acc']:.4f} | |")
    print(f"| floor: one forward pass | {fl['wall']:.1f} | | |")
    print()
    if tut and reach:
        print(f"tutorial / project, time to the tutorial's final accuracy: {first_reaching(tut['curve'], target) / reach:.1f}x (target >= 25, issue 14)")
        print(f"project final acc - tutorial final acc: {cold['acc'] - tut['acc']:+.4f} (target >= 0)")
    print(f"project cold / floor: {cold['wall'] / fl['wall']:.2f}x (target <= 1.2; default aug is none)")
    print(f"project warm / floor: {warm['wall'] / fl['wall']:.2f}x (target <= 0.2)")


if __name__ == "__main__":
    main()
