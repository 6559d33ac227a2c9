"""What the tests share besides fixtures: the real ELPV sample (fetched on first use, never at import),
small real subsets of it, generated images, the CLI in a subprocess, the dashboard's pages through
AppTest, and Debian's Chromium for the browser tests. Test files import from here, never from each other."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def elpv() -> Path:
    """The ELPV sample (2,624 real solar-cell photos, 4 classes), fetched from PyPI once into the real
    Graft cache so later sessions and CI reuse it."""
    from core.data import samples

    return samples.fetch("elpv", progress=False)


def make_subset(dest: Path, per_class: int, classes=None) -> Path:
    """Copy `per_class` real ELPV images of each class (spread over the class) into `dest`."""
    for class_dir in sorted(elpv().iterdir()):
        if not class_dir.is_dir() or class_dir.name.startswith(".") or (classes and class_dir.name not in classes):
            continue
        files = sorted(class_dir.glob("*.png"))
        step = max(1, len(files) // per_class)
        (dest / class_dir.name).mkdir(parents=True, exist_ok=True)
        for f in files[::step][:per_class]:
            shutil.copy2(f, dest / class_dir.name / f.name)
    return dest


def make_split_layout(dest: Path, per_class: int, train: int, val: int,
                      classes=("defect_000", "defect_100")) -> Path:
    """ROOT/{train,val,test}/<class>/ from real ELPV images: `train`, `val`, then the rest as test."""
    for cls in classes:
        files = sorted((elpv() / cls).glob("*.png"))[:per_class]
        for name, chunk in (("train", files[:train]), ("val", files[train:train + val]),
                            ("test", files[train + val:])):
            (dest / name / cls).mkdir(parents=True, exist_ok=True)
            for f in chunk:
                shutil.copy2(f, dest / name / cls / f.name)
    return dest


def house_drawing() -> Image.Image:
    """A generated line drawing of a house: nothing like a solar cell."""
    image = Image.new("RGB", (300, 300), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((70, 140, 230, 260), outline="black", width=6)
    draw.polygon([(60, 145), (150, 60), (240, 145)], outline="black", width=6)
    draw.rectangle((130, 190, 170, 260), fill="saddlebrown")
    draw.ellipse((240, 20, 290, 70), fill="gold")
    return image


def wait_for(predicate, timeout: float = 240.0) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(port: int) -> bool:
    """Whether a dashboard on this loopback port answers its health check."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@contextmanager
def dashboard(env: dict, log: Path | None = None):
    """The real dashboard (`serve.py` on a free loopback port, with `env`) for the block: yields (port,
    process); its output goes to `log` (else nowhere); it is stopped afterwards, whatever happened."""
    port = free_port()
    out = open(log, "wb") if log else subprocess.DEVNULL
    process = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--server.headless", "true",
                                "--server.address", "127.0.0.1", "--server.port", str(port)],
                               cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_for(lambda: answers(port), timeout=60), log.read_text() if log else "the dashboard did not start"
        yield port, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        if log:
            out.close()


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`graft ARGS` in a fresh process (the installed package, as a user runs it)."""
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})})


def open_page(page: str, dataset: str, runs: str, **state):
    """A dashboard page through Streamlit's AppTest, entered through app.py like a browser does."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["dataset"] = dataset
    at.session_state["runs_dir"] = runs
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if page != "pages/home.py":
        at.switch_page(page)
        at.run()
    return at


def open_section(at, label: str):
    """Open one of the Results page's tabs (a section is computed only when its tab is open) and rerun."""
    at.session_state["results_section"] = label
    at.run()
    return at


def run_state(trained_run) -> tuple[dict, Path, str]:
    """(session state opening `trained_run` on Results and Predict, runs folder, run id)."""
    runs, run_id, _ = trained_run
    return dict(results_run=run_id, predict_run=run_id), runs, run_id


def chart_data(at) -> list:
    """The data frames behind the altair charts an AppTest page drew (what the browser plots)."""
    import pyarrow as pa

    frames = []
    for chart in at.get("vega_lite_chart"):
        for dataset in chart.proto.datasets:
            frames.append(pa.ipc.open_stream(dataset.data.data).read_pandas())
    return frames


def chromium() -> str:
    """Debian's Chromium for Playwright (no browser download is possible here). Missing: the test is
    skipped on a developer's machine and fails under CI (`make test` installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: `make test` installs it (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return found
