"""What the product keeps about a dataset, in its hidden `ROOT/.graft/` folder (the scan skips it,
the user's photos are never moved): class display names and descriptions, so a room reads
"crack (severe)" instead of "defect_100"; and the owner's label corrections: photos to
leave out, photos whose label is wrong. Only the owner writes it (the dashboard's Dataset page).
The scan applies the corrections (`load_decisions`), so every split, audit, training and report respects them;
photos kept from Predict wait in `.graft/inbox/` until the owner adds them to a class.

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
    """The owner's decisions about single photos (`.graft/corrections.json`)."""
    return notes_dir(root) / CORRECTIONS_FILE


# ---------------------------------------------------------------------- decisions about photos
DECISIONS = ("keep", "relabel", "exclude", "add")  # "add": an upload of .graft/inbox/ joins a class
CHANGES = ("relabel", "exclude", "add")  # the decisions that change what the model learns from
INBOX_DIR = "inbox"


def load_decisions(root: str | os.PathLike) -> dict[str, dict]:
    """The owner's decisions, one a photo: {photo path relative to ROOT: {"decision": keep | relabel |
    exclude | add, "label": the new label (relabel, add), "sha1": the photo's content when decided,
    "old_label": its label then, "when": ISO time}}; {} when none (or unreadable). Files written by
    an older Graft ({"action": ...}) read the same. A decision applies only while the photo's
    content is the same (the sha1)."""
    try:
        data = read_json(corrections_file(root))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    kept = {}
    for path, v in data.items():
        if not isinstance(v, dict):
            continue
        decision = str(v.get("decision") or v.get("action") or "")
        if decision not in DECISIONS or (decision in ("relabel", "add") and not v.get("label")):
            continue
        kept[str(path)] = {"decision": decision, "label": str(v.get("label") or ""), "sha1": str(v.get("sha1") or ""),
                           "old_label": str(v.get("old_label") or ""), "when": str(v.get("when") or "")}
    return kept


def save_decisions(root: str | os.PathLike, changes: dict[str, dict | None]) -> Path:
    """Merge decisions ({path: {"decision", "label", "sha1", "old_label"}}) into the kept ones, stamped
    with the time; None removes a photo's decision (undo). One atomic write; no photo is touched."""
    import time

    kept = load_decisions(root)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for path, change in changes.items():
        decision = str((change or {}).get("decision") or (change or {}).get("action") or "")
        if decision not in DECISIONS:
            kept.pop(str(path), None)
            continue
        label = str(change.get("label") or "") if decision in ("relabel", "add") else ""
        if decision in ("relabel", "add") and not label:
            raise BadInput(f"{path}: '{decision}' needs the class to give the photo")
        kept[str(path)] = {"decision": decision, "label": label, "sha1": str(change.get("sha1") or ""),
                           "old_label": str(change.get("old_label") or ""), "when": str(change.get("when") or now)}
    return write_json(corrections_file(root), kept)


def load_corrections(root: str | os.PathLike) -> dict[str, dict]:
    """The decisions that change the data (relabel, exclude, add) as {path: {"action", "label", "sha1"}}
    (the older form, for the Dataset page's label check)."""
    return {path: {"action": d["decision"], "label": d["label"], "sha1": d["sha1"]}
            for path, d in load_decisions(root).items() if d["decision"] in CHANGES}


def save_corrections(root: str | os.PathLike, changes: dict[str, dict | None]) -> Path:
    """Merge the owner's decisions into the kept ones; None (or action "keep") removes a decision."""
    return save_decisions(root, {path: change if change and change.get("action") in CHANGES else None
                                 for path, change in changes.items()})


