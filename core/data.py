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
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .errors import NotFound, log
from .images import IMAGE_EXTENSIONS, ImageError, load_rgb, open_image
from .storage import atomic_write, cache_home

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


def detect_layout(root: Path) -> str:
    names = {d.name.lower() for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")}
    return "splits" if "train" in names and names & {"val", "test"} else "folders"


def _walk(root: Path, layout: str):
    """Yield (relative path, label, given split, bytes, mtime_ns) for every file; files outside a
    class folder get label None. Symbolic-link folders are not followed (no loops)."""
    tops = [(root, "")] if layout == "folders" else [
        (root / d.name, d.name.lower()) for d in sorted(root.iterdir())
        if d.is_dir() and d.name.lower() in SPLITS]
    base = len(str(root)) + 1
    for top, split in tops:
        for entry in sorted(os.scandir(top), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if entry.is_file():
                st = entry.stat()
                yield entry.path[base:], None, split, st.st_size, st.st_mtime_ns
            elif entry.is_dir(follow_symlinks=False):
                yield from _walk_class(entry.path, entry.name, split, base)


def _walk_class(folder: str, label: str, split: str, base: int):
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.path)
            elif entry.is_file():
                try:
                    st = entry.stat()
                except OSError:
                    continue
                yield entry.path[base:].replace(os.sep, "/"), label, split, st.st_size, st.st_mtime_ns
        stack.extend(reversed(subdirs))


def _check_file(root: Path, rel: str, label: str | None, split: str, size: int, mtime_ns: int) -> dict:
    """One file's index row, or a skip row (has 'reason')."""
    base = {"path": rel, "label": label, "given_split": split, "bytes": size, "mtime_ns": mtime_ns}
    if label is None:
        return {**base, "reason": "not in a class folder", "detail": "files must sit in ROOT/<class>/"}
    if Path(rel).suffix.lower() not in IMAGE_EXTENSIONS:
        return {**base, "reason": "not an image", "detail": f"extension {Path(rel).suffix or '(none)'}"}
    if size == 0:
        return {**base, "reason": "zero bytes", "detail": ""}
    try:
        data = (root / rel).read_bytes()
        loaded = open_image(io.BytesIO(data), draft_size=64)
    except ImageError as err:
        return {**base, "reason": err.reason, "detail": err.detail}
    except OSError as err:
        return {**base, "reason": "unreadable", "detail": str(err)}
    width, height = loaded.original_size
    return {**base, "sha1": hashlib.sha1(data).hexdigest(),
            "dhash": str(imagehash.dhash(loaded.image, hash_size=16)),
            "width": width, "height": height, "mode": loaded.original_mode,
            "conversions": "+".join(loaded.conversions)}


ALL_COLUMNS = list(dict.fromkeys(ITEM_COLUMNS + SKIP_COLUMNS))
SCAN_VERSION = 2  # bump when a cached row would mean something else
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
    layout = detect_layout(root)
    listing = pd.DataFrame(list(_walk(root, layout)), columns=LISTING)
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
    checked = [_check_file(root, r.path, r.label, r.given_split, r.bytes, r.mtime_ns)
               for r in tqdm(fresh.itertuples(), total=len(fresh), desc="scan", unit="file",
                             disable=not progress, leave=False)]
    kept = cached.set_index("path").loc[listing["path"][reuse]].reset_index() if reuse.any() else None
    parts = [p for p in (kept, pd.DataFrame(checked, columns=ALL_COLUMNS)) if p is not None and len(p)]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=ALL_COLUMNS)
    frame = frame.reindex(columns=ALL_COLUMNS)
    order = {p: i for i, p in enumerate(listing["path"])}
    frame = frame.iloc[np.argsort([order[p] for p in frame["path"]], kind="stable")].reset_index(drop=True)
    if use_cache and (len(checked) or cached is None or len(cached) != len(frame)):
        atomic_write(cache_path, lambda f: frame.to_parquet(f, index=False))
    is_skip = frame["reason"].notna() & (frame["reason"].astype(str) != "")
    items = frame.loc[~is_skip, ITEM_COLUMNS].reset_index(drop=True)
    for col in ("given_split", "conversions"):
        items[col] = items[col].fillna("").astype(str)
    for col in ("bytes", "mtime_ns", "width", "height"):
        items[col] = items[col].astype("int64")
    skipped = frame.loc[is_skip, SKIP_COLUMNS].reset_index(drop=True)
    skipped["detail"] = skipped["detail"].fillna("").astype(str)
    return DatasetIndex(root, layout, items, skipped)


def signature(root: str | os.PathLike) -> tuple:
    """Cheap change detector for a dataset folder: the mtimes of the root and of the class folders
    (adding, removing or renaming a file changes its folder's mtime). Files are not listed."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return ()
    parts = [(str(root), root.stat().st_mtime_ns)]
    for child in sorted(os.scandir(root), key=lambda e: e.name):
        if child.is_dir(follow_symlinks=False):
            parts.append((child.name, child.stat().st_mtime_ns))
            if child.name.lower() in SPLITS:
                parts += [(f"{child.name}/{g.name}", g.stat().st_mtime_ns)
                          for g in sorted(os.scandir(child.path), key=lambda e: e.name)
                          if g.is_dir(follow_symlinks=False)]
    return tuple(parts)


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


class ImageDataset:
    """A torch-style dataset over image paths: loads through the one loader, then transforms.

    A file that became unreadable after the scan yields None (dropped by `collate_skip_none`)
    and is reported once, rather than crashing the run.
    """

    def __init__(self, paths: list[Path], labels: list[int], transform=None):
        self.paths, self.labels, self.transform = list(paths), list(labels), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            image = load_rgb(self.paths[i])
        except ImageError as err:
            log.warning("skipping %s", err)
            return None
        return self.apply(i, image), self.labels[i]

    def apply(self, i: int, image):
        return self.transform(image) if self.transform else image


def collate_skip_none(batch):
    import torch.utils.data

    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return torch.utils.data.default_collate(batch)
