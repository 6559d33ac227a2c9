"""How well does the unfamiliar-photo detector separate the training domain from the rest? (issue 13)

    python bench/trust.py [--data ELPV_FOLDER] [--runs DIR]

Trains two default (frozen Lite0) runs on the real ELPV sample through the CLI: one on all four
classes, one with defect_067 held out. Prints, with the share flagged at the default threshold and
the AUROC of the distance score (scikit-learn):
- in-domain: the test split of the full run (target: at most 7 % flagged);
- far out of domain: generated drawings, scikit-learn's two sample photos and crops of them, and
  noise (target: AUROC ≥ 0.99, ≥ 95 % flagged);
- near out of domain: the held-out class shown to the run that never saw it (target: AUROC ≥ 0.80).
- a shift: a run on monocrystalline cells only, shown the polycrystalline ones (information);
- the two detectors the issue names side by side (cosine 1-NN, the product's; class-conditional
  Mahalanobis), each at its own 95 % validation threshold;
- the label check: 20 photos moved to another class folder; how many `audit` ranks in its first 40.
Fashion-MNIST needs its Debian package (`python -m core samples fashion-mnist`); when it is there it
is a far set for the ELPV model, a Fashion-MNIST model is shown ELPV cells, and the label check runs
on it too.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from sklearn.datasets import load_sample_images
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]

from core.data.images import load_rgb
from core.data.samples import fetch
from core.deploy.predict import Predictor
from core.evaluate.metrics import backbone_features
from core.runs.folder import RunDir

FASHION = Path(os.environ.get("GRAFT_HOME", Path.home() / ".cache" / "graft")) / "samples" / "fashion-mnist"


def drawings(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = Image.new("RGB", (300, 300), tuple(int(v) for v in rng.integers(180, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(3, 9))):
            box = sorted(rng.integers(0, 300, 2)), sorted(rng.integers(0, 300, 2))
            shape = (int(box[0][0]), int(box[1][0]), int(box[0][1]) + 5, int(box[1][1]) + 5)
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            kind = int(rng.integers(0, 3))
            if kind == 2:
                draw.line(shape, fill=colour, width=4)
            else:
                (draw.rectangle if kind == 0 else draw.ellipse)(shape, outline=colour, width=4)
        out.append(image)
    return out


def far_set() -> list[Image.Image]:
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(1)
    crops = [p.crop((x, y, x + 224, y + 224)) for p in photos
             for x, y in zip(rng.integers(0, 400, 10), rng.integers(0, 200, 10))]
    noise = [Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)) for _ in range(10)]
    images = drawings(40) + photos + crops + noise
    if FASHION.is_dir():
        images += [Image.open(p).convert("RGB") for p in sorted(FASHION.rglob("*.png"))[::700][:100]]
    return images


def train(data: Path, runs: Path, name: str) -> Path:
    result = subprocess.run([sys.executable, "-m", "core", "train", str(data), "--runs", str(runs), "--name", name],
                            cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        sys.exit(result.stderr[-2000:])
    run_id = result.stdout.strip().splitlines()[-1].split()[0].split("=", 1)[1]
    return runs / run_id


def scores(predictor: Predictor, images: list) -> tuple[np.ndarray, np.ndarray]:
    results = [r for r in predictor.predict(images, batch_size=32) if "distance" in r]
    return np.array([r["distance"] for r in results]), np.array([r["unfamiliar"] for r in results])


def row(name: str, inside: np.ndarray, outside: np.ndarray, flagged: np.ndarray) -> str:
    auroc = roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(outside))], np.r_[inside, outside])
    return f"| {name} | {len(outside)} | {flagged.mean():.1%} | {auroc:.3f} |"


def features(predictor: Predictor, images: list) -> np.ndarray:
    """Raw backbone features of images (PIL or paths), through the predictor's own forward pass."""
    out = []
    for start in range(0, len(images), 32):
        loaded = [i if isinstance(i, Image.Image) else load_rgb(i) for i in images[start:start + 32]]
        out.append(predictor._forward(loaded)[1])
    return np.concatenate(out)


def run_features(run_dir: Path, split: str) -> tuple[np.ndarray, list[str]]:
    """A run's raw backbone features for one split of its manifest (the feature cache for a frozen run)."""
    run = RunDir(run_dir)
    model, card = run.load_model()
    rows = run.manifest().manifest.query("split == @split")
    feats, ok = backbone_features(model, card.preprocessing, [card.data_root / p for p in rows["path"]],
                                  rows["sha1"].tolist())
    return feats[ok], rows["label"][ok].tolist()


