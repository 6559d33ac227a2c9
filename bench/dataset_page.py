"""Dataset page at scale: a 70,000-image folder (Fashion-MNIST from the Debian package).

    python bench/dataset_page.py [--data DIR]

Prints the time of the first scan (cold scan cache), of a rescan (warm), and of opening the
Dataset page afterwards in a fresh session (Streamlit's AppTest, caches cleared), with peak
memory. Target: the page opens in <= 2 s after the first scan.
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="default: Fashion-MNIST fetched with `core samples fashion-mnist`")
    args = parser.parse_args()
    from core.data import catalog, samples

    folder = Path(args.data) if args.data else samples.fetch("fashion-mnist")
    os.environ["GRAFT_HOME"] = tempfile.mkdtemp(prefix="graft-bench-home-")  # cold scan cache
    start = time.perf_counter()
    index = catalog.scan(folder, progress=True)
    first = time.perf_counter() - start
    start = time.perf_counter()
    catalog.scan(folder)
    rescan = time.perf_counter() - start
    print(f"{folder}: {len(index.items)} images, {len(index.classes)} classes")
    print(f"first scan:  {first:7.2f} s  ({len(index.items) / first:.0f} files/s)  peak RSS {peak_mb():.0f} MB")
    print(f"rescan:      {rescan:7.2f} s  ({first / rescan:.0f}x faster than the first)")

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    timings = []
    for attempt in range(2):
        st.cache_data.clear()
        st.cache_resource.clear()
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.session_state["dataset"] = str(folder)
        at.session_state["runs_dir"] = tempfile.mkdtemp()
        at.switch_page("pages/dataset.py")  # straight to the Dataset page: its run includes the rescan
        start = time.perf_counter()
        at.run()
        timings.append(time.perf_counter() - start)
        assert not at.exception, at.exception
    print(f"open the Dataset page in a new session, after the first scan: {timings[1]:.2f} s "
          f"(target <= 2 s); the very first session of a fresh server process: {timings[0]:.2f} s "
          f"(it also imports torch, torchvision and timm and makes the first thumbnails)")
    print(f"peak RSS of this process: {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
