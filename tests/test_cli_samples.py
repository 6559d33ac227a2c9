"""The command line and the bundled sample sets."""
from __future__ import annotations

import os
import shutil
import sys

import pytest

from core.data import samples
from core.runs.folder import RunDir
from core.runs.store import RunStore

from helpers import elpv, run_cli

COMMANDS = ["samples", "scan", "train", "resume", "eval", "predict", "runs", "backbones", "serve"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0 and result.stdout.startswith(f"usage: graft {command} ")  # this command's own


def test_elpv_sample_is_the_real_folder_per_class_set():
    counts = {d.name: len(list(d.glob("*.png"))) for d in elpv().iterdir() if d.is_dir() and d.name != ".graft"}
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
    assert result.returncode == 0, result.stderr
    on_disk = {d.name: len(list(d.glob("*.png"))) for d in elpv_small.iterdir() if d.is_dir() and d.name[0] != "."}
    assert f"{sum(on_disk.values())} images, {len(on_disk)} classes, 0 skipped" in result.stdout
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line.startswith("defect_")}
    assert {label: int(row[-1]) for label, row in rows.items()} == on_disk  # the total column: the files
    assert all(sum(map(int, row[:-1])) == int(row[-1]) for row in rows.values())  # train + val + test
    runs, run_id, _ = trained_run
    table = run_cli("runs", "--runs", str(runs))
    stored = RunStore(runs).get(run_id)
    row = next(line.split() for line in table.stdout.splitlines() if line.startswith(run_id))
    assert "completed" in row and row[-1] == f"{stored['test_acc']:.4f}" and row[-2] == f"{stored['best_val_acc']:.4f}"
    ev = run_cli("eval", run_id, "--runs", str(runs))
    assert ev.returncode == 0, ev.stderr[-2000:]
    metrics = RunDir(runs / run_id).metrics()
    printed = {line.split()[0]: line.split()[1] for line in ev.stdout.splitlines() if line.startswith("  ")
               and len(line.split()) == 2}
    assert printed["accuracy"] == f"{metrics['accuracy']:.4f}"
    assert printed["balanced_accuracy"] == f"{metrics['balanced_accuracy']:.4f}"
    assert f"Right on {metrics['correct']} of {metrics['n']} test images" in ev.stdout


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
