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
import pandas as pd
from tqdm.auto import tqdm

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
    """Yield (relative path, label, given split) for every file, and loose files as label None."""
    tops = [(root, "")] if layout == "folders" else [
        (root / d.name, d.name.lower()) for d in sorted(root.iterdir())
        if d.is_dir() and d.name.lower() in SPLITS]
    for top, split in tops:
        for entry in sorted(top.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_file():
                yield entry.relative_to(root).as_posix(), None, split
                continue
            if not entry.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(entry, followlinks=False):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if not name.startswith("."):
                        rel = (Path(dirpath) / name).relative_to(root).as_posix()
                        yield rel, entry.name, split


def _check_file(root: Path, rel: str, label: str | None, split: str, stat: os.stat_result) -> dict:
    """One file's index row, or a skip row (has 'reason')."""
    base = {"path": rel, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if label is None:
        return {**base, "reason": "not in a class folder", "detail": "files must sit in ROOT/<class>/"}
    if Path(rel).suffix.lower() not in IMAGE_EXTENSIONS:
        return {**base, "reason": "not an image", "detail": f"extension {Path(rel).suffix or '(none)'}"}
    if stat.st_size == 0:
        return {**base, "reason": "zero bytes", "detail": ""}
    try:
        data = (root / rel).read_bytes()
        loaded = open_image(io.BytesIO(data), draft_size=64)
    except ImageError as err:
        return {**base, "reason": err.reason, "detail": err.detail}
    except OSError as err:
        return {**base, "reason": "unreadable", "detail": str(err)}
    width, height = loaded.original_size
    return {**base, "label": label, "given_split": split, "sha1": hashlib.sha1(data).hexdigest(),
            "dhash": str(imagehash.dhash(loaded.image)),
            "width": width, "height": height, "mode": loaded.original_mode,
            "conversions": "+".join(loaded.conversions)}


def _cache_file(root: Path) -> Path:
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_home() / "scans" / f"{key}.csv"


def _load_cache(path: Path) -> dict[str, dict]:
    try:
        frame = pd.read_csv(path, dtype={"path": str, "label": str, "given_split": str, "sha1": str,
                                         "dhash": str, "mode": str, "conversions": str, "reason": str,
                                         "detail": str}, keep_default_na=False)
        if list(frame.columns) != list(dict.fromkeys(ITEM_COLUMNS + SKIP_COLUMNS)):
            return {}  # written by another version: rescan
        return {row["path"]: row for row in frame.to_dict("records")}
    except (OSError, ValueError, pd.errors.ParserError):
        return {}  # missing or corrupt cache: rescan


def scan(root: str | os.PathLike, progress: bool = False, use_cache: bool = True) -> DatasetIndex:
    """Index a dataset folder. Unchanged files (same size and mtime) come from the scan cache."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    layout = detect_layout(root)
    cache_path = _cache_file(root)
    cached = _load_cache(cache_path) if use_cache else {}
    rows, changed = [], False
    for rel, label, split in tqdm(list(_walk(root, layout)), desc="scan", unit="file",
                                  disable=not progress, leave=False):
        try:
            stat = (root / rel).stat()
        except OSError as err:
            rows.append({"path": rel, "reason": "unreadable", "detail": str(err), "bytes": 0, "mtime_ns": 0})
            continue
        old = cached.get(rel)
        if old and old["bytes"] == stat.st_size and old["mtime_ns"] == stat.st_mtime_ns \
                and (old.get("reason") or old.get("label") == label):
            rows.append({k: v for k, v in old.items() if v != "" or k in ("conversions", "given_split")})
            continue
        rows.append(_check_file(root, rel, label, split, stat))
        changed = True
    frame = pd.DataFrame(rows, columns=list(dict.fromkeys(ITEM_COLUMNS + SKIP_COLUMNS)))
    if use_cache and (changed or len(cached) != len(rows)):
        atomic_write(cache_path, lambda f: frame.to_csv(f, index=False), mode="w")
    is_skip = frame["reason"].notna() & (frame["reason"].astype(str) != "")
    items = frame.loc[~is_skip, ITEM_COLUMNS].reset_index(drop=True)
    items["given_split"] = items["given_split"].fillna("")
    items["conversions"] = items["conversions"].fillna("")
    for col in ("bytes", "mtime_ns", "width", "height"):
        items[col] = items[col].astype("int64")
    skipped = frame.loc[is_skip, SKIP_COLUMNS].reset_index(drop=True)
    return DatasetIndex(root, layout, items, skipped)


def signature(root: str | os.PathLike) -> tuple:
    """Cheap change detector for a dataset folder: mtimes of the root and the folders two levels
    down (adding, removing or renaming a file changes its folder's mtime)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return ()
    parts = [(str(root), root.stat().st_mtime_ns)]
    for child in sorted(root.iterdir()):
        if child.is_dir():
            parts.append((child.name, child.stat().st_mtime_ns))
            parts += [(f"{child.name}/{g.name}", g.stat().st_mtime_ns) for g in sorted(child.iterdir()) if g.is_dir()]
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
            print(f"warning: skipping {err}", flush=True)
            return None
        return (self.transform(image) if self.transform else image), self.labels[i]


def collate_skip_none(batch):
    import torch.utils.data

    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return torch.utils.data.default_collate(batch)
