"""What the product keeps about a dataset, in its hidden `ROOT/.graft/` folder (the scan skips it,
the user's photos are never moved): class display names and descriptions, so a room reads
"crack (severe)" instead of "defect_100". Only the owner writes it (the dashboard's Dataset page).

Display names change what people read, never what the model or the files are called: metrics,
predictions and exports keep the folder names; `relabel_*` map them for showing."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pandas as pd

from .errors import BadInput
from .storage import read_json, write_json

NOTES_DIR = ".graft"
CLASSES_FILE = "classes.json"
MAX_NAME, MAX_DESCRIPTION = 60, 300


def notes_dir(root: str | os.PathLike) -> Path:
    return Path(root) / NOTES_DIR


def load_class_notes(root: str | os.PathLike) -> dict[str, dict]:
    """{folder name: {"name": display name, "description": text}}; {} when none (or unreadable)."""
    path = notes_dir(root) / CLASSES_FILE
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): {"name": str(v.get("name", "")).strip()[:MAX_NAME],
                     "description": str(v.get("description", "")).strip()[:MAX_DESCRIPTION]}
            for k, v in data.items() if isinstance(v, dict)}


def save_class_notes(root: str | os.PathLike, notes: dict[str, dict]) -> Path:
    """Keep the display names and descriptions (empty ones dropped); names must stay distinct."""
    clean = {}
    for label, note in notes.items():
        name = str(note.get("name") or "").strip()[:MAX_NAME]
        description = str(note.get("description") or "").strip()[:MAX_DESCRIPTION]
        if name or description:
            clean[str(label)] = {"name": name, "description": description}
    shown = [clean.get(label, {}).get("name") or label for label in notes]
    if len(set(shown)) != len(shown):
        raise BadInput("two classes would show under the same name; give each a different one")
    return write_json(notes_dir(root) / CLASSES_FILE, clean)


def display_names(notes: dict[str, dict], labels: list[str]) -> dict[str, str]:
    """{folder name: what people read} for every label (the folder name where none is set)."""
    return {label: (notes.get(label, {}).get("name") or label) for label in labels}


def relabel_metrics(metrics: dict, names: dict[str, str]) -> dict:
    """A copy of an evaluation (metrics.json) with class names for showing."""
    if not names or all(k == v for k, v in names.items()):
        return metrics
    shown = copy.deepcopy(metrics)
    rename = lambda label: names.get(label, label)  # noqa: E731
    shown["labels"] = [rename(c) for c in shown.get("labels", [])]
    for row in shown.get("per_class", []):
        row["class"] = rename(row["class"])
    for pair in shown.get("most_confused", []):
        pair["true"], pair["predicted"] = rename(pair["true"]), rename(pair["predicted"])
    if shown.get("baseline", {}).get("class") is not None:
        shown["baseline"]["class"] = rename(shown["baseline"]["class"])
    if "tta" in shown:
        shown["tta"]["per_class_accuracy"] = {rename(k): v for k, v in shown["tta"]["per_class_accuracy"].items()}
    return shown


def relabel_predictions(table: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """A predictions table with its `label` and `predicted` columns shown by display name."""
    if not names or all(k == v for k, v in names.items()):
        return table
    shown = table.copy()
    for column in ("label", "predicted"):
        if column in shown:
            shown[column] = shown[column].map(lambda c: names.get(c, c))
    return shown
