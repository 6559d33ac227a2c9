"""The run store: SQLite in WAL mode, live metrics, dead processes, atomic files."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from core.base.storage import atomic_write, read_json, write_json
from core.runs.store import RunStore


def test_store_is_wal_and_round_trips(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create({"data": "x", "backbone": "efficientnet_lite0", "freeze": "head"}, name="first")
    assert sqlite3.connect(store.db_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.mark_running(run_id)
    store.log_epoch(run_id, 1, train_loss=1.0, train_acc=0.5, val_loss=0.9, val_acc=0.6, lr=0.01, seconds=2)
    store.log_epoch(run_id, 2, train_loss=0.8, train_acc=0.6, val_loss=0.7, val_acc=0.7, lr=0.005, seconds=2)
    other = RunStore(tmp_path)  # another reader, as the dashboard would be
    assert other.epochs(run_id)["val_acc"].tolist() == [0.6, 0.7]
    assert other.get(run_id)["status"] == "running"  # this process is alive
    store.rename(run_id, "renamed")
    assert other.list()["name"].tolist() == ["renamed"]
    assert store.resolve(run_id)[0] == run_id
    store.finish(run_id, "completed")
    assert store.finished().empty  # completed, but no best.pt yet: nothing to predict with
    store.run_dir(run_id).best_file.write_bytes(b"")
    assert store.finished()["id"].tolist() == [run_id]
    write_json(store.run_dir(run_id).config_file, {"data": "x"})
    assert store.resolve(str(store.run_dir(run_id))) == (run_id, store.run_dir(run_id))
    store.release(run_id)
    store.finish(run_id, "completed")
    store.delete(run_id)
    assert store.list().empty and not store.run_dir(run_id).path.exists()


def test_a_run_whose_process_died_reads_as_failed(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create({"data": "x"})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.mark_running(run_id)
    store.update(run_id, pid=dead.pid)
    assert store.get(run_id)["status"] == "running"  # a read never writes
    assert store.reconcile() == [run_id]
    run = store.get(run_id)
    assert run["status"] == "failed" and "ended without finishing" in run["error"]


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "model.json"
    write_json(target, {"ok": 1})

    def broken(handle):
        handle.write("{ half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken, mode="w")
    assert read_json(target) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_a_checkpoint_that_is_not_a_state_dict_gives_a_clear_error(trained_run, tmp_path):
    import shutil

    from core.runs.folder import RunDir

    runs, run_id, _ = trained_run
    copy = tmp_path / run_id
    shutil.copytree(runs / run_id, copy)
    (copy / "best.pt").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ValueError, match="not a usable checkpoint"):
        RunDir(copy).load_model()
    import torch

    torch.save({"head.1.weight": torch.zeros(3, 3)}, copy / "best.pt")  # a state_dict, of the wrong model
    with pytest.raises(ValueError, match="best.pt"):
        RunDir(copy).load_model()
