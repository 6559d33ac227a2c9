"""Atomic file writes and the project's cache folder.

Every file the project writes goes through here (temp file in the same folder, fsync,
rename), so a killed process never leaves a torn file behind.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def cache_home() -> Path:
    """Where fetched samples, scan indexes and feature caches live (`GRAFT_HOME`)."""
    path = Path(os.environ.get("GRAFT_HOME") or Path.home() / ".cache" / "graft")
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_runs_root() -> Path:
    """Where runs go unless a runs folder is given: `GRAFT_RUNS`, else `GRAFT_HOME/runs`
    (`~/.cache/graft/runs`), whatever folder the server or the command was started in."""
    env = os.environ.get("GRAFT_RUNS")
    return Path(env).expanduser().absolute() if env else cache_home() / "runs"


def free_space(path: str | os.PathLike) -> str:
    """The free space on `path`'s filesystem, in words ("1.2 GB free")."""
    import shutil

    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return "free space unknown"
    unit = "bytes"
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if free < 1024 or unit == "TB":
            break
        free /= 1024
    return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call `write(file)` on a temp file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _disk_full(path, err) or err
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        full = _disk_full(path, err)
        if full:
            raise full from None
        raise
    return path


NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _disk_full(path: Path, err: BaseException) -> Exception | None:
    """A DiskFull naming the file and the free space when `err` means the disk (or a size limit) ran
    out; torch.save reports it as a RuntimeError from its zip writer."""
    from core.base.errors import DiskFull

    text = str(err)
    out_of_space = (isinstance(err, OSError) and err.errno in NO_SPACE) or (
        isinstance(err, RuntimeError) and ("unexpected pos" in text or "file write failed" in text
                                           or "No space left" in text or "File too large" in text))
    if not out_of_space:
        return None
    return DiskFull(f"could not write {path}: the disk is full or the file is over the size limit "
                    f"({free_space(path.parent)} free); the previous version of the file is kept")


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), mode="w")


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """torch.save, atomically. Only tensors, numbers, strings, lists and dicts (weights_only-safe)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def load_torch(path: str | os.PathLike) -> Any:
    """Load a checkpoint safely: never unpickles arbitrary objects."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
