"""How well does the unfamiliar-photo detector separate the training domain from the rest? (issue 13)

    python bench/trust.py [--data ELPV_FOLDER] [--runs DIR]

Trains two default (frozen Lite0) runs on the real ELPV sample through the CLI: one on all four
classes, one with defect_067 held out. Prints, with the share flagged at the default threshold and
the AUROC of the distance score (scikit-learn):
- in-domain: the test split of the full run (target: at most 7 % flagged);
- far out of domain: generated drawings, scikit-learn's two sample photos and crops of them, and
  noise (target: AUROC ≥ 0.99, ≥ 95 % flagged);
- near out of domain: the held-out class shown to the run that never saw it (target: AUROC ≥ 0.80).
Fashion-MNIST needs its Debian package (`python -m core samples fashion-mnist`); it is used as a
far set when it is there.
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
sys.path.insert(0, str(ROOT))

from core.predict import Predictor  # noqa: E402
from core.rundir import RunDir  # noqa: E402
from core.samples import fetch  # noqa: E402


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
    fashion = Path(os.environ.get("GRAFT_HOME", Path.home() / ".cache" / "graft")) / "samples" / "fashion-mnist"
    if fashion.is_dir():
        images += [Image.open(p).convert("RGB") for p in sorted(fashion.rglob("*.png"))[:100]]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=None, help="the ELPV folder (default: the sample, fetched once)")
    parser.add_argument("--runs", default=None)
    args = parser.parse_args()
    data = Path(args.data) if args.data else fetch("elpv", progress=False)
    runs = Path(args.runs or tempfile.mkdtemp(prefix="trust-runs-"))
    full = train(data, runs, "trust: all classes")
    held = Path(tempfile.mkdtemp(prefix="elpv-without-067-"))
    for class_dir in sorted(p for p in data.iterdir() if p.is_dir() and p.name != "defect_067"):
        (held / class_dir.name).mkdir()
        for image in class_dir.iterdir():
            (held / class_dir.name / image.name).symlink_to(image)
    near_run = train(held, runs, "trust: defect_067 held out")

    run = RunDir(full)
    manifest = run.manifest().manifest
    test = [run.card().data_root / p for p in manifest[manifest["split"] == "test"]["path"]]
    predictor = Predictor.from_run(full)
    inside, inside_flagged = scores(predictor, test)
    far, far_flagged = scores(predictor, far_set())
    near_predictor = Predictor.from_run(near_run)
    near_manifest = RunDir(near_run).manifest().manifest
    near_inside, _ = scores(near_predictor, [held / p for p in near_manifest[near_manifest["split"] == "test"]["path"]])
    near, near_flagged = scores(near_predictor, sorted((data / "defect_067").glob("*.png")))
    print(f"threshold (95 % of validation familiar): {predictor.familiarity.threshold:.4f}")
    print("| set | images | flagged unfamiliar | AUROC against in-domain test |")
    print("|---|---|---|---|")
    print(f"| in-domain test (ELPV, 4 classes) | {len(inside)} | {inside_flagged.mean():.1%} | – |")
    print(row("far: drawings, photos, crops, noise", inside, far, far_flagged))
    print(row("near: defect_067 shown to a run that never saw it", near_inside, near, near_flagged))


if __name__ == "__main__":
    main()