def apply_corrections(items: pd.DataFrame, corrections: dict[str, dict],
                      added: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(items with relabels applied, added photos appended and exclusions removed; the excluded
    rows). A relabel names a class the dataset has; a decision whose photo changed since (another
    sha1) is not applied. `added`: index rows of the uploads decided "add" (`added_photos`)."""
    if added is not None and len(added):
        items = pd.concat([items, added[items.columns]], ignore_index=True)
    if not corrections or not len(items):
        return items, items.iloc[0:0]
    labels = set(items["label"])
    row_of = {path: i for i, path in enumerate(items["path"])}
    keep = pd.Series(True, index=items.index)
    items = items.copy()
    label_column = items.columns.get_loc("label")
    for path, change in corrections.items():  # only the decided photos, however large the dataset
        i = row_of.get(path)
        action = change.get("action") or change.get("decision")
        if i is None or (change["sha1"] and change["sha1"] != items["sha1"].iat[i]):
            continue
        if action == "exclude":
            keep.iloc[i] = False
        elif action in ("relabel", "add") and change["label"] in labels:
            items.iat[i, label_column] = change["label"]
    return items[keep].reset_index(drop=True), items[~keep].reset_index(drop=True)


def inbox_dir(root: str | os.PathLike) -> Path:
    """Where photos kept from Predict wait for the owner (`ROOT/.graft/inbox/`)."""
    return notes_dir(root) / INBOX_DIR


def added_paths(root: str | os.PathLike, decisions: dict[str, dict]) -> dict[str, str]:
    """{path relative to ROOT: class} of the kept uploads the owner added to a class (they stay in
    `.graft/inbox/`; the scan reads them there)."""
    prefix = f"{NOTES_DIR}/{INBOX_DIR}/"
    return {path: d["label"] for path, d in decisions.items()
            if path.startswith(prefix) and (d.get("decision") or d.get("action")) in ("add", "relabel")
            and "/" not in path[len(prefix):]
            and (Path(root) / path).is_file()}


UPLOADS_FILE = "uploads.json"
UPLOAD_VERDICT_KEYS = ("predicted", "confidence", "uncertain", "unfamiliar", "distance", "run")


def keep_upload(root: str | os.PathLike, name: str, data: bytes, verdict: dict) -> str:
    """Keep a photo sent to Predict for the owner's inbox: its bytes in `ROOT/.graft/inbox/` (named by
    content, so keeping it twice keeps one) and its verdict (predicted class, or `label` as a Predictor
    result names it; confidence, uncertain, unfamiliar, distance, run) in `.graft/uploads.json`.
    Returns its path relative to ROOT. A file that is not a readable image is refused (BadInput
    naming it). The photo joins no class until the owner decides "add"."""
    import hashlib
    import io
    import re
    import time

    from core.data.images import IMAGE_EXTENSIONS, ImageError, open_image

    try:
        open_image(io.BytesIO(data), draft_size=64)
    except ImageError as err:
        raise BadInput(f"{name}: {err.reason} ({err.detail})" if err.detail else f"{name}: {err.reason}") from None
    stem, suffix = os.path.splitext(os.path.basename(str(name)))
    suffix = suffix.lower() if suffix.lower() in IMAGE_EXTENSIONS else ".png"
    sha1 = hashlib.sha1(data).hexdigest()
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", stem)[:40].strip("_") or "photo"
    rel = f"{NOTES_DIR}/{INBOX_DIR}/{sha1[:12]}-{safe}{suffix}"
    from core.base.storage import atomic_write

    if not (Path(root) / rel).is_file():
        atomic_write(Path(root) / rel, lambda f: f.write(data))
    kept = load_uploads(root)
    verdict = {**verdict, "predicted": verdict.get("predicted") or verdict.get("label")}  # Predictor's result reads
    kept[rel] = {**{k: verdict[k] for k in UPLOAD_VERDICT_KEYS if verdict.get(k) is not None}, "name": str(name)[:200],
                 "sha1": sha1, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(notes_dir(root) / UPLOADS_FILE, kept)
    return rel


def load_uploads(root: str | os.PathLike) -> dict[str, dict]:
    """{path relative to ROOT: verdict} of the photos kept from Predict whose file is still there."""
    try:
        data = read_json(notes_dir(root) / UPLOADS_FILE)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(p): v for p, v in data.items() if isinstance(v, dict) and (Path(root) / str(p)).is_file()}
