"""The cores Graft may use, without importing torch (the scan and its worker processes need the count,
not the ~600 MB and seconds that importing torch costs). `runtime.cpu_count` is this function."""
from __future__ import annotations

import os


def cpu_count() -> int:
    """The cores Graft may use: those this process may run on, or fewer when GRAFT_THREADS says so
    (several Graft processes side by side, such as parallel test workers, each take a share)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count() or 1
    share = os.environ.get("GRAFT_THREADS", "").strip()
    return max(1, min(cores, int(share))) if share.isdigit() and int(share) > 0 else cores
