"""The run store: an SQLite database (WAL mode) plus one folder per run (a `RunDir`).

The database holds runs (status, pid, timestamps, best metrics, error text, progress, the stop
request), their per-epoch and throttled per-batch metrics (written as training goes, so the
dashboard reads them live), and the one-training-at-a-time slot of the runs folder, claimed in
a `BEGIN IMMEDIATE` transaction. Reads never write: a run whose process died is marked failed
by an explicit `reconcile()`. `RunStore.open(root)` gives one store per process and folder. A
damaged database is moved aside and rebuilt from the run folders. Only rank 0 writes.
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

from core.base.errors import BadInput, Busy, GraftError, NotFound, log
from core.base.processes import pid_alive
from core.base.storage import default_runs_root
from core.models.choices import FREEZE_WORDS, backbone_title
from core.runs.folder import RunDir

STATUSES = ("queued", "running", "completed", "stopped", "failed")
ACTIVE = ("queued", "running")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT, dataset TEXT, backbone TEXT, freeze TEXT, config TEXT,
    status TEXT NOT NULL, created REAL, started REAL, ended REAL, epochs_done INTEGER DEFAULT 0,
    best_epoch INTEGER, best_val_loss REAL, best_val_acc REAL, test_acc REAL, error TEXT,
    pid INTEGER, host TEXT, stop_requested INTEGER DEFAULT 0, progress TEXT,
    train_seconds REAL, photos_per_s REAL, size_mb REAL
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT, epoch INTEGER, train_loss REAL, train_acc REAL, val_loss REAL, val_acc REAL,
    lr REAL, seconds REAL, time REAL, PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS batches (
    run_id TEXT, epoch INTEGER, step INTEGER, loss REAL, time REAL, PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS slot (
    id INTEGER PRIMARY KEY CHECK (id = 1), run_id TEXT, pid INTEGER, host TEXT, since REAL
);
"""
# The columns of a run's row that `RunStore.update` may set (its id is fixed at creation).
RUN_COLUMNS = frozenset({"name", "dataset", "backbone", "freeze", "config", "status", "created", "started", "ended",
                         "epochs_done", "best_epoch", "best_val_loss", "best_val_acc", "test_acc", "error", "pid",
                         "host", "stop_requested", "progress", "train_seconds", "photos_per_s", "size_mb"})
# What a run cost beside its accuracy (added later: an older database gets the columns when opened, its runs empty).
COST_COLUMNS = {"train_seconds": "REAL", "photos_per_s": "REAL", "size_mb": "REAL"}


def new_run_id() -> str:
    """Short, sortable: UTC time + random suffix."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def _alive_here(pid: int | None, host: str | None) -> bool:
    """Whether a process recorded as (pid, host) may still run: alive here, or on another host."""
    return bool(pid) and (host != socket.gethostname() or pid_alive(pid))


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Columns added since a database was made (the cost columns), added to it empty."""
    have = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    for name, kind in COST_COLUMNS.items():
        if name not in have:
            try:
                db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError as err:  # another process added it first
                if "duplicate column" not in str(err):
                    raise


