"""Shared fixtures: the real ELPV sample and small subsets of it, a real trained run, and an isolated
Graft cache / torch hub per test session. No network beyond the package registry, no GPU. Helpers
that are not fixtures live in tests/helpers.py."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from helpers import elpv, make_subset, run_cli

os.environ.setdefault("GRAFT_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # parallel test workers share the cores between them
    os.environ.setdefault("GRAFT_THREADS", str(max(1, len(os.sched_getaffinity(0))
                                                   // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


def pytest_configure(config):
    from streamlit import config as streamlit_config

    # The app hides error details from browsers (.streamlit/config.toml); AppTest must see every exception.
    streamlit_config.set_option("client.showErrorDetails", "full")


@pytest.fixture(scope="session")
def elpv_dir() -> Path:
    """The ELPV sample folder (fetched from PyPI on first use, then reused from the Graft cache)."""
    return elpv()


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Everything a test writes (scan and feature caches, torch hub) goes to a fresh folder per session;
    typed folders must lie under the tests' own folders or the sample's."""
    home = tmp_path_factory.mktemp("graft_home")
    old = {k: os.environ.get(k) for k in ("GRAFT_HOME", "TORCH_HOME", "GRAFT_DATA_ROOTS")}
    sample = elpv()  # into the real cache, before GRAFT_HOME points elsewhere
    os.environ["GRAFT_HOME"] = str(home)
    os.environ["TORCH_HOME"] = str(home / "torch")
    os.environ["GRAFT_DATA_ROOTS"] = os.pathsep.join([str(tmp_path_factory.getbasetemp()), str(sample.parent)])
    yield home
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def no_stray_training():
    """A detached process a test started (a training through `jobs.start`, a decoding) ends with the test, even
    when the test failed before it could stop it: no worker keeps the CPUs busy for the tests after it."""
    from core.base import processes

    before = set(id(c) for c in processes.children)
    yield
    for child in list(processes.children):
        if id(child) not in before and child.poll() is None:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.wait()


@pytest.fixture(scope="session")
def elpv_small(tmp_path_factory) -> Path:
    """40 real images a class, 4 classes."""
    return make_subset(tmp_path_factory.mktemp("elpv_small"), 40)


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
