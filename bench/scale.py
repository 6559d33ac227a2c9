"""Graft at scale: synthetic photo folders of growing size, and what each stage costs per photo.

    python bench/scale.py [SIZE ...] [--dir DIR] [--page] [--features N] [--score N] [--keep]

SIZE: photos a folder (default 10000 100000; 200000 for the scan goals; 1000000 needs ~4 GB of disk and ~4
minutes to make). Above 10,000 new files a first scan reads headers and content hashes only; --decode also
times the decoding pass, in a process of its own as the product runs it.
Each folder holds distinct 32x32 greyscale PNGs (random noise, so no two are alike) in 4 classes, made
once under DIR (default: a temp folder) and removed afterwards unless --keep.

Per size it prints:
- scan (cold scan cache), rescan (nothing changed), split: seconds, files/s and peak memory of a fresh
  process; with --page, the Dataset page opened in a new session of that process, nothing cached (the
  page's run, without the component discovery each new AppTest does and a server does once), and the
  process's peak with torch and Streamlit loaded;
- features: seconds a photo to read N photos' frozen features (the default backbone) in one process with
  the cores Graft may use, and in 2 torchrun ranks sharing them (`FeatureCache(shared=True)`), ratio;
- scoring: photos/s of `graft predict` locally and with --engine ray (a local 2-CPU cluster, start-up
  included) on N photos, with the ONNX export of a 1-epoch run trained here on 200 photos.
Then each stage's growth exponent (slope of log time over log size; 1 = linear) and the per-file cost
of the largest size over the smallest (the scan goal: <= 1.25).

Goals (issue 30, 2 cores): cold scan >= 10,000 files/s, per-file cost flat from 20,000 to 1,000,000
(<= 1.25x), rescan of an unchanged million <= 5 s, Dataset page <= 2 s, peak memory <= 2 GB; 2 ranks
<= 1.3x one process on the features. Timings on a machine shared with other work vary: compare the
ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 4


def make_folder(folder: Path, size: int) -> Path:
    """`size` distinct PNGs in CLASSES class folders (made once: a complete folder is reused)."""
    from PIL import Image

    done = folder / ".complete"
    if done.is_file():
        return folder
    rng = np.random.default_rng(size)
    for k in range(CLASSES):
        (folder / f"class_{k}").mkdir(parents=True, exist_ok=True)
    for i in range(size):
        pixels = rng.integers(0, 256, (32, 32), dtype=np.uint8)
        pixels[0, :4] = np.frombuffer(i.to_bytes(4, "little"), dtype=np.uint8)  # distinct even by chance
        Image.fromarray(pixels).save(folder / f"class_{i % CLASSES}" / f"{i:07d}.png", compress_level=1)
    done.write_text(str(size))
    return folder


def peak_mb() -> float:
    """This process's peak resident memory in MB. (Not its children's: a spawned child's count starts from its
    parent's resident memory, taken over when it was forked before it started Python, so it says nothing.)"""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scan_worker(folder: str, page: bool) -> None:
    """In a fresh process with a fresh GRAFT_HOME: scan, rescan, split (then the Dataset page, as a dashboard
    server opens it); JSON on stdout."""
    from core.data import catalog

    out = {}
    start = time.perf_counter()
    index = catalog.scan(folder)
    out["scan"] = time.perf_counter() - start
    start = time.perf_counter()
    catalog.scan(folder)
    out["rescan"] = time.perf_counter() - start
    start = time.perf_counter()
    catalog.split(index)
    out["split"] = time.perf_counter() - start
    out["files"], out["peak_mb"] = len(index.items), peak_mb()
    del index  # the page holds its own, as a dashboard server would
    if page:
        out["page"], out["page_apptest"] = open_page(folder)
        out["page_peak_mb"] = peak_mb()
    print(json.dumps(out))


