"""The inbox: the photos of a dataset a person should look at, from three sources, and the owner's
decisions about them.

- **likely mislabel**: flagged by the label check (`core.trust.audit`, cleanlab);
- **test mistake**: a test photo the current run got wrong;
- **kept upload**: a photo sent to Predict that the owner kept because it looked unfamiliar or
  uncertain (`core.data.notes.keep_upload`, in the dataset's `.graft/inbox/`).

Each photo can be kept as it is, relabelled, excluded, or (an upload) added to a class. Decisions
are data in the dataset's `.graft/` folder (`core.data.notes.save_decisions`); no photo is moved or
deleted, and the scan applies them, so the next split, audit, training and report use them.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pandas as pd

from core.base.errors import BadInput
from core.data import catalog, notes
from core.runs.folder import RunDir

COLUMNS = ["file", "source", "label", "suggested", "score", "decision", "new_label", "sha1"]
SOURCES = ("likely mislabel", "test mistake", "kept upload")
DECIDED = "decided earlier"  # the source of a decided photo no source lists any more
CSV_COLUMNS = ("file", "decision", "label")
UNDO = "undo"


def _last_check_file(root: Path) -> Path:
    from core.base.storage import cache_home

    return cache_home() / "inbox" / f"{hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]}.csv"


def _mislabels(audit_result, root: Path, use_last: bool) -> list[dict]:
    """The label check's flagged photos. Each check is remembered for the folder, so a decision (which
    makes the next check a new one) does not empty the inbox: until the owner checks again, the
    last check's photos stay listed, the decided ones marked."""
    from core.base.storage import atomic_write

    last = _last_check_file(root)
    if audit_result is not None:
        flagged = audit_result.flagged[["file", "given", "suggested", "score", "sha1"]]
        atomic_write(last, lambda f: flagged.to_csv(f, index=False), mode="w")
    elif use_last and last.is_file():
        try:
            flagged = pd.read_csv(last, dtype={"file": str, "given": str, "suggested": str, "sha1": str},
                                  keep_default_na=False)
        except (OSError, ValueError):
            return []
    else:
        return []
    return [{"file": r.file, "source": SOURCES[0], "label": r.given, "suggested": r.suggested,
             "score": float(r.score), "sha1": r.sha1} for r in flagged.itertuples()]


def _mistakes(run: RunDir | None, root: Path) -> list[dict]:
    """The current run's wrong test photos (when the run was trained on this folder)."""
    if run is None or not run.predictions_file.is_file():
        return []
    try:
        if run.card().data_root.resolve() != root.resolve():
            return []
        table = run.predictions()
    except (OSError, ValueError, KeyError):
        return []
    table = table[table["correct"].astype(str) != "True"]
    return [{"file": r["path"], "source": SOURCES[1], "label": r["label"], "suggested": r["predicted"],
             "score": round(1.0 - float(r.get(f"p_{r['label']}", 0.0)), 4), "sha1": ""}
            for r in table.to_dict("records")]


def _uploads(root: Path) -> list[dict]:
    rows = []
    for path, verdict in notes.load_uploads(root).items():
        if not (verdict.get("unfamiliar") or verdict.get("uncertain")):
            continue
        confidence = float(verdict.get("confidence") or 0.0)
        rows.append({"file": path, "source": SOURCES[2], "label": "", "suggested": str(verdict.get("predicted") or ""),
                     "score": 1.0 if verdict.get("unfamiliar") else round(1.0 - confidence, 4),
                     "sha1": str(verdict.get("sha1") or "")})
    return rows


def build(root: str | os.PathLike, run: RunDir | str | None = None, audit_result=None,
          index: catalog.DatasetIndex | None = None, use_last: bool = True) -> pd.DataFrame:
    """The inbox of a dataset folder (COLUMNS): one row a photo, its sources joined ("likely mislabel +
    test mistake"), its label as the data has it now, the suggested class, a score in [0, 1] (how
    sure the source is that something is wrong) and the owner's decision if any. Undecided photos
    first, the highest score first. `audit_result`: the label check; None takes the folder's last
    one (`use_last`) or leaves that source out."""
    index = index or catalog.scan(root)
    run = RunDir(run) if run is not None and not isinstance(run, RunDir) else run
    decided = notes.load_decisions(index.root)
    rows = _mislabels(audit_result, index.root, use_last) + _mistakes(run, index.root) + _uploads(index.root)
    listed = {r["file"] for r in rows}
    rows += [{"file": f, "source": DECIDED, "label": d["old_label"], "suggested": "", "score": 0.0, "sha1": d["sha1"]}
             for f, d in decided.items() if f not in listed]  # decided earlier, no source lists it now
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.DataFrame(rows)
    merged = frame.sort_values("score", ascending=False, kind="stable").groupby("file", sort=False).agg(
        source=("source", lambda s: " + ".join(dict.fromkeys(s))), label=("label", "first"),
        suggested=("suggested", "first"), score=("score", "max"), sha1=("sha1", "max")).reset_index()
    current = dict(zip(index.items["path"], index.items["label"]))
    shas = dict(zip(index.items["path"], index.items["sha1"]))
    merged["label"] = [current.get(f, label) for f, label in zip(merged["file"], merged["label"])]
    merged["sha1"] = [shas.get(f) or sha for f, sha in zip(merged["file"], merged["sha1"])]
    merged["decision"] = [decided.get(f, {}).get("decision", "") for f in merged["file"]]
    merged["new_label"] = [decided.get(f, {}).get("label", "") for f in merged["file"]]
    merged["open"] = merged["decision"] == ""
    merged = merged.sort_values(["open", "score"], ascending=[False, False], kind="stable")
    return merged[COLUMNS].reset_index(drop=True)


