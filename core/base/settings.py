"""The dashboard's remembered choices (working dataset, recent folders, runs folder), kept in a
small JSON file in the Graft cache so they survive restarts."""
from __future__ import annotations

from pathlib import Path

from core.base.storage import cache_home, read_json, write_json

DEFAULTS = {"dataset": "", "recent": [], "runs": "", "min_per_class": 5}  # runs "": the default folder


def path() -> Path:
    return cache_home() / "settings.json"


def load() -> dict:
    try:
        stored = read_json(path())
        return {**DEFAULTS, **(stored if isinstance(stored, dict) else {})}
    except (OSError, ValueError):
        return dict(DEFAULTS)


def save(**changes) -> dict:
    """Merge `changes` into the settings; a new dataset goes to the front of `recent`."""
    current = load()
    current.update(changes)
    if changes.get("dataset"):
        recent = [changes["dataset"], *[r for r in current["recent"] if r != changes["dataset"]]]
        current["recent"] = recent[:8]
    write_json(path(), current)
    return current
