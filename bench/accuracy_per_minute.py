"""Accuracy per minute on this machine (issue 14): test accuracy and balanced accuracy against wall time.

    python bench/accuracy_per_minute.py [--data ELPV] [--limits 300 900 1800] [--seeds 0 1] [--tutorial]

Every run goes through the CLI (`python -m core train`) on the full ELPV sample with the product's
own split, one after the other in one sitting, and prints the device it ran on. Rows:
- a cold default run with PyTorch computing the frozen features (GRAFT_FEATURES=torch; a fresh
  feature cache) against a cold default run with ONNX Runtime (the product's default on a CPU):
  the ratio of their feature passes and of their wall times;
- warm (features cached), on the plain view (the default before stop 23) and on the default pooled
  view: the loop's head only (`--head-fit loop`) and the head also fitted to convergence (the default);
- `--time-limit` for each limit (the stages, the best by validation kept; each stage's epochs, photos a
  second and best validation accuracy), per split seed;
- the same two heads on a greyscale set with more classes (Fashion-MNIST, 100 a class; there is no
  colour photo set in the registries), when its Debian package is there;
- `--tutorial`: the seed tutorial's loop (bench/time_to_accuracy.py), about 14 minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from core.data import samples
from core.train import estimate

FASHION = Path(os.environ.get("GRAFT_HOME", Path.home() / ".cache" / "graft")) / "samples" / "fashion-mnist"


def train(data: Path, runs: Path, *args: str, env: dict | None = None) -> dict:
    """One CLI training → wall seconds, test and balanced accuracy, the feature pass, the kept head."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "core", "train", str(data), "--runs", str(runs), *args],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - started
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    run_id = result.stdout.strip().splitlines()[-1].split()[0].split("=", 1)[1]
    run = runs / run_id
    metrics = json.loads((run / "metrics.json").read_text())
    output = result.stdout + result.stderr
    features = re.search(r"feature cache \w+: (\d+) image views computed.*\(([\d.]+) s\)", output)
    head = json.loads((run / "head_fit.json").read_text()) if (run / "head_fit.json").is_file() else {}
    card = json.loads((run / "model.json").read_text())
    stages_file = run / "stages.json"
    stages = [(s["stage"], stage_words(s)) for s in json.loads(stages_file.read_text())] if stages_file.is_file() else []
    return {"wall": wall, "acc": metrics["accuracy"], "bal": metrics["balanced_accuracy"],
            "features_s": float(features.group(2)) if features else None,
            "computed": int(features.group(1)) if features else 0, "head": head.get("chosen", "loop"),
            "kept": f"{card['head']} head, {card['freeze']} @ {card['preprocessing']['input_size']} px"
                    + f", {card['config'].get('features', 'plain')} view", "stages": stages}


def stage_words(stage: dict) -> str:
    """A stage in the table's note: its epochs, its speed (photos read a second on the frozen network;
    photos a second through training and validation when fine-tuning), its best validation accuracy."""
    if stage.get("skipped"):
        return "skipped"
    speed = f", read {stage['read_per_s']:.0f}/s" if stage.get("read_per_s") else \
        f", {stage['trained_per_s']:.0f}/s" if stage.get("trained_per_s") else ""
    figure = stage.get("best_val_acc", stage.get("val_acc"))
    return f"{stage['epochs']} epochs{speed}" + (f", val {figure:.3f}" if figure is not None else "") + \
        (" (kept)" if stage.get("kept") else "")


def row(name: str, r: dict, note: str = "") -> str:
    return f"| {name} | {r['wall']:.0f} | {r['acc']:.3f} | {r['bal']:.3f} | {r['kept']} | {note} |"