def _known_photos(index: catalog.DatasetIndex) -> dict[str, dict]:
    """{path: {"label", "sha1"}} of every photo a decision may name: the dataset's (as labelled now,
    or as decided before for one left out) and the kept uploads."""
    decided = notes.load_decisions(index.root)
    known = {p: {"label": decided.get(p, {}).get("old_label") or label, "sha1": sha}
             for p, label, sha in zip(index.items["path"], index.items["label"], index.items["sha1"])}
    for path, d in decided.items():
        if (index.root / path).is_file():
            known.setdefault(path, {"label": d["old_label"], "sha1": d["sha1"]})
    for path, verdict in notes.load_uploads(index.root).items():
        known.setdefault(path, {"label": "", "sha1": str(verdict.get("sha1") or "")})
    return known


def _class_of(typed: str, index: catalog.DatasetIndex) -> str | None:
    """A class typed by its folder name or its display name (any case) → the folder name."""
    shown = notes.display_names(notes.load_class_notes(index.root), index.classes)
    for folder, name in shown.items():
        if typed.strip().lower() in (folder.lower(), name.lower()):
            return folder
    return None


def decide(root: str | os.PathLike, rows: list[dict], index: catalog.DatasetIndex | None = None
           ) -> tuple[int, list[str]]:
    """Keep the owner's decisions, rows of {"file", "decision", "label"} (decision: keep, relabel,
    exclude, add, or undo to forget one; label: the class for relabel and add, by folder or display
    name). Each bad row gets a message naming it and the reason; the rest are kept, in one write.
    Returns (decisions kept, messages)."""
    index = index or catalog.scan(root)
    known = _known_photos(index)
    changes, problems = {}, []
    for number, row in enumerate(rows, start=1):
        file = str(row.get("file") or "").strip()
        decision = str(row.get("decision") or "").strip().lower().removesuffix(" as").strip()
        where = f"row {number} ({file or 'no file'})"
        if file not in known:
            problems.append(f"{where}: not a photo of this dataset or of its inbox")
        elif decision not in (*notes.DECISIONS, UNDO):
            problems.append(f"{where}: unknown decision {decision!r} (keep, relabel, exclude, add or undo)")
        elif decision == UNDO:
            changes[file] = None
        elif decision in ("relabel", "add") and not str(row.get("label") or "").strip():
            problems.append(f"{where}: '{decision}' needs a label (the class to give the photo)")
        elif decision in ("relabel", "add") and _class_of(str(row["label"]), index) is None:
            problems.append(f"{where}: unknown class {str(row['label'])!r} (one of {', '.join(index.classes)})")
        else:
            label = _class_of(str(row.get("label") or ""), index) if decision in ("relabel", "add") else ""
            changes[file] = {"decision": decision, "label": label, "sha1": known[file]["sha1"],
                             "old_label": known[file]["label"]}
    if changes:
        notes.save_decisions(index.root, changes)
    return len(changes), problems


def decide_csv(root: str | os.PathLike, text: str | bytes) -> tuple[int, list[str]]:
    """`decide` from a CSV with the columns file,decision,label (label may be empty for keep,
    exclude and undo). A CSV without those columns is refused as a whole."""
    if isinstance(text, bytes):
        text = text.decode("utf-8-sig", errors="replace")
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as err:
        raise BadInput(f"the decisions CSV cannot be read: {err}") from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in ("file", "decision") if c not in table.columns]
    if missing:
        raise BadInput(f"the decisions CSV needs the columns file,decision,label (missing: {', '.join(missing)})")
    if "label" not in table.columns:
        table["label"] = ""
    return decide(root, table[list(CSV_COLUMNS)].to_dict("records"))


def inbox_csv(table: pd.DataFrame) -> str:
    """The inbox as CSV (COLUMNS), ready to fill in: add a `decision` and a `label` and send it back."""
    return table[COLUMNS].to_csv(index=False)


def latest_run(runs_root: str | os.PathLike | None, root: str | os.PathLike) -> RunDir | None:
    """The newest finished run trained on this folder that has test predictions, or None."""
    from core.runs.store import RunStore

    store = RunStore.open(runs_root)
    finished = store.finished()
    wanted = Path(root).expanduser().resolve()
    for run_id in finished.sort_values("created", ascending=False)["id"] if len(finished) else []:
        run = store.run_dir(run_id)
        try:
            if run.predictions_file.is_file() and run.card().data_root.resolve() == wanted:
                return run
        except (OSError, ValueError, KeyError):
            continue
    return None
