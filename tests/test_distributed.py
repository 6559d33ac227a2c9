"""torchrun + DistributedDataParallel on CPU (gloo): two processes, one run, one writer."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from core.base.storage import load_torch
from core.runs.store import RunStore

from helpers import ROOT


@pytest.mark.slow
def test_torchrun_two_processes_train_one_run(elpv_small, tmp_path):
    runs = tmp_path / "runs"
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
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
