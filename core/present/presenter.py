"""Where the presenter is in the run's story: the Present page's current step, kept in a small JSON
file in the Graft home so that viewers' pages can follow it. Who may move it is decided by the
caller (the dashboard lets only the owner write it)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from core.base.storage import cache_home, write_json

STEP_FILE = "present.json"


def step_file() -> Path:
    """The file that holds the presenter's current step (`GRAFT_HOME/present.json`)."""
    return cache_home() / STEP_FILE


def read_step() -> dict | None:
    """{"run": run id, "step": step index, "at": time saved}, or None when nothing was saved yet or
    the file is unreadable (a damaged file is only a presenter's position: viewers stay where they are)."""
    try:
        data = json.loads(step_file().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("step"), int) or not isinstance(data.get("run"), str):
        return None
    return data


def save_step(run_id: str, step: int) -> dict:
    """Save the presenter's step on run `run_id` (written atomically: a reader never sees half a file)."""
    if step < 0:
        raise ValueError(f"a step is 0 or more, not {step}")
    data = {"run": str(run_id), "step": int(step), "at": time.time()}
    write_json(step_file(), data)
    return data
