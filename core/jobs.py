"""Start, stop and watch a training process for the dashboard.

`start` launches `python -m core train --config FILE --run-id ID` as a detached process (its own
session, output to the run's train.log) that writes to the run store, so a page rerun, a page
switch, a closed tab or a second viewer neither stops it nor starts it twice. One training
process per runs folder at a time: a second start while one runs is refused (`Busy`).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

from .runs import RunStore, pid_alive
from .storage import read_json, write_json
from .train import TrainConfig

LOCK = "train.lock"
_children: list[subprocess.Popen] = []  # reaped in `active` so finished children leave no zombies


class Busy(RuntimeError):
    """A training run is already going on in this runs folder."""


def _reap() -> None:
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)


def active(runs_root: str | os.PathLike) -> str | None:
    """The id of the run whose training process is alive in this runs folder, if any."""
    _reap()
    lock = Path(runs_root) / LOCK
    try:
        held = read_json(lock)
    except (OSError, ValueError):
        return None
    return held.get("run_id") if pid_alive(held.get("pid")) else None


@contextmanager
def _claim(store: RunStore):
    """Refuse when a run is training here; otherwise hold an atomic claim while one starts (so two
    viewers clicking Start at once start one run)."""
    running = active(store.root)
    if running:
        raise Busy(f"run {running} is still training in {store.root}; stop it or wait for it to finish "
                   f"(one training at a time per machine)")
    claim = store.root / f".{LOCK}.claim"
    try:
        os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        raise Busy("another training run is being started right now") from None
    try:
        yield
    finally:
        claim.unlink(missing_ok=True)


@contextmanager
def hold(config: TrainConfig, runs_root: str | os.PathLike = "runs") -> Iterator[str]:
    """For a training run in this very process (the CLI): the same one-at-a-time rule as `start`.
    Yields the new run's id; the lock is released when the block ends."""
    store = RunStore(runs_root)
    with _claim(store):
        run_id = store.create(asdict(config), config.name)
        write_json(store.root / LOCK, {"run_id": run_id, "pid": os.getpid()})
    try:
        yield run_id
    finally:
        (store.root / LOCK).unlink(missing_ok=True)


def start(config: TrainConfig, runs_root: str | os.PathLike = "runs") -> str:
    """Create a queued run and launch its training process; returns the run id."""
    store = RunStore(runs_root)
    lock = store.root / LOCK
    with _claim(store):
        run_id = store.create(asdict(config), config.name)
        run_dir = store.run_dir(run_id)
        write_json(run_dir / "request.json", asdict(config))
        log = open(run_dir / "train.log", "ab")
        root = Path(__file__).resolve().parents[1]
        child = subprocess.Popen(
            [sys.executable, "-m", "core", "train", "--config", str(run_dir / "request.json"),
             "--run-id", run_id, "--runs", str(store.root)],
            cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1",
                                         "PYTHONPATH": str(root)})
        log.close()
        _children.append(child)
        store.update(run_id, pid=child.pid, host=socket.gethostname())
        write_json(lock, {"run_id": run_id, "pid": child.pid})
    return run_id


def stop(run_id: str, runs_root: str | os.PathLike = "runs") -> None:
    """Ask the run to stop between batches (it ends as `stopped`, best checkpoint kept)."""
    store = RunStore(runs_root)
    store.request_stop(run_id)
    run = store.get(run_id)
    if run["status"] == "queued" and not pid_alive(run.get("pid")):
        store.finish(run_id, "stopped")


def kill(run_id: str, runs_root: str | os.PathLike = "runs") -> None:
    """Hard-kill a run's process (it will read as `failed`)."""
    run = RunStore(runs_root).get(run_id)
    if pid_alive(run.get("pid")):
        os.killpg(os.getpgid(run["pid"]), signal.SIGKILL)


def log_tail(run_id: str, runs_root: str | os.PathLike = "runs", lines: int = 20) -> str:
    path = Path(runs_root) / run_id / "train.log"
    try:
        text = path.read_text(errors="replace").replace("\r", "\n")
    except OSError:
        return ""
    return "\n".join([l for l in text.splitlines() if l.strip()][-lines:])
