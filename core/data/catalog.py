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
import pyarrow as pa
from tqdm.auto import tqdm

from core.base.cores import cpu_count
from core.base.errors import NotFound
from core.base.processes import spawned_pool
from core.base.storage import atomic_write, cache_home
from core.data import notes, walk
from core.data.filecheck import check_chunk, dhash, unit_numbers  # noqa: F401  (dhash: catalog.dhash)
from core.data.filecheck import check_file as _check_file

SPLITS = walk.SPLITS
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
    from concurrent.futures import ThreadPoolExecutor

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
    with spawned_pool(workers) if processes else ThreadPoolExecutor(workers) as pool:
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


def index_file(root: str | os.PathLike) -> Path:
    """Where the folder's scan index is kept (Parquet, in the Graft cache)."""
    root = Path(root).expanduser()
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
        unit0[has_sha] = unit_numbers(frame.loc[has_sha, "sha1"].tolist(), 0)
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
    cache_path = index_file(root)
    cached, migrated = _load_cache(cache_path) if use_cache else (None, False)
    large = cached is not None and len(cached) >= walk.PROCESS_FILES
    found = walk.walk(root, layout, workers=min(cpu_count(), SCAN_WORKERS) if large else 1)
    listing = _listing(found)
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
    return _index(root, layout, frame, found.problems)


def _listing(found: walk.Listing) -> pd.DataFrame:
    """The listing as columns (LISTING), built by Arrow: a million rows in about a tenth of a second."""
    labels, splits, counts = zip(*found.runs) if found.runs else ((), (), ())
    return pd.DataFrame({"path": _text(pa.array(found.paths, type=pa.large_string())),
                         "label": _repeated(labels, counts), "given_split": _repeated(splits, counts),
                         "bytes": np.array(found.sizes, dtype=np.int64), "mtime_ns": np.array(found.mtimes, dtype=np.int64)})


def _repeated(values: tuple[str, ...], counts: tuple[int, ...]) -> pd.api.extensions.ExtensionArray:
    """Each value repeated its count of times, as a text column."""
    distinct = list(dict.fromkeys(values))
    codes = np.repeat(np.array([distinct.index(v) for v in values], dtype=np.int32), np.array(counts, dtype=np.int64))
    return _text(pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(distinct, type=pa.large_string()))
                 .cast(pa.large_string()))


def _text(array: pa.Array) -> pd.api.extensions.ExtensionArray:
    return pd.array(array, dtype="str")


def _unchanged(listing: pd.DataFrame, cached: pd.DataFrame | None) -> tuple[pd.DataFrame | None, np.ndarray, bool]:
    """(the cache rows in the listing's order, aligned with it, or None; which listed files are unchanged:
    the same size, mtime and class; whether the cache lists the same files in the same order). An unchanged
    folder lists its files in the cache's order: compared column by column, without a join."""
    if cached is None or not len(cached):
        return None, np.zeros(len(listing), dtype=bool), False
    if len(cached) != len(listing) or not (cached["path"].array == listing["path"].array).all():  # by Arrow
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
    otherwise, SAVE_FILES at a time. Each block's rows become typed columns at once (a million rows are never
    held as Python objects: 1.8 GB at a million when they were), and the index so far is saved after each
    block to `cache_path`, so a killed scan keeps what it checked."""
    todo, kept = np.flatnonzero(~reuse), np.flatnonzero(reuse)
    parts, positions = ([_typed(cached.iloc[kept])], [kept]) if cached is not None and len(kept) else ([], [])
    bar = tqdm(total=len(todo), desc="scan" if not decode else "scan (decoding)", unit="file",
               disable=not progress, leave=False)
    count = [0]

    def heard(n: int) -> None:
        count[0] += n
        bar.update(n)
        if on_progress:
            on_progress(count[0], len(todo))

    with bar:
        for start in range(0, len(todo), SAVE_FILES):
            block = todo[start:start + SAVE_FILES]
            rows = list(listing.iloc[block][LISTING].itertuples(index=False, name=None))
            parts.append(_typed(pd.DataFrame(_check_files(root, rows, decode, heard), columns=ALL_COLUMNS)))
            positions.append(block)
            if cache_path is not None:
                _save(cache_path, _in_order(parts, positions))
    frame = _in_order(parts, positions)
    if not len(todo) and cache_path is not None:  # files removed only
        _save(cache_path, frame)
    return frame


def _in_order(parts: list[pd.DataFrame], positions: list[np.ndarray]) -> pd.DataFrame:
    """The parts' rows as one frame, in the order of their positions in the listing."""
    if not parts:
        return _typed(pd.DataFrame(columns=ALL_COLUMNS))
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return frame.iloc[np.argsort(np.concatenate(positions), kind="stable")].reset_index(drop=True)


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


def _unit_numbers(items: pd.DataFrame, seed: int) -> np.ndarray:
    """The items' numbers for the split with `seed`: kept by the scan for seed 0, hashed for another seed."""
    kept = items["unit0"].to_numpy(dtype=np.float64, na_value=np.nan)
    if seed == 0 and not np.isnan(kept).any():
        return kept
    return unit_numbers(items["sha1"].tolist(), seed)


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
