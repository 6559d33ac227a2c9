"""The run store: an SQLite database (WAL mode) plus one folder per run.

The database holds runs (status, timestamps, best metrics, error text) and their per-epoch
and throttled per-batch metrics, written as training goes so another process (the dashboard)
can read them live. A run folder holds config.json, manifest.csv, model.json, best.pt,
last.pt, metrics.json and predictions.csv. Only the training process's rank 0 writes.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

STATUSES = ("queued", "running", "completed", "stopped", "failed")
ACTIVE = ("queued", "running")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT, dataset TEXT, backbone TEXT, freeze TEXT, config TEXT,
    status TEXT NOT NULL, created REAL, started REAL, ended REAL, epochs_done INTEGER DEFAULT 0,
    best_epoch INTEGER, best_val_loss REAL, best_val_acc REAL, test_acc REAL, error TEXT,
    pid INTEGER, host TEXT, stop_requested INTEGER DEFAULT 0, progress TEXT
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT, epoch INTEGER, train_loss REAL, train_acc REAL, val_loss REAL, val_acc REAL,
    lr REAL, seconds REAL, time REAL, PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS batches (
    run_id TEXT, epoch INTEGER, step INTEGER, loss REAL, time REAL, PRIMARY KEY (run_id, step)
);
"""


def new_run_id() -> str:
    """Short, sortable: UTC time + random suffix."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (finished child not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class RunStore:
    """Runs under one folder (`runs/` by default): `runs.sqlite` and a folder per run id."""

    def __init__(self, root: str | os.PathLike = "runs"):
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "runs.sqlite"
        with self._connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.row_factory = sqlite3.Row
            with db:
                yield db
        finally:
            db.close()

    # ------------------------------------------------------------ runs

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def create(self, config: dict, name: str | None = None, status: str = "queued") -> str:
        run_id = new_run_id()
        self.run_dir(run_id).mkdir(parents=True, exist_ok=False)
        with self._connect() as db:
            db.execute("INSERT INTO runs (id, name, dataset, backbone, freeze, config, status, created) "
                       "VALUES (?,?,?,?,?,?,?,?)",
                       (run_id, name or run_id, str(config.get("data", "")), config.get("backbone"),
                        config.get("freeze"), json.dumps(config), status, time.time()))
        return run_id

    def update(self, run_id: str, **fields: Any) -> None:
        if not fields:
            return
        if "config" in fields and not isinstance(fields["config"], str):
            fields["config"] = json.dumps(fields["config"])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._connect() as db:
            db.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))

    def mark_running(self, run_id: str) -> None:
        self.update(run_id, status="running", started=time.time(), ended=None, error=None,
                    pid=os.getpid(), host=socket.gethostname(), stop_requested=0)

    def finish(self, run_id: str, status: str, error: str | None = None) -> None:
        assert status in STATUSES
        self.update(run_id, status=status, ended=time.time(), error=error)

    def get(self, run_id: str) -> dict:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id!r} in {self.root}")
        run = self._reconcile(dict(row))
        run["config"] = json.loads(run["config"] or "{}")
        run["progress"] = json.loads(run["progress"]) if run.get("progress") else {}
        return run

    def list(self) -> pd.DataFrame:
        with self._connect() as db:
            rows = [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY created DESC")]
        rows = [self._reconcile(r) for r in rows]
        return pd.DataFrame(rows, columns=["id", "name", "dataset", "backbone", "freeze", "status",
                                           "created", "started", "ended", "epochs_done", "best_epoch",
                                           "best_val_loss", "best_val_acc", "test_acc", "error", "pid",
                                           "config"])

    def finished(self) -> pd.DataFrame:
        """Runs with a usable model: completed or stopped, with a best checkpoint on disk."""
        runs = self.list()
        runs = runs[runs["status"].isin(["completed", "stopped"])]
        return runs[[(self.run_dir(r) / "best.pt").is_file() for r in runs["id"]]]

    def _reconcile(self, run: dict) -> dict:
        """A run whose process is gone cannot stay `running` (or `queued`): mark it failed."""
        if run["status"] in ACTIVE and run.get("pid") and run.get("host") == socket.gethostname() \
                and not pid_alive(run.get("pid")):
            self._refresh(run)
        return run

    def _refresh(self, run: dict) -> None:
        with self._connect() as db:  # the process may have finished between our reads
            row = db.execute("SELECT status, error FROM runs WHERE id = ?", (run["id"],)).fetchone()
        if row and row["status"] not in ACTIVE:
            run.update(status=row["status"], error=row["error"])
            return
        error = "the training process ended without finishing (killed or crashed)"
        log = self.run_dir(run["id"]) / "train.log"
        if log.is_file():
            tail = [l for l in log.read_text(errors="replace").replace("\r", "\n").splitlines() if l.strip()]
            if tail:
                error += ":\n" + "\n".join(tail[-8:])
        self.finish(run["id"], "failed", error)
        run.update(status="failed", error=error, ended=time.time())

    def rename(self, run_id: str, name: str) -> None:
        self.update(run_id, name=name)

    def delete(self, run_id: str) -> None:
        import shutil

        with self._connect() as db:
            for table, col in (("runs", "id"), ("epochs", "run_id"), ("batches", "run_id")):
                db.execute(f"DELETE FROM {table} WHERE {col} = ?", (run_id,))
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    def request_stop(self, run_id: str) -> None:
        self.update(run_id, stop_requested=1)

    def stop_requested(self, run_id: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT stop_requested FROM runs WHERE id = ?", (run_id,)).fetchone()
        return bool(row and row[0])

    def resolve(self, ref: str | os.PathLike) -> tuple[str, Path]:
        """A run id (looked up here) or a run folder path → (run id, folder)."""
        path = Path(ref)
        if (path / "config.json").is_file():
            return path.resolve().name, path.resolve()
        if (self.run_dir(str(ref)) / "config.json").is_file() or self._exists(str(ref)):
            return str(ref), self.run_dir(str(ref))
        raise KeyError(f"{ref}: neither a run id in {self.root} nor a run folder")

    def _exists(self, run_id: str) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None

    # ------------------------------------------------------------ metrics

    def log_epoch(self, run_id: str, epoch: int, **metrics: float) -> None:
        cols = ["train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO epochs VALUES (?,?,?,?,?,?,?,?,?)",
                       (run_id, epoch, *[metrics.get(c) for c in cols], time.time()))
            db.execute("UPDATE runs SET epochs_done = ? WHERE id = ?", (epoch, run_id))

    def log_batches(self, run_id: str, rows: list[tuple[int, int, float]]) -> None:
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?)",
                           [(run_id, e, s, loss, time.time()) for e, s, loss in rows])

    def set_progress(self, run_id: str, **progress: Any) -> None:
        self.update(run_id, progress=json.dumps(progress))

    def epochs(self, run_id: str) -> pd.DataFrame:
        with self._connect() as db:
            return pd.read_sql_query("SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", db,
                                     params=(run_id,))

    def batches(self, run_id: str) -> pd.DataFrame:
        with self._connect() as db:
            return pd.read_sql_query("SELECT * FROM batches WHERE run_id = ? ORDER BY step", db,
                                     params=(run_id,))

    def truncate_metrics(self, run_id: str, after_epoch: int) -> None:
        """Forget epochs after `after_epoch` (a resume restarts from the last checkpoint)."""
        with self._connect() as db:
            db.execute("DELETE FROM epochs WHERE run_id = ? AND epoch > ?", (run_id, after_epoch))
            db.execute("DELETE FROM batches WHERE run_id = ? AND epoch > ?", (run_id, after_epoch))
