"""Prediction latency and throughput with the default backbone on this machine.

    python bench/predict_latency.py [--run RUN_DIR]

Without --run, trains a small default run (frozen Lite0 head, ELPV subset) first. Prints the
model load time, single-image latency (median and p90 of 50, after the load; target <= 100 ms
on 2 cores) against the bare backbone forward as a baseline, and batch throughput for the
PyTorch run, ONNX Runtime and TorchScript exports.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from core.base.runtime import configure_threads
from core.data import samples
from core.data.images import load_rgb
from core.deploy.export import export
from core.deploy.predict import Predictor
from core.train.config import TrainConfig
from core.train.session import fit


def small_run(work: Path, epochs: int = 5) -> Path:
    """A small frozen-Lite0 run on 40 ELPV photos a class (also bench/serve_load.py's)."""
    elpv = samples.fetch("elpv")
    subset = work / "elpv"
    for cls in sorted(p for p in elpv.iterdir() if p.is_dir()):
        (subset / cls.name).mkdir(parents=True)
        for f in sorted(cls.glob("*.png"))[:40]:
            shutil.copy2(f, subset / cls.name / f.name)
    run_id = fit(TrainConfig(data=str(subset), epochs=epochs), work / "runs", progress=False)
    return work / "runs" / run_id


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run")
    args = parser.parse_args()
    configure_threads()
    work = Path(tempfile.mkdtemp(prefix="graft-bench-"))
    run_dir = Path(args.run) if args.run else small_run(work)
    files = sorted(Path(Predictor.from_run(run_dir).card["config"]["data"]).rglob("*.png"))[:64]
    start = time.perf_counter()
    predictor = Predictor.from_run(run_dir)
    load = time.perf_counter() - start
    predictor.predict(files[:1])  # warm-up
    single = timed(lambda: predictor.predict(files[:1]), 50)
    image = load_rgb(files[0])
    x = predictor.transform(image).unsqueeze(0).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        bare = timed(lambda: predictor.model(x), 50)
    median, p90 = statistics.median(single), sorted(single)[int(0.9 * len(single))]
    print(f"model load: {load * 1000:.0f} ms")
    print(f"single image (decode + preprocess + forward): median {median * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms "
          f"(target <= 100 ms)")
    print(f"bare forward of one preprocessed image: median {statistics.median(bare) * 1000:.1f} ms "
          f"-> the rest is {median / statistics.median(bare):.2f}x the forward")
    batch = timed(lambda: predictor.predict(files, batch_size=32), 3)
    print(f"batch throughput (PyTorch, channels_last): {len(files) / min(batch):.1f} img/s")
    out = export(run_dir, work / "export")
    for prefer in ("onnx", "torchscript"):
        exported = Predictor.from_export(work / "export", prefer=prefer)
        exported.predict(files[:2])
        t = timed(lambda: exported.predict(files, batch_size=32), 3)
        one = statistics.median(timed(lambda: exported.predict(files[:1]), 30))
        print(f"{prefer:12s}: {len(files) / min(t):.1f} img/s batch, single image {one * 1000:.1f} ms; "
              f"parity max diff {out['parity'][prefer]['max_abs_diff']:.1e}")


if __name__ == "__main__":
    main()