def fashion_subset(per_class: int = 100) -> Path:
    root = Path(tempfile.mkdtemp(prefix="fashion-subset-"))
    for folder in sorted(p for p in FASHION.iterdir() if p.is_dir()):
        (root / folder.name).mkdir()
        for image in sorted(folder.glob("train_*.png"))[:per_class]:
            (root / folder.name / image.name).symlink_to(image)
    return root


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=None, help="the ELPV folder (default: the sample, fetched once)")
    parser.add_argument("--limits", type=float, nargs="*", default=[300, 900, 1800])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0], help="split seeds for the time-limited runs")
    parser.add_argument("--tutorial", action="store_true", help="also the tutorial loop (about 14 minutes)")
    parser.add_argument("--only-limits", action="store_true", help="only the time-limited runs (and --rich)")
    parser.add_argument("--cold", action="store_true", help="time-limited runs from an empty cache (nothing read yet)")
    parser.add_argument("--rich", action="store_true", help="also the default run with --features rich, cold")
    args = parser.parse_args()
    data = Path(args.data) if args.data else samples.fetch("elpv", progress=False)
    device = f"CUDA ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else \
        f"CPU ({os.cpu_count()} cores)"
    print(f"device: {device}; data: {data} ({sum(1 for _ in data.glob('*/*'))} images)")
    runs = Path(tempfile.mkdtemp(prefix="apm-runs-"))
    if not args.only_limits:
        baselines(data, runs)
    else:
        print("\n| run | wall s | test accuracy | balanced accuracy | model kept | note |\n|---|---|---|---|---|---|")
    if args.rich:
        r = train(data, runs, "--features", "rich", "--name", "rich, cold", env={"GRAFT_HOME": tempfile.mkdtemp(prefix="apm-home-")})
        print(row("--features rich (8 orientations, blocks 3-5 pooled beside the last), cold", r,
                  f"feature pass {r['features_s']:.0f} s for {r['computed']} photos × 8; kept: {r['head']} head"), flush=True)
    limited(data, runs, args)
    if args.only_limits:
        return
    others(runs, args, data)


def baselines(data: Path, runs: Path) -> None:
    cold_torch = train(data, runs, "--name", "cold, PyTorch features",
                       env={"GRAFT_FEATURES": "torch", "GRAFT_HOME": tempfile.mkdtemp(prefix="apm-home-")})
    cold_onnx = train(data, runs, "--name", "cold, ONNX Runtime features",
                      env={"GRAFT_HOME": tempfile.mkdtemp(prefix="apm-home-")})
    plain_loop = train(data, runs, "--name", "warm, plain, loop head", "--head-fit", "loop", "--features", "plain")
    plain = train(data, runs, "--name", "warm, plain, converged head", "--features", "plain")
    loop = train(data, runs, "--name", "warm, loop head", "--head-fit", "loop")
    converged = train(data, runs, "--name", "warm, converged head")
    print("\n| run | wall s | test accuracy | balanced accuracy | model kept | note |")
    print("|---|---|---|---|---|---|")
    print(row("default, cold, PyTorch features", cold_torch,
              f"feature pass {cold_torch['features_s']:.1f} s for {cold_torch['computed']} photos"))
    ratio = cold_onnx["features_s"] / cold_torch["features_s"]
    estimated = estimate.epoch_seconds("efficientnet_lite0", "head", cold_onnx["computed"], 0)[0]  # as the Train page
    print(row("default, cold, ONNX Runtime features", cold_onnx,
              f"feature pass {cold_onnx['features_s']:.1f} s: {ratio:.2f}× PyTorch's; wall "
              f"{cold_onnx['wall'] / cold_torch['wall']:.2f}×; the Train page's estimate {estimated:.0f} s"))
    print(row("plain view (before), warm, loop head only", plain_loop))
    print(row("plain view (before), warm, head fitted to convergence", plain, f"kept: {plain['head']} head"))
    print(row("default (pooled view), warm, loop head only", loop))
    print(row("default (pooled view), warm, head fitted to convergence", converged, f"kept: {converged['head']} head"))


def limited(data: Path, runs: Path, args) -> None:
    for seed in args.seeds:
        for limit in args.limits:
            r = train(data, runs, "--time-limit", str(limit), "--seed", str(seed), "--name", f"limit {limit:.0f}",
                      env={"GRAFT_HOME": tempfile.mkdtemp(prefix="apm-home-")} if args.cold else None)
            stages = ", ".join(f"stage {s}: {n}" for s, n in r["stages"]) or "stage 1 only"
            print(row(f"--time-limit {limit:.0f} (split seed {seed}{', cold' if args.cold else ''})", r,
                      f"{r['wall'] / limit:.2f} of the limit; {stages}"), flush=True)


def others(runs: Path, args, data: Path) -> None:
    if FASHION.is_dir():
        subset = fashion_subset()
        for name, extra in (("plain view, loop head only (before)", ("--head-fit", "loop", "--features", "plain")),
                            ("plain view, head fitted to convergence", ("--features", "plain")),
                            ("default (pooled view), head fitted to convergence", ())):
            r = train(subset, runs, "--name", f"fashion {name}", *extra)
            print(row(f"Fashion-MNIST 1,000 (greyscale, 10 classes), {name}", r), flush=True)
    if args.tutorial:
        from bench.time_to_accuracy import tutorial
        from core.data import catalog as core_data

        split = core_data.split(core_data.scan(data), seed=0)
        result = tutorial(data, split, 10, 0)
        print(f"| the tutorial loop (10 epochs) | {result['wall']:.0f} | {result['acc']:.3f} | – | head @ 224 px | |")


if __name__ == "__main__":
    main()
