"""Datasets: scan a folder into an index (with data health), split it into a manifest.

Two layouts are accepted:
- `ROOT/<class>/*.jpg` — split automatically (stratified, seeded, hash-based);
- `ROOT/{train,val,test}/<class>/*` — the given split is used.

The automatic split gives every image a number in [0, 1) from the hash of its content and the
seed, and thresholds it per class. So it is deterministic, stable when images are added (an
existing image never changes split), and exact duplicates always land in the same split.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from core.base.errors import NotFound
from core.base.storage import atomic_write, cache_home
from core.data import notes
from core.data.filecheck import check_chunk, dhash  # noqa: F401  (dhash: catalog.dhash)
from core.data.filecheck import check_file as _check_file

SPLITS = ("train", "val", "test")
ITEM_COLUMNS = ["path", "label", "given_split", "bytes", "mtime_ns", "sha1", "dhash", "width", "height",
                "mode", "conversions"]
SKIP_COLUMNS = ["path", "reason", "detail", "bytes", "mtime_ns"]


@dataclass
class DatasetIndex:
    """Everything known about a folder: usable images and skipped files (with the reason)."""

    root: Path
    layout: str  # "folders" or "splits"
    items: pd.DataFrame
    skipped: pd.DataFrame

    @property
    def classes(self) -> list[str]:
        return sorted(self.items["label"].unique().tolist())

    def counts(self) -> pd.Series:
        return self.items["label"].value_counts().sort_index()


@dataclass
class Split:
    """A manifest (one row per image: path, label, split, sha1, bytes) and the dropped classes."""

    manifest: pd.DataFrame
    classes: list[str]
    dropped: dict[str, int] = field(default_factory=dict)

    def paths(self, root: Path, split: str) -> tuple[list[Path], list[int]]:
        rows = self.manifest[self.manifest["split"] == split]
        index = {c: i for i, c in enumerate(self.classes)}
        return [root / p for p in rows["path"]], [index[c] for c in rows["label"]]

    def counts(self) -> pd.DataFrame:
        """Images per class (rows) and split (columns)."""
        table = pd.crosstab(self.manifest["label"], self.manifest["split"])
        return table.reindex(index=self.classes, columns=[s for s in SPLITS if s in table], fill_value=0)


def _subfolders(root: Path) -> list[os.DirEntry]:
    """The visible sub-folders of `root` (links not followed), [] where it cannot be read."""
    try:
        with os.scandir(root) as found:
            entries = sorted(found, key=lambda e: e.name)
    except OSError:
        return []
    folders = []
    for entry in entries:
        try:
            if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                folders.append(entry)
        except OSError:
            continue
    return folders


def detect_layout(root: Path) -> str:
    names = {d.name.lower() for d in _subfolders(root)}
    return "splits" if "train" in names and names & {"val", "test"} else "folders"


class _Walk:
    """One pass over a dataset folder: `files` (relative path, label, given split, bytes, mtime_ns)
    and `problems` (relative path, reason, detail) for what cannot be used. Never raises: files
    outside a class folder, links to folders (not followed, so no loops), special files and
    unreadable entries are named with the reason. Hidden entries (`.graft/`, `.DS_Store`) are
    left out silently."""

    def __init__(self, root: Path, layout: str):
        self.root, self.base = root, len(str(root)) + 1
        self.files: list[tuple] = []
        self.problems: list[tuple] = []
        if layout == "folders":
            self._folder(str(root), None, "")
        else:
            for entry in self._entries(str(root)):
                if not self._is_dir(entry):
                    self._file(entry, None, "")
                elif entry.name.lower() in SPLITS:
                    self._folder(entry.path, None, entry.name.lower())
                else:
                    self._problem(entry.path, "folder outside train/val/test",
                                  "this dataset gives its own split, so only those three folders are used")

    def _rel(self, path: str) -> str:
        return path[self.base:].replace(os.sep, "/") or "."

    def _problem(self, path: str, reason: str, detail: str) -> None:
        self.problems.append((self._rel(path), reason, detail))

    def _entries(self, folder: str) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as found:
                return sorted((e for e in found if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as err:
            self._problem(folder, "unreadable folder", err.strerror or type(err).__name__)
            return []

    def _is_dir(self, entry: os.DirEntry) -> bool:
        try:
            return entry.is_dir(follow_symlinks=False)
        except OSError:
            return False

    def _folder(self, folder: str, label: str | None, split: str) -> None:
        """Walk `folder`; below the top (label None) every sub-folder is a class."""
        stack = [(folder, label)]
        while stack:
            current, current_label = stack.pop()
            subfolders = []
            for entry in self._entries(current):
                if self._is_dir(entry):
                    subfolders.append((entry.path, current_label or entry.name))
                else:
                    self._file(entry, current_label, split)
            stack.extend(reversed(subfolders))

    def _file(self, entry: os.DirEntry, label: str | None, split: str) -> None:
        try:  # the common case first, in as few calls as can be (a million files are rescanned in seconds)
            if label is not None and entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                self.files.append((self._rel(entry.path), label, split, info.st_size, info.st_mtime_ns))
                return
        except OSError:
            pass  # named below
        try:
            if entry.is_symlink() and entry.is_dir():
                return self._problem(entry.path, "link to a folder", "not followed (links can loop)")
            if not entry.is_file():
                kind = "broken link" if entry.is_symlink() else "not a regular file"
                return self._problem(entry.path, kind, "")
            info = entry.stat()
        except OSError as err:
            return self._problem(entry.path, "unreadable", err.strerror or type(err).__name__)
        if label is None:
            return self._problem(entry.path, "not in a class folder",
                                 "files must sit in ROOT/<class>/" + ("" if not split else f" (here {split}/<class>/)"))
        self.files.append((self._rel(entry.path), label, split, info.st_size, info.st_mtime_ns))


SCAN_WORKERS = 8  # at most this many threads or processes check files
PROCESS_FILES = 20_000  # from this many files to check, processes check them (chunks of CHUNK_FILES)
CHUNK_FILES = 500


def _check_files(root: Path, fresh: pd.DataFrame, progress: bool) -> pd.DataFrame:
    """`_check_file` for every row, in order, as a frame of ALL_COLUMNS. A few thousand files go to one
    thread a core (Pillow and hashlib release the GIL for part of the work); more go to one process a
    core in chunks, as the Python part of each file (the loader's checks, the hash strings) holds the
    GIL. Processes are spawned, never forked: a training process or the dashboard has threads."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
    from multiprocessing import get_context

    from core.base.cores import cpu_count

    rows = list(fresh[LISTING].itertuples(index=False, name=None))
    workers = max(1, min(cpu_count(), SCAN_WORKERS))
    processes = workers > 1 and len(rows) >= PROCESS_FILES
    step = CHUNK_FILES if processes else 16
    chunks = [rows[i:i + step] for i in range(0, len(rows), step)]
    bar = tqdm(total=len(rows), desc="scan", unit="file", disable=not progress, leave=False)
    out: list[tuple] = []
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if processes else ThreadPoolExecutor(workers)
    with pool, bar:
        for done in pool.map(check_chunk, [root] * len(chunks), chunks, [ALL_COLUMNS] * len(chunks)):
            out += done
            bar.update(len(done))
    return pd.DataFrame(out, columns=ALL_COLUMNS)


ALL_COLUMNS = list(dict.fromkeys(ITEM_COLUMNS + SKIP_COLUMNS))
SCAN_VERSION = 3  # bump when a cached row would mean something else
LISTING = ["path", "label", "given_split", "bytes", "mtime_ns"]


def _cache_file(root: Path) -> Path:
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_home() / "scans" / f"{key}-v{SCAN_VERSION}.parquet"


def _load_cache(path: Path) -> pd.DataFrame | None:
    try:
        frame = pd.read_parquet(path)
    except Exception:  # missing, torn or from another version: rescan
        return None
    return frame if list(frame.columns) == ALL_COLUMNS else None


def scan(root: str | os.PathLike, progress: bool = False, use_cache: bool = True) -> DatasetIndex:
    """Index a dataset folder. Unchanged files (same size and mtime) come from the scan cache."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise NotFound(f"{root}: not a folder")
    if not os.access(root, os.R_OK | os.X_OK):
        raise NotFound(f"{root}: this folder cannot be read (permission denied)")
    layout = detect_layout(root)
    walk = _Walk(root, layout)
    listing = pd.DataFrame(walk.files, columns=LISTING)
    cache_path = _cache_file(root)
    cached = _load_cache(cache_path) if use_cache else None
    if cached is not None and len(cached):
        old = listing[["path", "label", "bytes", "mtime_ns"]].merge(
            cached, on="path", how="left", suffixes=("", "_c"))
        reuse = ((old["bytes_c"] == old["bytes"]) & (old["mtime_ns_c"] == old["mtime_ns"])
                 & (old["reason"].notna() | (old["label_c"] == old["label"]))).to_numpy()
    else:
        reuse = pd.Series(False, index=listing.index).to_numpy()
    fresh = listing[~reuse]
    checked = _check_files(root, fresh, progress)
    kept = cached.set_index("path").loc[listing["path"][reuse]].reset_index() if reuse.any() else None
    parts = [p for p in (kept, checked) if p is not None and len(p)]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=ALL_COLUMNS)
    frame = frame.reindex(columns=ALL_COLUMNS)
    order = pd.Index(listing["path"]).get_indexer(frame["path"])  # the listing's order (its paths are unique)
    frame = frame.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)
    if use_cache and (len(checked) or cached is None or len(cached) != len(frame)):
        atomic_write(cache_path, lambda f: frame.to_parquet(f, index=False))
    is_skip = frame["reason"].notna() & (frame["reason"].astype(str) != "")
    items = frame.loc[~is_skip, ITEM_COLUMNS].reset_index(drop=True)
    for col in ("given_split", "conversions"):
        items[col] = items[col].fillna("").astype(str)
    for col in ("bytes", "mtime_ns", "width", "height"):
        items[col] = items[col].astype("int64")
    problems = pd.DataFrame([{"path": p, "reason": r, "detail": d, "bytes": 0, "mtime_ns": 0}
                             for p, r, d in walk.problems], columns=SKIP_COLUMNS)
    skipped = pd.concat([frame.loc[is_skip, SKIP_COLUMNS], problems], ignore_index=True) if len(problems) \
        else frame.loc[is_skip, SKIP_COLUMNS].reset_index(drop=True)
    skipped["detail"] = skipped["detail"].fillna("").astype(str)
    decided = notes.load_corrections(root)
    items, excluded = notes.apply_corrections(items, decided, _added(root, decided, layout))
    if len(excluded):
        left_out = excluded[["path", "bytes", "mtime_ns"]].assign(
            reason="left out by the owner", detail="decided 'exclude' on the Inbox or Dataset page (kept in .graft/)")
        skipped = pd.concat([skipped, left_out[SKIP_COLUMNS]], ignore_index=True)
    return DatasetIndex(root, layout, items, skipped)


def _added(root: Path, decided: dict[str, dict], layout: str) -> pd.DataFrame | None:
    """Index rows of the kept uploads (`.graft/inbox/`) the owner added to a class; the split of a
    split-given dataset puts them in train."""
    rows = []
    for rel, label in notes.added_paths(root, decided).items():
        info = (root / rel).stat()
        row = _check_file(root, rel, label, "train" if layout == "splits" else "", info.st_size, info.st_mtime_ns)
        if "reason" not in row:
            rows.append(row)
    return pd.DataFrame(rows, columns=ITEM_COLUMNS).astype({"bytes": "int64", "mtime_ns": "int64"}) if rows else None


def signature(root: str | os.PathLike) -> tuple:
    """Cheap change detector for a dataset folder: the mtimes of the root, of the class folders
    (adding, removing or renaming a file changes its folder's mtime) and of the owner's label
    corrections. Files are not listed."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return ()
    corrections = notes.corrections_file(root)
    parts = [(str(root), root.stat().st_mtime_ns),
             ("corrections", corrections.stat().st_mtime_ns if corrections.is_file() else 0)]
    for child in _subfolders(root):
        parts.append((child.name, _mtime_ns(child)))
        if child.name.lower() in SPLITS:
            parts += [(f"{child.name}/{g.name}", _mtime_ns(g)) for g in _subfolders(Path(child.path))]
    return tuple(parts)


def _mtime_ns(entry: os.DirEntry) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_mtime_ns
    except OSError:
        return 0


def _unit_hash(sha1: str, seed: int) -> float:
    digest = hashlib.sha1(f"{seed}:{sha1}".encode()).hexdigest()
    return int(digest[:13], 16) / 16 ** 13


def split(index: DatasetIndex, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
          seed: int = 0, min_per_class: int = 5) -> Split:
    """Stratified, seeded, hash-based split; classes with fewer than `min_per_class` images dropped."""
    train_f, val_f, test_f = (f / sum(fractions) for f in fractions)
    items = index.items.copy()
    counts = items["label"].value_counts()
    dropped = {c: int(n) for c, n in counts.items() if n < min_per_class}
    items = items[~items["label"].isin(dropped)].copy()
    items["u"] = [_unit_hash(s, seed) for s in items["sha1"]]
    if index.layout == "splits":
        items["split"] = items["given_split"]
        if not (items["split"] == "val").any():  # carve val out of train
            share = val_f / (train_f + val_f)
            items.loc[(items["split"] == "train") & (items["u"] < share), "split"] = "val"
    else:
        items["split"] = ["test" if u < test_f else "val" if u < test_f + val_f else "train"
                          for u in items["u"]]
        for _, group in items.groupby("label"):
            for name, frac in (("test", test_f), ("val", val_f)):
                if frac > 0 and len(group) >= 3 and not (items.loc[group.index, "split"] == name).any():
                    train_rows = items.loc[group.index][items.loc[group.index, "split"] == "train"]
                    if len(train_rows) > 1:
                        items.loc[train_rows["u"].idxmin(), "split"] = name
    manifest = items[["path", "label", "split", "sha1", "bytes"]].reset_index(drop=True)
    return Split(manifest, sorted(manifest["label"].unique().tolist()), dropped)


def save_manifest(split_: Split, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: split_.manifest.to_csv(f, index=False), mode="w")


def load_manifest(path: str | os.PathLike, classes: list[str] | None = None) -> Split:
    manifest = pd.read_csv(path, dtype={"path": str, "label": str, "split": str, "sha1": str},
                           keep_default_na=False)
    return Split(manifest, classes or sorted(manifest["label"].unique().tolist()))