class RunStore:
    """Runs under one folder: `runs.sqlite` and a folder per run id."""

    _open: dict[Path, "RunStore"] = {}

    @classmethod
    def open(cls, root: str | os.PathLike | None = None) -> "RunStore":
        """The store for `root` (default: `storage.default_runs_root()`), one per process."""
        path = Path(os.path.abspath(Path(root or default_runs_root()).expanduser()))
        store = cls._open.get(path)
        if store is None or not store.db_path.exists():
            store = cls._open[path] = cls(path)
        return store

    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        if self.root.exists() and not self.root.is_dir():
            raise BadInput(f"runs folder {self.root} is a file, not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "runs.sqlite"
        self.recovered: str | None = None  # what was rebuilt on opening, in words
        self._create_schema()

    def _create_schema(self) -> None:
        for attempt in range(50):  # many processes opening a brand-new folder at once
            try:
                with self._connect() as db:
                    db.executescript(SCHEMA)
                    db.execute("SELECT count(*) FROM runs").fetchone()
                    _add_missing_columns(db)
                break
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or attempt == 49:
                    raise
                time.sleep(0.05 + 0.01 * attempt)
            except sqlite3.DatabaseError as err:
                self._move_aside(err)
        self._adopt_orphans()

    def _move_aside(self, err: Exception) -> None:
        aside = self.db_path.with_name(f"runs.sqlite.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        self.db_path.replace(aside)
        for suffix in ("-wal", "-shm"):
            Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
        self.recovered = (f"the run history {self.db_path} was damaged ({err}); it was moved to {aside.name} and "
                          "rebuilt from the run folders (per-epoch curves of older runs are not recoverable)")
        log.warning(self.recovered)

    def _adopt_orphans(self) -> None:
        """Run folders the database does not know (a rebuilt or emptied database) get their row back
        from their files: config.json, model.json, metrics.json."""
        with self._connect() as db:
            known = {r[0] for r in db.execute("SELECT id FROM runs")}
        orphans = [d for d in sorted(self.root.iterdir()) if d.is_dir() and d.name not in known
                   and RunDir(d).is_run()]
        for folder in orphans:
            self._adopt(RunDir(folder))
        if orphans and not self.recovered:
            self.recovered = f"{len(orphans)} run folder(s) missing from {self.db_path} were added back"
            log.warning(self.recovered)

    def _adopt(self, run: RunDir) -> None:
        try:
            config = run.read_config()
        except GraftError:
            return
        metrics = run.metrics() if run.metrics_file.is_file() else None
        status = "completed" if metrics else "stopped" if run.has_model() else "failed"
        created = run.config_file.stat().st_mtime
        with self._connect() as db:
            db.execute("INSERT OR IGNORE INTO runs (id, name, dataset, backbone, freeze, config, status, created, "
                       "started, ended, test_acc, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                       (run.id, config.get("name") or run.id, str(config.get("data", "")), config.get("backbone"),
                        config.get("freeze"), json.dumps(config), status, created, created,
                        run.path.stat().st_mtime, (metrics or {}).get("accuracy"),
                        None if status != "failed" else "recovered from its folder: no checkpoint"))

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

    def run_dir(self, run_id: str) -> RunDir:
        return RunDir(self.root / run_id)

    def create(self, config: dict, name: str | None = None, status: str = "queued",
               run_id: str | None = None) -> str:
        """A new run folder and row; without a name it gets a readable one (see `readable_name`)."""
        run_id = run_id or new_run_id()
        name = name or readable_name(config)
        self.run_dir(run_id).path.mkdir(parents=True, exist_ok=False)
        with self._connect() as db:
            db.execute("INSERT INTO runs (id, name, dataset, backbone, freeze, config, status, created) "
                       "VALUES (?,?,?,?,?,?,?,?)",
                       (run_id, name or run_id, str(config.get("data", "")), config.get("backbone"),
                        config.get("freeze"), json.dumps(config), status, time.time()))
        return run_id

    def update(self, run_id: str, **fields: Any) -> None:
        """Set columns of the run's row; a name that is not one of `RUN_COLUMNS` is refused (ValueError)
        before any SQL is built."""
        unknown = sorted(set(fields) - RUN_COLUMNS)
        if unknown:
            raise ValueError(f"not a run column: {', '.join(unknown)}")
        if not fields:
            return
        if "config" in fields and not isinstance(fields["config"], str):
            fields["config"] = json.dumps(fields["config"])
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._connect() as db:
            db.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))

    def mark_running(self, run_id: str) -> None:
        """The run's process has started. A stop asked for while it was queued stays asked for (the
        presenter who clicks Stop right after Start gets a stopped run); `resume` clears old ones."""
        self.update(run_id, status="running", started=time.time(), ended=None, error=None,
                    pid=os.getpid(), host=socket.gethostname())

    def finish(self, run_id: str, status: str, error: str | None = None) -> None:
        assert status in STATUSES
        self.update(run_id, status=status, ended=time.time(), error=error)

    def get(self, run_id: str) -> dict:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFound(f"no run {run_id!r} in {self.root}")
        run = dict(row)
        run["config"] = json.loads(run["config"] or "{}")
        run["progress"] = json.loads(run["progress"]) if run.get("progress") else {}
        return run

    def list(self) -> pd.DataFrame:
        with self._connect() as db:
            rows = [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY created DESC")]
        return pd.DataFrame(rows, columns=["id", "name", "dataset", "backbone", "freeze", "status",
                                           "created", "started", "ended", "epochs_done", "best_epoch",
                                           "best_val_loss", "best_val_acc", "test_acc", "error", "pid",
                                           "config", *COST_COLUMNS])

    def best_by_validation(self) -> pd.DataFrame:
        """The finished runs, best first by **validation** accuracy (newest first among equals).
        Test figures are reported, never used to choose: choosing by test makes them optimistic."""
        runs = self.finished()
        if runs.empty:
            return runs
        return runs.sort_values(["best_val_acc", "created"], ascending=[False, False], na_position="last")

    def finished(self) -> pd.DataFrame:
        """Runs with a usable model: completed or stopped, with a best checkpoint on disk."""
        runs = self.list()
        runs = runs[runs["status"].isin(["completed", "stopped"])]
        return runs[[self.run_dir(r).has_model() for r in runs["id"]]]

    def reconcile(self) -> list[str]:
        """Mark failed (with the tail of its log) every queued or running run of this host whose
        process is gone; returns their ids. Called by the pages and the CLI, never by a read."""
        with self._connect() as db:
            rows = db.execute("SELECT id, pid, host FROM runs WHERE status IN ('queued', 'running')").fetchall()
        dead = [r["id"] for r in rows if r["pid"] and r["host"] == socket.gethostname() and not pid_alive(r["pid"])]
        for run_id in dead:
            error = "the training process ended without finishing (killed or crashed)"
            tail = self.run_dir(run_id).log_tail(8)
            with self._connect() as db:  # the process may have finished between our reads
                db.execute("UPDATE runs SET status = 'failed', ended = ?, error = ? "
                           "WHERE id = ? AND status IN ('queued', 'running')",
                           (time.time(), error + (":\n" + tail if tail else ""), run_id))
        return dead

    # ------------------------------------------------------------ the training slot

    def active(self) -> str | None:
        """The run whose training process holds this folder's slot, if it is alive."""
        with self._connect() as db:
            row = db.execute("SELECT run_id, pid, host FROM slot WHERE id = 1").fetchone()
        return row["run_id"] if row and _alive_here(row["pid"], row["host"]) else None

    def claim(self, run_id: str, pid: int, handover_from: int | None = None) -> None:
        """Take the one-training-at-a-time slot for `run_id` run by `pid`, atomically; raises `Busy`
        when a live process holds it (unless that is `pid` or `handover_from`, the starter)."""
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT run_id, pid, host FROM slot WHERE id = 1").fetchone()
            if row and _alive_here(row[1], row[2]) and row[1] not in (pid, handover_from):
                db.execute("ROLLBACK")
                raise Busy(f"run {row[0]} is still training in {self.root}; stop it or wait for it to finish "
                           f"(one training at a time per runs folder)")
            db.execute("INSERT OR REPLACE INTO slot VALUES (1, ?, ?, ?, ?)",
                       (run_id, pid, socket.gethostname(), time.time()))
            db.execute("COMMIT")
        finally:
            db.close()

    def release(self, run_id: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM slot WHERE id = 1 AND run_id = ?", (run_id,))

    def rename(self, run_id: str, name: str) -> None:
        self.update(run_id, name=name)

    def delete(self, run_id: str) -> None:
        """Remove a run's rows and folder; a run that is still training is refused (stop it first)."""
        import shutil

        run = self.get(run_id)
        if run["status"] in ACTIVE and _alive_here(run.get("pid"), run.get("host")):
            raise Busy(f"run {run['name']} is still training; stop it first, then delete it")
        with self._connect() as db:
            for table, col in (("runs", "id"), ("epochs", "run_id"), ("batches", "run_id")):
                db.execute(f"DELETE FROM {table} WHERE {col} = ?", (run_id,))
        shutil.rmtree(self.run_dir(run_id).path, ignore_errors=True)

    def request_stop(self, run_id: str) -> None:
        self.update(run_id, stop_requested=1)

    def stop_requested(self, run_id: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT stop_requested FROM runs WHERE id = ?", (run_id,)).fetchone()
        return bool(row and row[0])

    def resolve(self, ref: str | os.PathLike) -> tuple[str, RunDir]:
        """A run id (looked up here) or a run folder path → (run id, folder)."""
        path = Path(ref).expanduser()
        if RunDir(path).is_run():
            return path.resolve().name, RunDir(path.resolve())
        if self.run_dir(str(ref)).is_run() or self.exists(str(ref)):
            return str(ref), self.run_dir(str(ref))
        raise NotFound(f"{ref}: neither a run id in {self.root} nor a run folder")

    def exists(self, run_id: str) -> bool:
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

    def epochs(self, run_id: str, after: int = 0) -> pd.DataFrame:
        """The run's epoch rows after epoch `after` (0: all)."""
        with self._connect() as db:
            return pd.read_sql_query("SELECT * FROM epochs WHERE run_id = ? AND epoch > ? ORDER BY epoch", db,
                                     params=(run_id, after))

    def batches(self, run_id: str, after: int = 0) -> pd.DataFrame:
        """The run's per-batch losses after step `after` (0: all)."""
        with self._connect() as db:
            return pd.read_sql_query("SELECT * FROM batches WHERE run_id = ? AND step > ? ORDER BY step", db,
                                     params=(run_id, after))

    def latest(self) -> str | None:
        """The id of the most recently created run, if any."""
        with self._connect() as db:
            row = db.execute("SELECT id FROM runs ORDER BY created DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def truncate_metrics(self, run_id: str, after_epoch: int) -> None:
        """Forget epochs after `after_epoch` (a resume restarts from the last checkpoint)."""
        with self._connect() as db:
            db.execute("DELETE FROM epochs WHERE run_id = ? AND epoch > ?", (run_id, after_epoch))
            db.execute("DELETE FROM batches WHERE run_id = ? AND epoch > ?", (run_id, after_epoch))


def readable_name(config: dict, when: float | None = None) -> str:
    """A run's default name, for people: 'Lite0 · head only · 10 epochs · 26 Nov 13:15'."""
    parts = [backbone_title(config.get("backbone") or "model"),
             FREEZE_WORDS.get(str(config.get("freeze")), str(config.get("freeze") or "")),
             f"{config['epochs']} epochs" if config.get("epochs") else "",
             time.strftime("%d %b %H:%M", time.localtime(when or time.time()))]
    return " · ".join(p for p in parts if p)


class LiveMetrics:
    """A run's epoch and batch rows, read incrementally: each `refresh` asks the store only for the
    rows written since the last one (the Train page polls this once a second)."""

    def __init__(self, store: RunStore, run_id: str):
        self.store, self.run_id = store, run_id
        self.epochs = store.epochs(run_id)
        self.batches = store.batches(run_id)

    def refresh(self) -> "LiveMetrics":
        last_epoch = int(self.epochs["epoch"].max()) if len(self.epochs) else 0
        last_step = int(self.batches["step"].max()) if len(self.batches) else 0
        new_epochs = self.store.epochs(self.run_id, after=last_epoch)
        new_batches = self.store.batches(self.run_id, after=last_step)
        if len(new_epochs):
            self.epochs = pd.concat([self.epochs, new_epochs], ignore_index=True) if len(self.epochs) else new_epochs
        if len(new_batches):
            self.batches = pd.concat([self.batches, new_batches], ignore_index=True) if len(self.batches) else new_batches
        return self
