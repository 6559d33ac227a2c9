"""A cold run's reading, before and after (issue 14): the first scan of a folder, and the frozen
backbone's pass over every photo.

    python bench/reading.py [--data ELPV] [--photos N] [--repeats 2]

- Scan: `catalog.scan` with nothing cached, on one thread (before) and on one thread a core (now).
- Feature pass: the default pooled EfficientNet-Lite0 through ONNX Runtime over the first N photos,
  decoded as RGB with ONNX Runtime's threads spinning (before), and greyscale photos kept as one
  channel until the transform copies it, its threads not spinning (now). Both give the same numbers
  (checked here on the first batch).

Both are timed alternately `--repeats` times in one sitting; the ratios use the medians.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from torchvision.transforms import v2

ROOT = Path(__file__).resolve().parents[1]

from core.base.runtime import configure_threads
from core.base.storage import cache_home
from core.data import catalog, samples
from core.models import backbones
from core.models.features import OnnxBackbone, forward_images, onnx_backbone
from core.models.preprocess import ThreeChannels, eval_transform


def scan_seconds(root: Path, threads: int) -> float:
    before, catalog.SCAN_THREADS = catalog.SCAN_THREADS, threads
    try:
        started = time.perf_counter()
        catalog.scan(root, use_cache=False)
        return time.perf_counter() - started
    finally:
        catalog.SCAN_THREADS = before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="default: the ELPV sample (fetched when missing)")
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    threads = configure_threads()
    root = Path(args.data) if args.data else samples.fetch("elpv", progress=False)
    index = catalog.scan(root, use_cache=False)
    paths = [root / p for p in index.items["path"][:args.photos]]
    print(f"{root}: {len(index.items)} photos; feature pass over {len(paths)}; {threads} threads", flush=True)

    model = backbones.create(backbones.DEFAULT_BACKBONE, 2, features="pooled")
    prep = backbones.preprocessing_for(backbones.DEFAULT_BACKBONE)
    fast = onnx_backbone(model.backbone, prep.input_size, "bench-reading-pooled")
    if fast is None:
        sys.exit("ONNX Runtime is not available here (a GPU, or GRAFT_FEATURES=torch): nothing to compare")
    spinning = OnnxBackbone(cache_home() / "onnx" / "bench-reading-pooled.onnx", threads, spinning=True)
    now_tf = eval_transform(prep)
    before_tf = v2.Compose([t for t in now_tf.transforms if not isinstance(t, ThreeChannels)])  # photos read as RGB
    a = forward_images(spinning, paths[:32], before_tf, log=None)[0]
    b = forward_images(fast, paths[:32], now_tf, log=None)[0]
    print(f"same features: largest difference {np.abs(a - b).max():.1e}", flush=True)

    times: dict[str, list[float]] = {k: [] for k in ("scan, one thread", "scan, a thread a core",
                                                      "pass, RGB, spinning", "pass, grey kept, not spinning")}
    for repeat in range(args.repeats):
        times["scan, one thread"].append(scan_seconds(root, 1))
        times["scan, a thread a core"].append(scan_seconds(root, catalog.SCAN_THREADS))
        for name, module, transform in (("pass, RGB, spinning", spinning, before_tf),
                                        ("pass, grey kept, not spinning", fast, now_tf)):
            started = time.perf_counter()
            forward_images(module, paths, transform, batch_size=32, log=None)
            times[name].append(time.perf_counter() - started)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True)

    median = {k: statistics.median(v) for k, v in times.items()}
    print("\n| what | before s | now s | now / before |\n|---|---:|---:|---:|")
    for what, before, now in (("first scan", "scan, one thread", "scan, a thread a core"),
                              ("feature pass", "pass, RGB, spinning", "pass, grey kept, not spinning")):
        print(f"| {what} | {median[before]:.1f} | {median[now]:.1f} | {median[now] / median[before]:.2f}× |")
    n = len(paths)
    print(f"\nfeature pass: {n / median['pass, RGB, spinning']:.1f} → {n / median['pass, grey kept, not spinning']:.1f} photos/s")


if __name__ == "__main__":
    main()