def decode_worker(folder: str) -> None:
    """In a fresh process, on the scan the scan worker left: the decoding pass (as `graft scan --decode` and the
    Dataset page's background decoding run it); JSON on stdout."""
    from core.data import catalog

    start = time.perf_counter()
    index = catalog.scan(folder, decode=True)
    print(json.dumps({"decode": time.perf_counter() - start, "undecoded": index.undecoded,
                      "decode_peak_mb": peak_mb()}))


def open_page(folder: str) -> tuple[float, float]:
    """The Dataset page opened in a new session after the first (Streamlit's AppTest), nothing cached: (the page's
    run, the AppTest call). The difference is Streamlit's component discovery, which every new AppTest does and a
    server does once when it starts."""
    import streamlit as st
    from streamlit.components.v2.component_manager import BidiComponentManager
    from streamlit.testing.v1 import AppTest

    discovery, discover = [0.0], BidiComponentManager.discover_and_register_components

    def timed_discovery(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return discover(self, *args, **kwargs)
        finally:
            discovery[0] += time.perf_counter() - start

    BidiComponentManager.discover_and_register_components = timed_discovery
    os.environ["GRAFT_DATA_ROOTS"] = str(Path(folder).parent)  # a folder the dashboard may open
    seconds = []
    for _ in range(2):
        st.cache_data.clear()
        st.cache_resource.clear()
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
        at.session_state["dataset"] = folder
        at.session_state["runs_dir"] = tempfile.mkdtemp()
        at.switch_page("pages/dataset.py")
        discovery[0], start = 0.0, time.perf_counter()
        at.run()
        seconds.append((time.perf_counter() - start - discovery[0], time.perf_counter() - start))
        if at.exception or at.error or not any("total" in df.value.columns for df in at.dataframe):
            sys.exit(f"the Dataset page did not show the folder: {[e.value for e in at.error]} {at.exception}")
    BidiComponentManager.discover_and_register_components = discover
    return seconds[1]


def features_worker(paths_file: str, out_file: str) -> None:
    """One process, or one torchrun rank: N photos' features into a fresh cache; rank 0 writes seconds."""
    from core.base import distributed, runtime
    from core.models import backbones
    from core.models.choices import DEFAULT_BACKBONE
    from core.models.features import FeatureCache
    from core.models.preprocess import eval_transform
    from core.train.config import default_features

    runtime.configure_threads()
    distributed.setup()
    paths = [Path(p) for p in Path(paths_file).read_text().split("\n") if p]
    model = backbones.create(DEFAULT_BACKBONE, CLASSES, "head", features=default_features(DEFAULT_BACKBONE, "head"))
    prep = backbones.preprocessing_for(DEFAULT_BACKBONE)
    cache = FeatureCache(model.backbone, prep, root=Path(out_file).with_suffix(".features"), shared=True)
    cache._runner()  # the ONNX export (once per machine) is not the reading
    distributed.barrier()
    start = time.perf_counter()
    cache.features(paths, [f"{i:040x}" for i in range(len(paths))], "eval", eval_transform(prep), log=None)
    seconds = time.perf_counter() - start
    if distributed.is_main():
        Path(out_file).write_text(json.dumps({"seconds": seconds, "threads": runtime.cpu_count()}))
    distributed.cleanup()


def features(folder: Path, n: int, env: dict) -> dict:
    """Seconds a photo: one process vs 2 torchrun ranks on the same N photos."""
    from core.base.cores import cpu_count

    paths = sorted(folder.rglob("*.png"))[:n]
    work = Path(tempfile.mkdtemp(prefix="graft-bench-"))
    (work / "paths.txt").write_text("\n".join(map(str, paths)))
    me = [str(Path(__file__).resolve()), "--features-worker", str(work / "paths.txt")]
    port = 29500 + os.getpid() % 1000
    runs = {"one": [sys.executable, *me, str(work / "one.json")],
            "two": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                    *me, str(work / "two.json")]}
    result = {}
    for name, cmd in runs.items():
        subprocess.run(cmd, check=True, cwd=ROOT, env={**env, "GRAFT_THREADS": str(cpu_count())},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result[name] = json.loads((work / f"{name}.json").read_text())["seconds"] / len(paths)
    shutil.rmtree(work, ignore_errors=True)
    return result


def trained_export(folder: Path, work: Path, env: dict) -> Path:
    """A 1-epoch default run on 200 photos of `folder`, exported to ONNX (once a bench)."""
    small = work / "small"
    for k in range(CLASSES):
        (small / f"class_{k}").mkdir(parents=True, exist_ok=True)
        for p in sorted((folder / f"class_{k}").glob("*.png"))[:50]:
            shutil.copy2(p, small / f"class_{k}" / p.name)
    runs = work / "runs"
    trained = subprocess.run([sys.executable, "-m", "core", "train", str(small), "--epochs", "1", "--runs", str(runs),
                              "--name", "bench"], check=True, cwd=ROOT, env=env, capture_output=True, text=True)
    run_id = trained.stdout.strip().splitlines()[-1].split()[0].split("=", 1)[1]  # run_id=… test_acc=…
    subprocess.run([sys.executable, "-m", "core", "export", run_id, str(work / "export"), "--format", "onnx",
                    "--runs", str(runs)], check=True, cwd=ROOT, env=env, capture_output=True)
    return work / "export"


def scoring(export: Path, folder: Path, n: int, env: dict) -> dict:
    """Photos/s of `graft predict` on N photos: local, and --engine ray (start-up included)."""
    sample = Path(tempfile.mkdtemp(prefix="graft-bench-score-"))
    for p in sorted(folder.rglob("*.png"))[:n]:
        os.symlink(p, sample / p.name)
    result = {}
    for name, extra in (("local", []), ("ray", ["--engine", "ray"])):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "core", "predict", str(export), str(sample), *extra,
                        "--csv", str(sample / f"{name}.csv")], check=True, cwd=ROOT, env=env,
                       capture_output=True)
        result[name] = n / (time.perf_counter() - start)
    shutil.rmtree(sample, ignore_errors=True)
    return result


