"""Datasets: scan a folder into an index (with data health), split it into a manifest.

Two layouts are accepted:
- `ROOT/<class>/*.jpg` — split automatically (stratified, seeded, hash-based);
- `ROOT/{train,val,test}/<class>/*` — the given split is used.

The automatic split gives every image a number in [0, 1) from the hash of its content and the
seed, and thresholds it per class. So it is deterministic, stable when images are added (an
existing image never changes split), and exact duplicates always land in the same split.
"""
from __future__ import annotations

import contextlib
import hashlib
import operator
import os
import stat as stat_module
import sys
import types
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
                "mode", "conversions", "decoded", "unit0"]  # unit0: the photo's number for the seed-0 split
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

    @property
    def undecoded(self) -> int:
        """Photos read for their header and hash only (a large first scan): not yet checked for truncation,
        conversions and near-duplicates (`scan(root, decode=True)` checks them)."""
        return int((~self.items["decoded"]).sum())


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
    """One pass over a dataset folder: `listing()` (relative path, label, given split, bytes, mtime_ns, one
    list a column) and `problems` (relative path, reason, detail) for what cannot be used. Never raises: files
    outside a class folder, links to folders (not followed, so no loops), special files and
    unreadable entries are named with the reason. Hidden entries (`.graft/`, `.DS_Store`) are
    left out silently."""

    def __init__(self, root: Path, layout: str):
        self.root, self.base = root, len(str(root)) + 1
        self.columns: tuple[list, ...] = ([], [], [], [], [])  # LISTING's columns
        self.problems: list[tuple] = []
        if layout == "folders":
            self._folder(str(root), None, "")
        else:
            for entry in self._entries(str(root)):
                if not self._is_dir(entry):
                    self._file(entry.path, None, "")
                elif entry.name.lower() in SPLITS:
                    self._folder(entry.path, None, entry.name.lower())
                else:
                    self._problem(entry.path, "folder outside train/val/test",
                                  "this dataset gives its own split, so only those three folders are used")

    def listing(self) -> pd.DataFrame:
        paths, labels, splits, sizes, mtimes = self.columns
        return pd.DataFrame({"path": pd.array(paths, dtype="str"), "label": pd.array(labels, dtype="str"),
                             "given_split": pd.array(splits, dtype="str"),
                             "bytes": np.array(sizes, dtype=np.int64), "mtime_ns": np.array(mtimes, dtype=np.int64)})

    def _rel(self, path: str) -> str:
        return path[self.base:].replace(os.sep, "/") or "."

    def _problem(self, path: str, reason: str, detail: str) -> None:
        self.problems.append((self._rel(path), reason, detail))

    def _entries(self, folder: str) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as found:
                return sorted((e for e in found if not e.name.startswith(".")), key=_NAME)
        except OSError as err:
            self._problem(folder, "unreadable folder", err.strerror or type(err).__name__)
            return []

    def _is_dir(self, entry: os.DirEntry) -> bool:
        try:
            return entry.is_dir(follow_symlinks=False)
        except OSError:
            return False

    def _folder(self, folder: str, label: str | None, split: str) -> None:
        """Walk `folder`; below the top (label None) every sub-folder is a class. Each folder's names are
        listed and sorted in one call, and each entry stat'ed relative to its open folder (no DirEntry objects,
        no full-path lookups: a million files are rescanned in seconds)."""
        paths, labels, splits, sizes, mtimes = self.columns
        stat, is_file, is_dir = os.stat, stat_module.S_ISREG, stat_module.S_ISDIR
        stack = [(folder, label)]
        while stack:
            current, current_label = stack.pop()
            subfolders = []
            prefix = self._rel(current) + "/"
            try:
                fd = os.open(current, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as err:
                self._problem(current, "unreadable folder", err.strerror or type(err).__name__)
                continue
            try:
                names = sorted(n for n in os.listdir(fd) if not n.startswith("."))
                for name in names:
                    try:
                        mode_etc = stat(name, dir_fd=fd, follow_symlinks=False)
                    except OSError:
                        mode_etc = None
                    if mode_etc is not None and current_label is not None and is_file(mode_etc.st_mode):
                        paths.append(prefix + name)
                        labels.append(current_label)
                        splits.append(split)
                        sizes.append(mode_etc.st_size)
                        mtimes.append(mode_etc.st_mtime_ns)
                    elif mode_etc is not None and is_dir(mode_etc.st_mode):
                        subfolders.append((os.path.join(current, name), current_label or name))
                    else:
                        self._file(os.path.join(current, name), current_label, split)
            except OSError as err:
                self._problem(current, "unreadable folder", err.strerror or type(err).__name__)
            finally:
                os.close(fd)
            stack.extend(reversed(subfolders))

    def _file(self, path: str, label: str | None, split: str) -> None:
        """A file that is not a regular file in a class folder, or could not be stat'ed: named, or listed."""
        try:
            if os.path.islink(path) and os.path.isdir(path):
                return self._problem(path, "link to a folder", "not followed (links can loop)")
            if not os.path.isfile(path):
                kind = "broken link" if os.path.islink(path) else "not a regular file"
                return self._problem(path, kind, "")
            info = os.stat(path)
        except OSError as err:
            return self._problem(path, "unreadable", err.strerror or type(err).__name__)
        if label is None:
            return self._problem(path, "not in a class folder",
                                 "files must sit in ROOT/<class>/" + ("" if not split else f" (here {split}/<class>/)"))
        for column, value in zip(self.columns, (self._rel(path), label, split, info.st_size, info.st_mtime_ns)):
            column.append(value)


@contextlib.contextmanager
def _plain_main():
    """A spawned worker first imports its parent's `__main__` module; while the dashboard runs a page, that is
    the page's script (Streamlit runs each script as `__main__`), which a worker must not run. The workers
    start with a bare `__main__` in its place (they need nothing from it), and the real one comes back."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


_NAME = operator.attrgetter("name")
SCAN_WORKERS = 8  # at most this many threads or processes check files
PROCESS_FILES = 20_000  # from this many files to decode, processes decode them (chunks of CHUNK_FILES)
CHUNK_FILES = 500
DECODE_FILES = 10_000  # a scan decodes its new files when there are at most this many (a few seconds);
# more are read for their header and hash only, and decoded by `scan(root, decode=True)` when asked
SAVE_FILES = 50_000  # a long scan saves what it has checked every this many files (a killed scan resumes)


def _check_files(root: Path, rows: list[tuple], decode: bool, heard=None) -> list[tuple]:
    """`check_file` for listing rows, in order, as tuples of ALL_COLUMNS. Header-only checks (tens of
    microseconds a file) run here; a few thousand decodes go to one thread a core (Pillow and hashlib release
    the GIL for part of the work); many decodes go to one process a core in chunks, as the Python part of
    each file holds the GIL. Processes are spawned, never forked: a training process or the dashboard has threads.
    `heard(n)` hears each chunk of n files checked."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
    from multiprocessing import get_context

    from core.base.cores import cpu_count

    workers = max(1, min(cpu_count(), SCAN_WORKERS))
    processes = decode and workers > 1 and len(rows) >= PROCESS_FILES
    step = CHUNK_FILES if processes or not decode else 16
    chunks = [rows[i:i + step] for i in range(0, len(rows), step)]
    out: list[tuple] = []
    if not decode:  # ~40 µs a file, mostly holding the GIL: threads only queue for it
        for chunk in chunks:
            out += check_chunk(root, chunk, ALL_COLUMNS, False)
            if heard:
                heard(len(chunk))
        return out
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if processes else ThreadPoolExecutor(workers)
    with pool:
        with _plain_main() if processes else contextlib.nullcontext():  # the workers start as the tasks go in
            results = pool.map(check_chunk, [root] * len(chunks), chunks, [ALL_COLUMNS] * len(chunks),
                               [decode] * len(chunks))
        for done in results:
            out += done
            if heard:
                heard(len(done))
    return out


ALL_COLUMNS = list(dict.fromkeys(ITEM_COLUMNS + SKIP_COLUMNS))
SCAN_VERSION = 4  # bump when a cached row would mean something else
LISTING = ["path", "label", "given_split", "bytes", "mtime_ns"]


def _cache_file(root: Path) -> Path:
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_home() / "scans" / f"{key}-v{SCAN_VERSION}.parquet"


def _load_cache(path: Path) -> tuple[pd.DataFrame | None, bool]:
    """(the saved index rows or None, whether they were brought up to date here and should be saved again)."""
    try:
        frame = pd.read_parquet(path)
    except Exception:  # missing, torn or from another version: rescan
        return None, False
    if list(frame.columns) == [c for c in ALL_COLUMNS if c != "unit0"]:  # saved before unit0: computed once
        has_sha = frame["sha1"].notna().to_numpy()
        unit0 = np.full(len(frame), np.nan)
        unit0[has_sha] = _unit_hashes(frame.loc[has_sha, "sha1"].tolist(), 0)
        frame.insert(ALL_COLUMNS.index("unit0"), "unit0", unit0)
        return frame, True
    return (frame, False) if list(frame.columns) == ALL_COLUMNS else (None, False)


def scan(root: str | os.PathLike, progress: bool = False, use_cache: bool = True, decode: bool | None = None,
         on_progress=None) -> DatasetIndex:
    """Index a dataset folder. Unchanged files (same size and mtime) come from the scan cache; new and changed
    ones are read once for their SHA-1 and header, and decoded (truncation, conversions, dhash) when there are
    at most DECODE_FILES of them (`decode` None). `decode=True` also decodes every photo a larger scan left
    undecoded; `decode=False` reads headers only. `on_progress(done, total)` hears the files checked."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise NotFound(f"{root}: not a folder")
    if not os.access(root, os.R_OK | os.X_OK):
        raise NotFound(f"{root}: this folder cannot be read (permission denied)")
    layout = detect_layout(root)
    walk = _Walk(root, layout)
    listing = walk.listing()
    cache_path = _cache_file(root)
    cached, migrated = _load_cache(cache_path) if use_cache else (None, False)
    cached, unchanged, as_saved = _unchanged(listing, cached)
    as_saved = as_saved and not migrated
    if decode is None:
        decode_fresh = int((~unchanged).sum()) <= DECODE_FILES
    else:
        decode_fresh = decode
    reuse = unchanged
    if decode and cached is not None:  # the photos a large scan read for their header only are decoded now
        done = (cached["reason"].notna() | cached["decoded"].fillna(False).astype(bool)).to_numpy()
        reuse = unchanged & done
    if reuse.all() and as_saved:  # nothing to check or to save
        frame = _typed(cached)
    else:
        frame = _checked_frame(root, listing, cached, reuse, decode_fresh, cache_path if use_cache else None,
                               progress, on_progress)
    return _index(root, layout, frame, walk.problems)


def _unchanged(listing: pd.DataFrame, cached: pd.DataFrame | None) -> tuple[pd.DataFrame | None, np.ndarray, bool]:
    """(the cache rows in the listing's order, aligned with it, or None; which listed files are unchanged:
    the same size, mtime and class; whether the cache lists the same files in the same order). An unchanged
    folder lists its files in the cache's order: compared column by column, without a join."""
    if cached is None or not len(cached):
        return None, np.zeros(len(listing), dtype=bool), False
    if len(cached) != len(listing) or not (cached["path"].to_numpy() == listing["path"].to_numpy()).all():
        positions = pd.Index(cached["path"]).get_indexer(listing["path"])
        found = positions >= 0
        aligned = cached.iloc[np.where(found, positions, 0)].reset_index(drop=True)
        as_saved = False
    else:
        found, aligned, as_saved = np.ones(len(listing), dtype=bool), cached, True
    same = ((aligned["bytes"].to_numpy() == listing["bytes"].to_numpy())
            & (aligned["mtime_ns"].to_numpy() == listing["mtime_ns"].to_numpy())
            & (aligned["reason"].notna() | (aligned["label"] == listing["label"])).to_numpy())
    return aligned, found & same, as_saved


def _checked_frame(root: Path, listing: pd.DataFrame, cached: pd.DataFrame | None, reuse: np.ndarray,
                   decode: bool, cache_path: Path | None, progress: bool, on_progress) -> pd.DataFrame:
    """The index rows of every listed file, in the listing's order: reused where `reuse`, checked again
    otherwise (saved to `cache_path` every SAVE_FILES files, so a killed scan keeps what it checked)."""
    rows = list(listing.loc[~reuse, LISTING].itertuples(index=False, name=None))
    todo = np.flatnonzero(~reuse)
    frame = cached.copy() if cached is not None else pd.DataFrame(index=range(len(listing)), columns=ALL_COLUMNS)
    frame = frame.astype(object)
    bar = tqdm(total=len(rows), desc="scan" if not decode else "scan (decoding)", unit="file",
               disable=not progress, leave=False)
    count = [0]

    def heard(n: int) -> None:
        count[0] += n
        bar.update(n)
        if on_progress:
            on_progress(count[0], len(rows))

    with bar:
        for start in range(0, len(rows), SAVE_FILES):
            checked = _check_files(root, rows[start:start + SAVE_FILES], decode, heard)
            frame.iloc[todo[start:start + len(checked)]] = checked
            if cache_path is not None:
                done = frame.iloc[np.concatenate([np.flatnonzero(reuse), todo[:start + len(checked)]])] \
                    if start + len(checked) < len(rows) else frame
                _save(cache_path, done)
    if not rows and cache_path is not None:  # files removed only
        _save(cache_path, frame)
    return _typed(frame)


TEXT_COLUMNS = ("path", "label", "given_split", "sha1", "dhash", "mode", "conversions", "reason", "detail")


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """One dtype a column, however the rows were put together (checked now, or read back from Parquet)."""
    types = {**{c: "str" for c in TEXT_COLUMNS}, "bytes": "int64", "mtime_ns": "int64", "width": "float64",
             "height": "float64", "decoded": "boolean", "unit0": "float64"}
    return frame.astype(types)


def _save(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda f: _typed(frame.reset_index(drop=True)).to_parquet(f, index=False))


def _index(root: Path, layout: str, frame: pd.DataFrame, problems_found: list[tuple]) -> DatasetIndex:
    """The index of the checked rows and the walk's problems, the owner's decisions applied."""
    is_skip = (frame["reason"].notna() & (frame["reason"].astype(str) != "")).to_numpy()
    items = frame.loc[~is_skip, ITEM_COLUMNS].reset_index(drop=True)
    for col in ("given_split", "conversions"):
        items[col] = items[col].fillna("").astype(str)
    for col in ("bytes", "mtime_ns", "width", "height"):
        items[col] = items[col].astype("int64")
    items["decoded"] = items["decoded"].fillna(False).astype(bool)
    problems = pd.DataFrame([{"path": p, "reason": r, "detail": d, "bytes": 0, "mtime_ns": 0}
                             for p, r, d in problems_found], columns=SKIP_COLUMNS)
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


def _unit_hashes(shas: list[str], seed: int) -> np.ndarray:
    """Each content hash's `filecheck.unit_number` for `seed` (a microsecond a photo)."""
    base, from_bytes, numbers = hashlib.sha1(f"{seed}:".encode()), int.from_bytes, []
    for sha in shas:
        digest = base.copy()
        digest.update(sha.encode())
        numbers.append(from_bytes(digest.digest()[:7], "big"))
    return (np.array(numbers, dtype=np.int64) >> 4) / 16 ** 13


def _unit_numbers(items: pd.DataFrame, seed: int) -> np.ndarray:
    """The items' numbers for the split with `seed`: kept by the scan for seed 0, hashed for another seed."""
    kept = items["unit0"].to_numpy(dtype=np.float64, na_value=np.nan)
    if seed == 0 and not np.isnan(kept).any():
        return kept
    return _unit_hashes(items["sha1"].tolist(), seed)


def split(index: DatasetIndex, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
          seed: int = 0, min_per_class: int = 5) -> Split:
    """Stratified, seeded, hash-based split; classes with fewer than `min_per_class` images dropped."""
    train_f, val_f, test_f = (f / sum(fractions) for f in fractions)
    items = index.items.copy()
    counts = items["label"].value_counts()
    dropped = {c: int(n) for c, n in counts.items() if n < min_per_class}
    items = items[~items["label"].isin(dropped)].copy()
    items["u"] = _unit_numbers(items, seed)
    if index.layout == "splits":
        items["split"] = items["given_split"]
        if not (items["split"] == "val").any():  # carve val out of train
            share = val_f / (train_f + val_f)
            items.loc[(items["split"] == "train") & (items["u"] < share), "split"] = "val"
    else:
        u = items["u"].to_numpy()
        items["split"] = np.where(u < test_f, "test", np.where(u < test_f + val_f, "val", "train"))
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
