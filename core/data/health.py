"""Data health: what a user should know about a folder before training on it.

Skipped files (with the reason), images converted on load, tiny images, exact duplicates (same
content hash), near-duplicates (same perceptual dHash, different bytes), and above all
duplicates that sit in two different splits: leakage between train and test.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.data.catalog import DatasetIndex, Split

TINY_PX = 32
UNDECODED = "photos not decoded yet"


@dataclass
class Health:
    skipped: pd.DataFrame  # path, reason, detail
    converted: pd.DataFrame  # path, label, conversions
    tiny: pd.DataFrame  # path, label, width, height
    exact_duplicates: pd.DataFrame  # group, path, label, split
    near_duplicates: pd.DataFrame  # group, path, label, split
    leakage: pd.DataFrame  # group, kind, path, label, split — groups spanning several splits
    undecoded: int = 0  # photos a large first scan read for their header only: damage and near-duplicates unchecked

    def summary(self) -> dict[str, int]:
        """Counts per kind (images, or groups for duplicates)."""
        return {"skipped files": len(self.skipped), "converted on load": len(self.converted),
                f"tiny (< {TINY_PX} px)": len(self.tiny),
                "exact-duplicate groups": self.exact_duplicates["group"].nunique(),
                "near-duplicate groups": self.near_duplicates["group"].nunique(),
                "groups leaking across splits": self.leakage["group"].nunique(),
                **({UNDECODED: self.undecoded} if self.undecoded else {})}


def size_histogram(items: pd.DataFrame, bins: int = 30) -> pd.DataFrame:
    """Counts of images by their shorter side: columns lo, hi, images."""
    shorter = items[["width", "height"]].min(axis=1)
    if shorter.empty:
        return pd.DataFrame(columns=["lo", "hi", "images"])
    counts, edges = np.histogram(shorter, bins=min(bins, max(1, shorter.nunique())))
    return pd.DataFrame({"lo": edges[:-1].round(1), "hi": edges[1:].round(1), "images": counts})


def _groups(items: pd.DataFrame, key: str) -> pd.DataFrame:
    """The rows whose `key` is shared with another row, numbered by group (in the key's order)."""
    dup = items[items[key].notna() & items[key].duplicated(keep=False)].sort_values([key, "path"])
    dup = dup.assign(group=dup.groupby(key).ngroup())
    return dup[["group", key, "path", "label", "split"]].reset_index(drop=True)


def _spanning(table: pd.DataFrame) -> pd.Series:
    """Which rows belong to a group found in more than one split (dropped classes left aside)."""
    used = table[table["split"] != "dropped"]
    splits_per_group = used.groupby("group")["split"].nunique()
    return table["group"].map(splits_per_group).fillna(0) > 1


def check(index: DatasetIndex, split: Split | None = None) -> Health:
    """Everything the Dataset page's health section shows, for a scanned (and split) folder."""
    items = index.items.copy()
    splits = split.manifest.set_index("path")["split"] if split is not None else pd.Series(dtype=str)
    items["split"] = items["path"].map(splits).astype(object).fillna("dropped" if split is not None else "")
    exact = _groups(items, "sha1")
    # near-duplicates: same perceptual hash but not byte-identical (one image per content kept)
    distinct = items[items["decoded"]].drop_duplicates("sha1")
    near = _groups(distinct, "dhash")
    near = near[near.groupby("group")["path"].transform("size") > 1]
    leaks = []
    for kind, table in (("exact", exact), ("near", near)):
        leaks.append(table[_spanning(table)].assign(kind=kind))
    leakage = pd.concat(leaks, ignore_index=True) if leaks else pd.DataFrame()
    if len(leakage):
        leakage["group"] = leakage["kind"] + "-" + leakage["group"].astype(str)
    tiny = items[(items["width"] < TINY_PX) | (items["height"] < TINY_PX)]
    converted = items[items["conversions"] != ""]
    return Health(index.skipped[["path", "reason", "detail"]].reset_index(drop=True),
                  converted[["path", "label", "conversions"]].reset_index(drop=True),
                  tiny[["path", "label", "width", "height"]].reset_index(drop=True),
                  exact.drop(columns="sha1"), near.drop(columns="dhash"),
                  leakage.reindex(columns=["group", "kind", "path", "label", "split"]).reset_index(drop=True),
                  index.undecoded)
