"""How long after "Start training" the Train page shows the first epoch's point.

    python bench/train_page_first_point.py [--data DIR]

Drives the real page with Streamlit's AppTest on the full ELPV set with the default form
settings: clicks Start, then reruns the page once a second (as the fragment does) until the
curves have a point. Measured with a cold feature cache, then again with a warm one.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def first_point(folder: str, runs: str) -> tuple[float, str]:
    from streamlit.testing.v1 import AppTest

    from core.runs.store import RunStore

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.session_state["dataset"] = folder
    at.session_state["runs_dir"] = runs
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    button = next(b for b in at.button if b.label == "Start training")
    start = time.perf_counter()
    button.click().run()
    while time.perf_counter() - start < 1200:
        time.sleep(1.0)
        at.run()
        if any("val_acc" in df.value.columns and len(df.value) for df in at.dataframe):
            elapsed = time.perf_counter() - start
            run_id = RunStore(runs).list()["id"].iloc[0]
            while RunStore(runs).get(run_id)["status"] in ("queued", "running"):
                time.sleep(1)
            return elapsed, run_id
    raise TimeoutError("no epoch after 20 minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data")
    args = parser.parse_args()
    from core.data import samples

    folder = args.data or str(samples.fetch("elpv"))
    os.environ["GRAFT_HOME"] = tempfile.mkdtemp(prefix="graft-bench-home-")  # cold caches
    cold, _ = first_point(folder, tempfile.mkdtemp())
    warm, _ = first_point(folder, tempfile.mkdtemp())
    print(f"{folder}: first epoch point on the Train page {cold:.1f} s after Start (cold feature cache), "
          f"{warm:.1f} s (warm cache)")


if __name__ == "__main__":
    main()
