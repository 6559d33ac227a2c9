"""The command line and the bundled sample sets."""
from __future__ import annotations

import os
import shutil
import sys

import pytest

from core.data import samples

from helpers import elpv, run_cli

COMMANDS = ["samples", "scan", "train", "resume", "eval", "predict", "runs", "backbones"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout


def test_elpv_sample_is_the_real_folder_per_class_set():
    counts = {d.name: len(list(d.glob("*.png"))) for d in elpv().iterdir() if d.is_dir()}
    assert counts == {"defect_000": 1508, "defect_033": 295, "defect_067": 106, "defect_100": 715}


def test_fetch_is_idempotent(tmp_path):
    dest = tmp_path / "elpv"
    shutil.copytree(elpv(), dest)
    stamp = (dest / samples.MARKER).stat().st_mtime_ns
    victim = next((dest / "defect_067").glob("*.png"))
    victim.unlink()
    assert samples.fetch("elpv", dest, progress=False) == dest
    assert (dest / samples.MARKER).stat().st_mtime_ns == stamp
    assert not victim.exists()  # a finished folder is left alone: nothing fetched again


def test_fashion_mnist_without_apt_says_so(tmp_path):
    result = run_cli("samples", "fashion-mnist", str(tmp_path / "fm"),
                     env={"PATH": os.path.dirname(sys.executable)})
    assert result.returncode == 2
    assert "apt-get" in result.stderr and "dataset-fashion-mnist" in result.stderr


@pytest.mark.slow
def test_scan_and_runs_commands(elpv_small, trained_run):
    result = run_cli("scan", str(elpv_small))
    assert result.returncode == 0
    assert "4 classes" in result.stdout and "defect_067" in result.stdout
    runs, run_id, _ = trained_run
    table = run_cli("runs", "--runs", str(runs))
    assert run_id in table.stdout and "completed" in table.stdout
    ev = run_cli("eval", run_id, "--runs", str(runs))
    assert ev.returncode == 0 and "balanced_accuracy" in ev.stdout


def test_train_on_a_missing_folder_is_a_clear_error(tmp_path):
    result = run_cli("train", str(tmp_path / "nowhere"), "--runs", str(tmp_path / "runs"))
    assert result.returncode != 0
    assert "nowhere" in result.stderr and "not a folder" in result.stderr


def test_train_into_a_run_that_does_not_exist_fails_before_training(elpv_small, tmp_path):
    runs = tmp_path / "runs"
    result = run_cli("train", str(elpv_small), "--run-id", "nope", "--runs", str(runs))
    assert result.returncode != 0
    assert "--run-id nope" in result.stderr and "no such run" in result.stderr
    assert not (runs / "nope").exists()  # nothing was trained into a folder the store does not know
