"""The cores Graft may use, and a pool of processes over them, without importing torch (the scan and its worker
processes need the count, not the ~600 MB and seconds that importing torch costs). `runtime.cpu_count` is this
function."""
from __future__ import annotations

import contextlib
import os
import sys
import types
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor


def cpu_count() -> int:
    """The cores Graft may use: those this process may run on, or fewer when GRAFT_THREADS says so
    (several Graft processes side by side, such as parallel test workers, each take a share)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count() or 1
    share = os.environ.get("GRAFT_THREADS", "").strip()
    return max(1, min(cores, int(share))) if share.isdigit() and int(share) > 0 else cores


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
