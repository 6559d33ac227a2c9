"""What the product keeps about a dataset, in its hidden `ROOT/.graft/` folder (the scan skips it,
the user's photos are never moved): class display names and descriptions, so a room reads
"crack (severe)" instead of "defect_100"; and the owner's label corrections: photos to
leave out, photos whose label is wrong. Only the owner writes it (the dashboard's Dataset page).
The scan applies the corrections, so every split, training and page respects them.

Display names change what people read, never what the model or the files are called: metrics,
predictions and exports keep the folder names; `relabel_*` map them for showing."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pandas as pd

from core.base.errors import BadInput
from core.base.storage import read_json, write_json

NOTES_DIR = ".graft"
CLASSES_FILE = "classes.json"
CORRECTIONS_FILE = "corrections.json"
MAX_NAME, MAX_DESCRIPTION = 60, 300


def notes_dir(root: str | os.PathLike) -> Path:
    return Path(root) / NOTES_DIR


def class_notes_file(root: str | os.PathLike) -> Path:
    return notes_dir(root) / CLASSES_FILE


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


def corrections_file(root: str | os.PathLike) -> Path:
    return notes_dir(root) / CORRECTIONS_FILE


def load_corrections(root: str | os.PathLike) -> dict[str, dict]:
    """{photo path relative to ROOT: {"action": "exclude" | "relabel", "label": new label (relabel),
    "sha1": the photo's content when it was decided}}; {} when none (or unreadable). A decision
    applies to the photo only while its content is the same (the sha1)."""
    try:
        data = read_json(corrections_file(root))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(path): {"action": str(v.get("action")), "label": str(v.get("label", "")), "sha1": str(v.get("sha1", ""))}
            for path, v in data.items()
            if isinstance(v, dict) and v.get("action") in ("exclude", "relabel")
            and (v.get("action") == "exclude" or v.get("label"))}


def save_corrections(root: str | os.PathLike, changes: dict[str, dict | None]) -> Path:
    """Merge the owner's decisions into the kept ones; None (or action "keep") removes a decision."""
    kept = load_corrections(root)
    for path, change in changes.items():
        if not change or change.get("action") not in ("exclude", "relabel"):
            kept.pop(str(path), None)
        else:
            kept[str(path)] = {"action": change["action"], "label": str(change.get("label") or ""),
                               "sha1": str(change.get("sha1") or "")}
    return write_json(corrections_file(root), kept)


def apply_corrections(items: pd.DataFrame, corrections: dict[str, dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(items with relabels applied and exclusions removed, the excluded rows). A relabel names a
    class the dataset has; a decision whose photo changed since (another sha1) is not applied."""
    if not corrections or not len(items):
        return items, items.iloc[0:0]
    labels = set(items["label"])
    row_of = {path: i for i, path in enumerate(items["path"])}
    keep = pd.Series(True, index=items.index)
    items = items.copy()
    label_column = items.columns.get_loc("label")
    for path, change in corrections.items():  # only the decided photos, however large the dataset
        i = row_of.get(path)
        if i is None or (change["sha1"] and change["sha1"] != items["sha1"].iat[i]):
            continue
        if change["action"] == "exclude":
            keep.iloc[i] = False
        elif change["label"] in labels:
            items.iat[i, label_column] = change["label"]
    return items[keep].reset_index(drop=True), items[~keep].reset_index(drop=True)
