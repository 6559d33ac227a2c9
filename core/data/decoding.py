"""Decoding in the background the photos a large first scan read for their header only (the Dataset page's
"Decode every photo now"; `graft scan DATA --decode` does the same in the foreground).

`start` launches `python -m core.data.decoding ROOT` as a detached process (its own session, lower priority,
output to a log beside the scan index) and `status` reads the state it writes there: a page rerun, a page
switch, a closed tab or a second viewer neither stops it nor starts it twice, and a stopped one loses little
(the scan saves its index every 50,000 files and the next one resumes).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from core.base.processes import pid_alive, reap, start_detached
from core.base.storage import read_json, write_json
from core.data import catalog

STARTING_S = 120  # a state written by `start` whose process has not written yet is taken as failed after this

@dataclass
class Decoding:
    """The last decoding of a folder: state "running", "done" or "failed"; photos done of total; when."""

    state: str
    done: int = 0
    total: int = 0
    started: float = 0.0  # time.time()
    ended: float = 0.0
    error: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running"


def state_file(root: str | os.PathLike) -> Path:
    return catalog.index_file(root).with_suffix(".decoding.json")


def status(root: str | os.PathLike) -> Decoding | None:
    """The folder's last decoding, or None when none was started; "failed" when its process is gone."""
    reap()
    try:
        saved = read_json(state_file(root))
        job = Decoding(**{k: saved[k] for k in ("state", "done", "total", "started", "ended", "error") if k in saved})
    except (OSError, ValueError, TypeError):
        return None
    pid = saved.get("pid")
    if job.running and (not pid_alive(pid) if pid else time.time() - job.started > STARTING_S):
        job.state, job.error = "failed", "the decoding process ended before it finished"
    return job


def signature(root: str | os.PathLike) -> tuple:
    """Part of the folder's change detector: the last decoding's state and end (the index changed then)."""
    job = status(root)
    return (("decoding", job.state, job.ended),) if job is not None else ()


def start(root: str | os.PathLike) -> bool:
    """Launch the decoding of the folder unless one is running; whether one was launched."""
    root = Path(root).expanduser().resolve()
    job = status(root)
    if job is not None and job.running:
        return False
    file = state_file(root)
    file.parent.mkdir(parents=True, exist_ok=True)
    write_json(file, {"state": "running", "started": time.time()})  # before the process, which writes its own
    start_detached([sys.executable, "-m", "core.data.decoding", str(root)], file.with_suffix(".log"), file.parent)
    return True


def run(root: str | os.PathLike) -> None:
    """Decode every photo the folder's index left undecoded, writing the state as it goes (the process's work)."""
    file, started, said = state_file(root), time.time(), [0.0]

    def write(state: str, done: int = 0, total: int = 0, **more) -> None:
        write_json(file, {"state": state, "pid": os.getpid(), "done": done, "total": total, "started": started,
                          **more})

    def heard(done: int, total: int) -> None:
        if time.monotonic() - said[0] >= 0.5 or done == total:  # twice a second at most
            said[0] = time.monotonic()
            write("running", done, total)

    write("running")
    try:
        index = catalog.scan(root, decode=True, on_progress=heard)
    except BaseException as err:
        write("failed", error=str(err) or type(err).__name__, ended=time.time())
        raise
    write("done", len(index.items), len(index.items), ended=time.time())


if __name__ == "__main__":
    os.nice(10)  # the dashboard's pages come first
    run(sys.argv[1])
