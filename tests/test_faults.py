"""Faults a shared machine meets: a full disk (a real file-size limit, RLIMIT_FSIZE, on real writes),
a feature cache that cannot be written, many starts at once on a new runs folder, a damaged or
emptied run store, and the training slot (resume and delete while a run trains)."""
from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest

from core.base.errors import Busy
from core.runs.folder import RunDir
from core.runs.store import RunStore

from helpers import ROOT, elpv, make_subset, run_cli

LIMIT = 2 << 20  # 2 MB: the scan, the run store and the feature cache fit, a Lite0 checkpoint does not


def _limited(limit: int = LIMIT):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _python(code: str, limit: int = LIMIT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=_limited(limit),
                          env=dict(os.environ))


@pytest.mark.slow
def test_a_full_disk_while_saving_a_checkpoint_names_the_file_and_keeps_the_previous(trained_run, tmp_path):
    import shutil

    runs, run_id, _ = trained_run
    run = tmp_path / run_id
    shutil.copytree(runs / run_id, run)
    before = hashlib.sha1((run / "best.pt").read_bytes()).hexdigest()
    result = _python(f"""
from core.base.errors import DiskFull
from core.runs.folder import RunDir
run = RunDir({str(run)!r})
model, _ = run.load_model()
try:
    run.save_best(model.state_dict())
except DiskFull as err:
    print("DiskFull:", err)
""")
    assert result.returncode == 0, result.stderr
    assert f"could not write {run / 'best.pt'}" in result.stdout and "free)" in result.stdout
    assert "previous version of the file is kept" in result.stdout
    assert hashlib.sha1((run / "best.pt").read_bytes()).hexdigest() == before
    assert not list(run.glob(".best.pt.*"))  # no half-written temp file left


@pytest.mark.slow
def test_training_on_a_full_disk_fails_with_one_clear_line(tmp_path):
    data = make_subset(tmp_path / "photos", 6, classes=("defect_000", "defect_100"))
    runs = tmp_path / "runs"
    result = subprocess.run([sys.executable, "-m", "core", "train", str(data), "--epochs", "1", "--runs", str(runs),
                             "--min-per-class", "3", "--workers", "0"], capture_output=True, text=True, preexec_fn=_limited(),
                            cwd=ROOT, env=dict(os.environ))
    assert result.returncode != 0
    assert "error: could not write" in result.stderr and ".pt" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "inline_container" not in result.stderr
    store = RunStore(runs)
    run = store.list().iloc[0]
    assert run["status"] == "failed" and "disk is full" in store.get(run["id"])["error"]


@pytest.mark.slow
def test_a_feature_cache_that_cannot_be_written_costs_only_the_reuse(elpv_small, tmp_path):
    result = _python(f"""
import logging, sys
from pathlib import Path
from core.models import backbones
from core.models.features import FeatureCache
from core.models.preprocess import eval_transform
logging.basicConfig(stream=sys.stdout, level=logging.WARNING)
model = backbones.create("efficientnet_lite0", 4, "head")
prep = backbones.preprocessing_for("efficientnet_lite0")
paths = sorted(Path({str(elpv_small)!r}).rglob("*.png"))[:64]
import hashlib
shas = [hashlib.sha1(p.read_bytes()).hexdigest() for p in paths]
cache = FeatureCache(model.backbone, prep, {str(tmp_path / "features")!r})
feats, ok = cache.features(paths, shas, "eval", eval_transform(prep), log=None, workers=0)
print("features", feats.shape[0], int(ok.sum()))
""", limit=64 << 10)  # 64 KB: the cache file cannot hold 64 features of 1280 floats
    assert result.returncode == 0, result.stderr[-3000:]
    assert "features 64 64" in result.stdout
    assert "could not write the feature cache" in result.stdout and "training goes on" in result.stdout


@pytest.mark.slow
def test_many_starts_at_once_on_a_new_runs_folder_never_see_a_locked_database(tmp_path):
    runs = tmp_path / "brand_new"
    code = f"from core.runs.store import RunStore; print(RunStore({str(runs)!r}).create({{'data': 'x'}}))"
    starts = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=dict(os.environ)) for _ in range(8)]
    outcomes = [p.communicate(timeout=120) for p in starts]
    assert all(p.returncode == 0 for p in starts), [err for _, err in outcomes]
    assert not any("locked" in err for _, err in outcomes)
    assert len(RunStore(runs).list()) == 8


@pytest.mark.slow
@pytest.mark.parametrize("cut", [0, 100])
def test_a_torn_checkpoint_is_a_clear_error_not_a_traceback(trained_run, tmp_path, cut):
    import shutil

    runs, run_id, _ = trained_run
    run = tmp_path / run_id
    shutil.copytree(runs / run_id, run)
    best = run / "best.pt"
    best.write_bytes(best.read_bytes()[:cut])
    result = run_cli("predict", str(run), str(next(elpv().rglob("*.png"))))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "best.pt" in result.stderr


@pytest.mark.slow
def test_the_training_slot_refuses_resume_and_delete_while_a_run_trains(trained_run, elpv_small, tmp_path):
    runs, run_id, _ = trained_run
    store = RunStore.open(tmp_path / "runs")
    busy = store.create({"data": str(elpv_small)}, "busy run")
    store.mark_running(busy)
    store.claim(busy, os.getpid())  # this process "trains"
    other = store.create({"data": str(elpv_small)})
    with pytest.raises(Busy):
        store.claim(other, os.getpid() + 1)
    with pytest.raises(Busy, match="stop it first"):
        store.delete(busy)
    from helpers import run_cli

    shutil.copytree(RunStore(runs).run_dir(run_id).path, store.root / "copied")
    result = run_cli("resume", str(store.root / "copied"))
    assert result.returncode == 3 and "one training at a time" in result.stderr and "Traceback" not in result.stderr
    store.release(busy)
    store.claim(other, os.getpid() + 1)  # free again
    store.release(other)


def test_a_damaged_run_history_is_rebuilt_from_the_run_folders(trained_run, tmp_path):
    runs, run_id, _ = trained_run
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    db = copy / "runs.sqlite"
    for suffix in ("-wal", "-shm"):
        (copy / f"runs.sqlite{suffix}").unlink(missing_ok=True)
    db.write_bytes(os.urandom(8192))
    store = RunStore(copy)
    assert "damaged" in store.recovered and list(copy.glob("runs.sqlite.damaged-*"))
    assert store.get(run_id)["status"] == "completed" and store.finished()["id"].tolist() == [run_id]
    db.unlink()
    db.write_bytes(b"")  # emptied: the history must not silently disappear
    for suffix in ("-wal", "-shm"):
        (copy / f"runs.sqlite{suffix}").unlink(missing_ok=True)
    store = RunStore(copy)
    assert store.recovered and store.get(run_id)["test_acc"] == RunDir(copy / run_id).metrics()["accuracy"]