class Mahalanobis:
    """Class-conditional Mahalanobis distance with a shared covariance (Lee et al. 2018), shrunk by
    Ledoit-Wolf: the alternative the issue names, measured beside the product's cosine 1-NN."""

    def __init__(self, feats: np.ndarray, labels: list[str]):
        from sklearn.covariance import LedoitWolf

        labels = np.array(labels)
        self.means = np.stack([feats[labels == c].mean(axis=0) for c in sorted(set(labels))])
        centred = feats - self.means[[sorted(set(labels)).index(c) for c in labels]]
        self.precision = LedoitWolf().fit(centred).precision_

    def score(self, feats: np.ndarray) -> np.ndarray:
        return np.min([np.einsum("ij,jk,ik->i", feats - m, self.precision, feats - m) for m in self.means], axis=0)


def compare_methods(run_dir: Path, predictor: Predictor, test_feats: np.ndarray, sets: dict) -> list[str]:
    """AUROC and share flagged (threshold: 95 % of validation familiar) of both detectors."""
    train, labels = run_features(run_dir, "train")
    val, _ = run_features(run_dir, "val")
    maha = Mahalanobis(train, labels)
    cosine = predictor.familiarity
    methods = {"cosine distance to the nearest training photo (the product's)": cosine.distance,
               "class-conditional Mahalanobis (shared covariance, Ledoit-Wolf)": maha.score}
    lines = []
    for name, score in methods.items():
        threshold = np.quantile(score(val), 0.95)
        inside = score(test_feats)
        cells = [f"{(inside > threshold).mean():.1%}"]
        for feats in sets.values():
            outside = score(feats)
            auroc = roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(outside))], np.r_[inside, outside])
            cells.append(f"{auroc:.3f} / {(outside > threshold).mean():.0%}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def symlinked(pairs: list[tuple[Path, str]], prefix: str) -> Path:
    """A dataset folder of links: (image, class) pairs."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    for image, label in pairs:
        (root / label).mkdir(exist_ok=True)
        (root / label / image.name).symlink_to(image)
    return root


def elpv_types() -> dict[str, str]:
    """File name → 'mono' / 'poly' from the ELPV wheel's labels.csv (the sample keeps only the classes)."""
    import zipfile

    from core.data.samples import ELPV_WHEEL, _pip_download

    with zipfile.ZipFile(_pip_download(ELPV_WHEEL)) as zf:
        text = zf.read(next(n for n in zf.namelist() if n.endswith("elpv_dataset/data/labels.csv"))).decode()
    rows = [r.split() for r in text.splitlines() if r.strip() and not r.lower().startswith("path")]
    return {Path(r[0]).name: r[2] for r in rows if len(r) >= 3}


def planted_audit(pairs: list[tuple[Path, str]], prefix: str, n: int = 20, top: int = 40) -> tuple[int, int, float]:
    """Move `n` random photos to another class folder (in a copy made of links), run `audit`, and
    count how many of them it ranks in its first `top` → (found, photos, seconds)."""
    import time

    from core.trust.audit import audit

    rng = np.random.default_rng(0)
    classes = sorted({label for _, label in pairs})
    planted = set(rng.choice(len(pairs), n, replace=False).tolist())
    moved, shifted = set(), []
    for i, (image, label) in enumerate(pairs):
        if i in planted:
            label = str(rng.choice([c for c in classes if c != label]))
            moved.add(f"{label}/{image.name}")
        shifted.append((image, label))
    root = symlinked(shifted, prefix)
    started = time.perf_counter()
    result = audit(root)
    return len(set(result.table["file"].head(top)) & moved), len(result.table), time.perf_counter() - started


def near_holdout(pairs: list[tuple[Path, str]], held_class: str, runs: Path, prefix: str) -> str:
    """A run trained without one class, shown that class: a table row (AUROC against its own test)."""
    kept = symlinked([(p, c) for p, c in pairs if c != held_class], prefix)
    run_dir = train(kept, runs, f"trust: {held_class} held out")
    predictor = Predictor.from_run(run_dir)
    manifest = RunDir(run_dir).manifest().manifest
    inside, _ = scores(predictor, [kept / p for p in manifest.query("split == 'test'")["path"]])
    outside, flagged = scores(predictor, [p for p, c in pairs if c == held_class])
    return row(f"near: {held_class} shown to a run that never saw it", inside, outside, flagged)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=None, help="the ELPV folder (default: the sample, fetched once)")
    parser.add_argument("--runs", default=None)
    args = parser.parse_args()
    data = Path(args.data) if args.data else fetch("elpv", progress=False)
    runs = Path(args.runs or tempfile.mkdtemp(prefix="trust-runs-"))
    elpv = [(p, p.parent.name) for p in sorted(data.glob("*/*.png"))]
    full = train(data, runs, "trust: all classes")
    held = symlinked([(p, c) for p, c in elpv if c != "defect_067"], "elpv-without-067-")
    near_run = train(held, runs, "trust: defect_067 held out")

    run = RunDir(full)
    manifest = run.manifest().manifest
    test = [run.card().data_root / p for p in manifest[manifest["split"] == "test"]["path"]]
    predictor = Predictor.from_run(full)
    inside, inside_flagged = scores(predictor, test)
    far_images = far_set()
    far, far_flagged = scores(predictor, far_images)
    near_predictor = Predictor.from_run(near_run)
    near_manifest = RunDir(near_run).manifest().manifest
    near_inside, _ = scores(near_predictor, [held / p for p in near_manifest[near_manifest["split"] == "test"]["path"]])
    near, near_flagged = scores(near_predictor, sorted((data / "defect_067").glob("*.png")))
    print(f"threshold (95 % of validation familiar): {predictor.familiarity.threshold:.4f}")
    print("| set | images | flagged unfamiliar | AUROC against in-domain test |")
    print("|---|---|---|---|")
    print(f"| in-domain test (ELPV, 4 classes) | {len(inside)} | {inside_flagged.mean():.1%} | – |")
    print(row("far: drawings, photos, crops, noise" + (", Fashion-MNIST" if FASHION.is_dir() else ""),
              inside, far, far_flagged))
    print(row("near: defect_067 shown to a run that never saw it", near_inside, near, near_flagged))
    for held_class in ("defect_000", "defect_033", "defect_100"):  # every other grade held out in turn
        print(near_holdout(elpv, held_class, runs, f"elpv-without-{held_class}-"))

    if FASHION.is_dir():  # the other direction: a Fashion-MNIST model shown ELPV cells
        fashion = [(p, p.parent.name) for c in sorted(FASHION.iterdir()) if c.is_dir()
                   for p in sorted(c.glob("train_*.png"))[:100]]
        fm_run = train(symlinked(fashion, "fashion-1000-"), runs, "trust: Fashion-MNIST")
        fm_predictor = Predictor.from_run(fm_run)
        fm_manifest = RunDir(fm_run).manifest().manifest
        fm_inside, fm_flagged = scores(fm_predictor, [RunDir(fm_run).card().data_root / p
                                                      for p in fm_manifest.query("split == 'test'")["path"]])
        cells, cells_flagged = scores(fm_predictor, [p for p, _ in elpv[::13]])
        print(f"| in-domain test (Fashion-MNIST model) | {len(fm_inside)} | {fm_flagged.mean():.1%} | – |")
        print(row("far: ELPV cells shown to the Fashion-MNIST model", fm_inside, cells, cells_flagged))
        for held_class in ("bag", "shirt"):  # a class unlike the others, and one like t-shirts and pullovers
            print(near_holdout(fashion, held_class, runs, f"fashion-without-{held_class}-"))

    types = elpv_types()  # a shift of the same kind of photo: mono-crystalline cells only, shown poly ones
    mono = [(p, c) for p, c in elpv if types.get(p.name) == "mono"]
    poly = [p for p, _ in elpv if types.get(p.name) == "poly"]
    mono_run = train(symlinked(mono, "elpv-mono-"), runs, "trust: mono cells only")
    mono_predictor = Predictor.from_run(mono_run)
    mono_manifest = RunDir(mono_run).manifest().manifest
    mono_inside, mono_flagged = scores(mono_predictor, [RunDir(mono_run).card().data_root / p
                                                        for p in mono_manifest.query("split == 'test'")["path"]])
    shifted, shifted_flagged = scores(mono_predictor, poly)
    print(f"| in-domain test (mono-crystalline model) | {len(mono_inside)} | {mono_flagged.mean():.1%} | – |")
    print(row("shift: poly-crystalline cells shown to the mono model (information, not pass/fail)",
              mono_inside, shifted, shifted_flagged))

    print("\nDetector choice, on the all-classes run (AUROC / share flagged at its own 95 % validation threshold):")
    print("| method | in-domain test flagged | far | near (held-out run) |")
    print("|---|---|---|---|")
    near_feats = features(near_predictor, sorted((data / "defect_067").glob("*.png")))
    methods_far = compare_methods(full, predictor, features(predictor, test), {"far": features(predictor, far_images)})
    methods_near = compare_methods(near_run, near_predictor,
                                   features(near_predictor, [held / p for p in near_manifest.query("split == 'test'")["path"]]),
                                   {"near": near_feats})
    for far_line, near_line in zip(methods_far, methods_near):
        print(far_line + near_line.rsplit("|", 2)[-2] + "|")

    print("\nLabel check: 20 photos moved to another class folder; how many `audit` ranks in its first 40:")
    print("| dataset | photos | planted found in the first 40 | seconds |")
    print("|---|---|---|---|")
    found, photos, seconds = planted_audit(elpv, "elpv-planted-")
    print(f"| ELPV (all 4 classes) | {photos} | {found} of 20 | {seconds:.0f} |")
    if FASHION.is_dir():
        fashion = [(p, p.parent.name) for c in sorted(FASHION.iterdir()) if c.is_dir()
                   for p in sorted(c.glob("t10k_*.png"))[:120]]
        found, photos, seconds = planted_audit(fashion, "fashion-planted-")
        print(f"| Fashion-MNIST (120 a class) | {photos} | {found} of 20 | {seconds:.0f} |")


if __name__ == "__main__":
    main()
