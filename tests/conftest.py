"""Shared fixtures: the real ELPV sample set (fetched from PyPI once, cached), small subsets
of it, and an isolated Graft cache / torch hub per test session. No network beyond the
package registry, no GPU."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("GRAFT_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


from streamlit import config as _streamlit_config  # noqa: E402

from core.data import samples  # noqa: E402  (after the env above)

# The app hides error details from browsers (.streamlit/config.toml); AppTest must see every exception.
_streamlit_config.set_option("client.showErrorDetails", "full")

# The sample set is fetched into the real cache so CI runs reuse it; everything else a test
# writes (scan and feature caches, torch hub) goes to a fresh folder per session.
ELPV = samples.fetch("elpv", progress=False)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    home = tmp_path_factory.mktemp("graft_home")
    old = {k: os.environ.get(k) for k in ("GRAFT_HOME", "TORCH_HOME", "GRAFT_DATA_ROOTS")}
    os.environ["GRAFT_HOME"] = str(home)
    os.environ["TORCH_HOME"] = str(home / "torch")
    # Folders typed into the dashboard must lie under these: the tests' own folders and the sample.
    os.environ["GRAFT_DATA_ROOTS"] = os.pathsep.join([str(tmp_path_factory.getbasetemp()), str(ELPV.parent)])
    yield home
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def no_stray_training():
    """A training process a test started (through `jobs.start`) ends with the test, even when the test
    failed before it could stop it: no worker keeps the CPUs busy for the tests after it."""
    from core.train import jobs

    before = set(id(c) for c in jobs._children)
    yield
    import signal

    for child in list(jobs._children):
        if id(child) not in before and child.poll() is None:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.wait()


def make_subset(dest: Path, per_class: int, classes=None) -> Path:
    """Copy `per_class` real ELPV images of each class (spread over the class) into `dest`."""
    for class_dir in sorted(ELPV.iterdir()):
        if not class_dir.is_dir() or (classes and class_dir.name not in classes):
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
        files = sorted((ELPV / cls).glob("*.png"))[:per_class]
        for name, chunk in (("train", files[:train]), ("val", files[train:train + val]),
                            ("test", files[train + val:])):
            (dest / name / cls).mkdir(parents=True, exist_ok=True)
            for f in chunk:
                shutil.copy2(f, dest / name / cls / f.name)
    return dest


def wait_for(predicate, timeout: float = 240.0) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def chart_data(at) -> list:
    """The data frames behind the altair charts an AppTest page drew (what the browser plots)."""
    import pyarrow as pa

    frames = []
    for chart in at.get("vega_lite_chart"):
        for dataset in chart.proto.datasets:
            frames.append(pa.ipc.open_stream(dataset.data.data).read_pandas())
    return frames


@pytest.fixture(scope="session")
def elpv_small(tmp_path_factory) -> Path:
    """40 real images a class, 4 classes."""
    return make_subset(tmp_path_factory.mktemp("elpv_small"), 40)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def trained_run(elpv_small, tmp_path_factory) -> tuple[Path, str, str]:
    """A real run: frozen Lite0 on the ELPV subset, trained through the CLI.

    Returns (runs folder, run id, CLI stdout)."""
    runs = tmp_path_factory.mktemp("runs")
    result = run_cli("train", str(elpv_small), "--epochs", "8", "--runs", str(runs), "--name", "subset")
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    run_id = last.split()[0].split("=", 1)[1]
    return runs, run_id, result.stdout


def chromium() -> str:
    """Debian's Chromium for Playwright (no browser download is possible here). Missing: the test is
    skipped on a developer's machine and fails under CI (`make test` installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: `make test` installs it (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return found
