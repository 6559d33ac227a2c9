"""torchrun on CPU (gloo): two processes, one run, one writer; the default run's features read in shares."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from core.base.storage import load_torch
from core.runs.store import RunStore

from helpers import ROOT, free_port


@pytest.mark.slow
def test_torchrun_two_processes_train_one_run(elpv_small, tmp_path):
    runs = tmp_path / "runs"
    port = free_port()  # for the rendezvous
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "-m", "core", "train", str(elpv_small), "--freeze", "partial", "--input-size", "64",
           "--epochs", "2", "--batch-size", "8", "--workers", "0", "--runs", str(runs)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    table = RunStore(runs).list()
    assert len(table) == 1 and table["status"].iloc[0] == "completed"  # rank 1 wrote no run of its own
    run_id = table["id"].iloc[0]
    assert RunStore(runs).epochs(run_id)["epoch"].tolist() == [1, 2]
    assert result.stdout.count("epoch 1/2:") == 1  # logs from rank 0 only
    assert "head.1.weight" in load_torch(runs / run_id / "best.pt")  # unwrapped names, no 'module.'


def _rows(folder) -> dict:
    """Every feature vector of a feature-cache folder: (cache file, sha1, view) → vector."""
    rows = {}
    for path in folder.glob("*.sqlite"):
        with sqlite3.connect(path) as db:
            for sha, view, blob in db.execute("SELECT sha1, view, vec FROM features"):
                rows[(path.name, sha, view)] = np.frombuffer(blob, dtype=np.float32)
    return rows


@pytest.mark.slow
def test_torchrun_default_run_reads_features_in_shares(trained_run, elpv_small, isolated_cache, tmp_path):
    """The default run (frozen backbone, cached features) under torchrun with 2 gloo ranks and a cold feature
    cache: the ranks split the photos, and every feature and the test accuracy equal one process's
    (`trained_run`, the same subset and settings). Its speed is bench/scale.py's to measure."""
    runs, run_id, _ = trained_run
    home = tmp_path / "home"
    shutil.copytree(isolated_cache / "onnx", home / "onnx")  # the exported backbone; no features
    threads = max(2, int(os.environ.get("GRAFT_THREADS", "2")))  # one a rank, never more than given
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "core", "train", str(elpv_small), "--epochs", "8", "--runs", str(tmp_path / "runs"),
           "--name", "subset"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "GRAFT_HOME": str(home), "GRAFT_THREADS": str(threads)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.count("features eval:") >= 1 and "epoch 8/8" in result.stdout
    table = RunStore(tmp_path / "runs").list()
    assert len(table) == 1 and table["status"].iloc[0] == "completed"

    single, shared = _rows(isolated_cache / "features"), _rows(home / "features")
    assert len(shared) == 160  # every photo once, train, val and test, in one cache however many ranks
    assert set(shared) <= set(single)
    assert max(float(np.abs(shared[k] - single[k]).max()) for k in shared) <= 1e-5
    reference = RunStore(runs).list().set_index("id").loc[run_id, "test_acc"]
    assert abs(table["test_acc"].iloc[0] - reference) <= 0.01
