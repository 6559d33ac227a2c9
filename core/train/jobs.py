"""Start, stop and watch a training process for the dashboard.

`start` claims the runs folder's training slot (one training at a time, claimed atomically in the
run store), creates a queued run and launches `python -m core.train.worker RUN_DIR` as a detached
process (its own session, output to the run's train.log, working folder and every path absolute),
then hands the slot to it. A page rerun, a page switch, a closed tab or a second viewer neither
stops it nor starts it twice; a second start while one runs is refused (`Busy`).
"""
from __future__ import annotations

import os
import signal
import socket
import sys
from contextlib import contextmanager
from dataclasses import asdict
from typing import Iterator

from core.base.errors import Busy  # noqa: F401  (re-exported for the pages)
from core.base.processes import pid_alive, reap, start_detached
from core.base.storage import write_json
from core.runs.store import RunStore, new_run_id
from core.train.config import TrainConfig


def active(runs_root: str | os.PathLike | None = None) -> str | None:
    """The id of the run whose training process is alive in this runs folder, if any."""
    reap()
    return RunStore.open(runs_root).active()


@contextmanager
def hold(config: TrainConfig, runs_root: str | os.PathLike | None = None) -> Iterator[str]:
    """For a training run in this very process (the CLI): the same one-at-a-time slot as `start`.
    Raises `Busy` before any run is created; yields the new run's id; releases the slot after."""
    store = RunStore.open(runs_root)
    run_id = _claim_new_run(store, config)
    try:
        yield run_id
    finally:
        store.release(run_id)


def _claim_new_run(store: RunStore, config: TrainConfig) -> str:
    """Claim the training slot for a new run id, then create that queued run (the slot is given
    back if the run cannot be created); `Busy` before anything is written."""
    run_id = new_run_id()
    store.claim(run_id, os.getpid())
    try:
        store.create(asdict(config), config.name, run_id=run_id)
    except BaseException:
        store.release(run_id)
        raise
    return run_id


def start(config: TrainConfig, runs_root: str | os.PathLike | None = None) -> str:
    """Create a queued run and launch its training process; returns the run id."""
    store = RunStore.open(runs_root)
    config = config.resolved()
    run_id = _claim_new_run(store, config)
    try:
        run = store.run_dir(run_id)
        write_json(run.request_file, asdict(config))
        child = start_detached([sys.executable, "-m", "core.train.worker", str(run.path)], run.log_file, run.path)
        store.update(run_id, pid=child.pid, host=socket.gethostname())
        store.claim(run_id, child.pid, handover_from=os.getpid())
    except BaseException as err:
        store.finish(run_id, "failed", f"the training process could not be started: {err}")
        store.release(run_id)
        raise
    return run_id


def stop(run_id: str, runs_root: str | os.PathLike | None = None) -> None:
    """Ask the run to stop between batches (it ends as `stopped`, best checkpoint kept)."""
    store = RunStore.open(runs_root)
    store.request_stop(run_id)
    run = store.get(run_id)
    if run["status"] == "queued" and not pid_alive(run.get("pid")):
        store.finish(run_id, "stopped")


def kill(run_id: str, runs_root: str | os.PathLike | None = None) -> None:
    """Hard-kill a run's process (it will read as `failed`)."""
    run = RunStore.open(runs_root).get(run_id)
    if pid_alive(run.get("pid")):
        os.killpg(os.getpgid(run["pid"]), signal.SIGKILL)


def log_tail(run_id: str, runs_root: str | os.PathLike | None = None, lines: int = 20) -> str:
    return RunStore.open(runs_root).run_dir(run_id).log_tail(lines)