def worker(flag: str, folder: Path, *flags: str, env: dict) -> dict:
    """Run this script as a worker (`--scan-worker`, `--decode-worker`) in a fresh process; its JSON."""
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), flag, str(folder), *flags], check=True,
                         cwd=ROOT, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def exponent(sizes: list[int], seconds: list[float]) -> float:
    """Slope of log(seconds) over log(size): 1 is linear."""
    if len(sizes) < 2:
        return float("nan")
    return float(np.polyfit(np.log(sizes), np.log(np.maximum(seconds, 1e-9)), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--dir", help="where the synthetic folders are made (default: a temp folder)")
    parser.add_argument("--page", action="store_true", help="also open the Dataset page (Streamlit AppTest)")
    parser.add_argument("--features", type=int, default=256, metavar="N", help="photos for the feature pass")
    parser.add_argument("--score", type=int, default=512, metavar="N", help="photos for local vs Ray scoring")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic folders")
    parser.add_argument("--decode", action="store_true", help="also time the decoding pass a large first scan leaves "
                        "(`graft scan --decode`: about a millisecond a photo a core)")
    parser.add_argument("--scan-worker", help=argparse.SUPPRESS)
    parser.add_argument("--decode-worker", help=argparse.SUPPRESS)
    parser.add_argument("--features-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scan_worker:
        return scan_worker(args.scan_worker, args.page)
    if args.decode_worker:
        return decode_worker(args.decode_worker)
    if args.features_worker:
        return features_worker(*args.features_worker)

    base = Path(args.dir or tempfile.mkdtemp(prefix="graft-bench-scale-"))
    home = Path(tempfile.mkdtemp(prefix="graft-bench-home-"))  # shared: the exported backbone is made once
    env = {**os.environ, "GRAFT_DATA_ROOTS": os.pathsep.join([str(base), tempfile.gettempdir()])}
    rows, export, run_work = [], None, Path(tempfile.mkdtemp(prefix="graft-bench-run-"))
    for size in sorted(args.sizes):
        folder = base / f"photos-{size}"
        start = time.perf_counter()
        make_folder(folder, size)
        print(f"\n{size:,} photos in {folder} (made in {time.perf_counter() - start:.0f} s)", flush=True)
        scan_home = tempfile.mkdtemp(prefix="graft-bench-scan-")  # a cold scan cache for each size
        row = {"size": size, **worker("--scan-worker", folder, *(["--page"] if args.page else []),
                                      env={**env, "GRAFT_HOME": scan_home})}
        if args.decode:
            row.update(worker("--decode-worker", folder, env={**env, "GRAFT_HOME": scan_home}))
        shutil.rmtree(scan_home, ignore_errors=True)
        print(f"  scan    {row['scan']:8.2f} s  {size / row['scan']:9.0f} files/s  (peak {row['peak_mb']:.0f} MB)")
        print(f"  rescan  {row['rescan']:8.2f} s  {size / row['rescan']:9.0f} files/s")
        print(f"  split   {row['split']:8.2f} s")
        if args.page:
            print(f"  Dataset page {row['page']:.2f} s (goal <= 2 s; {row['page_apptest']:.2f} s with AppTest's "
                  f"component discovery, which a server does once at start; peak {row['page_peak_mb']:.0f} MB "
                  "with torch and Streamlit loaded)")
        if args.decode:
            print(f"  decoding pass {row['decode']:8.2f} s  {size / row['decode']:9.0f} files/s  "
                  f"({row['undecoded']} left undecoded; peak {row['decode_peak_mb']:.0f} MB, a process of its own)")
        if args.features:
            row["features"] = features(folder, args.features, {**env, "GRAFT_HOME": str(home)})
            one, two = row["features"]["one"], row["features"]["two"]
            print(f"  features {one * 1000:.1f} ms/photo in 1 process, {two * 1000:.1f} ms/photo in 2 ranks "
                  f"({two / one:.2f}x; goal <= 1.3x)")
        if args.score:
            if export is None:
                export = trained_export(folder, run_work, {**env, "GRAFT_HOME": str(home)})
            row["scoring"] = scoring(export, folder, min(args.score, size), {**env, "GRAFT_HOME": str(home)})
            print(f"  scoring {row['scoring']['local']:.0f} photos/s local, {row['scoring']['ray']:.0f} photos/s "
                  f"on Ray (start-up included)")
        rows.append(row)
        if not args.keep and not args.dir:
            shutil.rmtree(folder, ignore_errors=True)
    summary(rows)
    for scratch in [home, run_work] + ([] if args.keep or args.dir else [base]):
        shutil.rmtree(scratch, ignore_errors=True)


def summary(rows: list[dict]) -> None:
    sizes = [r["size"] for r in rows]
    peak = max(r.get(k, 0) for r in rows for k in ("peak_mb", "page_peak_mb", "decode_peak_mb"))
    print(f"\npeak memory of any process (scan, Dataset page, decoding): {peak:.0f} MB (goal <= 2048 MB)")
    if len(rows) < 2:
        print("(one size: no growth exponent; give two sizes or more)")
        return
    print("growth exponents (slope of log time over log size; 1 = linear):")
    for stage in ("scan", "rescan", "split", "page"):
        if all(stage in r for r in rows):
            per_file = [r[stage] / r["size"] for r in rows]
            flat = per_file[-1] / per_file[0] if len(rows) > 1 else float("nan")
            print(f"  {stage:7s} {exponent(sizes, [r[stage] for r in rows]):5.2f}   per-file cost, largest over "
                  f"smallest size: {flat:.2f}x" + (" (goal <= 1.25x)" if stage == "scan" else ""))


if __name__ == "__main__":
    main()
