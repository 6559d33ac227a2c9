"""Processes Graft starts: detached workers the dashboard launches and watches (a training, a decoding), pools of
spawned workers (the scan), and whether a recorded process is still alive. No torch, no pandas: the scan's
workers import this."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

children: list[subprocess.Popen] = []  # the detached workers this process started, reaped by `reap`


def start_detached(args: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    """Start `args` in a session of its own (a page rerun, a closed tab or a stopped server leaves it running),
    its output appended to `log`, unbuffered."""
    with open(log, "ab") as out:
        child = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    children.append(child)
    return child


def reap() -> None:
    """Wait for the detached workers that have ended, so none is left a zombie."""
    for child in list(children):
        if child.poll() is not None:
            children.remove(child)


def pid_alive(pid: int | None) -> bool:
    """Whether the process `pid` on this machine is running (a zombie, ended but not yet reaped, is not)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@contextlib.contextmanager
def spawned_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of `workers` processes, spawned (never forked: a training process or the dashboard has threads)
    and started at once. A spawned worker first imports its parent's `__main__`; while the dashboard runs a page,
    that is the page's script (Streamlit runs each script as `__main__`), which a worker must not run. So the
    workers start with a bare `__main__` in its place (they need nothing from it), and the real one comes back."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            for _ in range(workers):  # a pool starts a worker for each task that finds none idle: all start now
                pool.submit(int)
        finally:
            sys.modules["__main__"] = main
        yield pool
