"""Does a photo look like the training photos at all? (issue 13, part 1)

The top probability measures confusion *between* the known classes; it does not say whether a
photo belongs to the domain. This module does: a photo's distance is one minus the cosine
similarity of its backbone features to the nearest training photo's. The threshold is set on the
validation photos so that about 5 % of in-domain photos are flagged; above it a photo is
**unfamiliar** ("does not look like the training photos"), which is a different verdict from
**uncertain** ("looks like the data, but between two classes").

Saved with the run as `familiar.npy` (the training features, L2-normalised, float16; no pickle)
and `familiar.json` (the threshold and how it was set).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .storage import atomic_write, read_json, write_json

FEATURES, CARD = "familiar.npy", "familiar.json"
KEEP = 0.95  # share of validation photos that must read as familiar
METHOD = "cosine distance to the nearest training photo (backbone features)"


def _normalise(feats: np.ndarray) -> np.ndarray:
    feats = np.asarray(feats, dtype=np.float32)
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


@dataclass
class Familiarity:
    train: np.ndarray  # [N, D] L2-normalised training features
    threshold: float

    def nearest(self, feats: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(distances [M, k], indices [M, k]) of the k nearest training photos, nearest first."""
        query = _normalise(feats)
        distances, indices = [], []
        for start in range(0, len(query), 256):
            sims = query[start:start + 256] @ self.train.T.astype(np.float32)
            top = np.argsort(-sims, axis=1)[:, :k]
            indices.append(top)
            distances.append(1.0 - np.take_along_axis(sims, top, axis=1))
        if not distances:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return np.concatenate(distances), np.concatenate(indices)

    def distance(self, feats: np.ndarray) -> np.ndarray:
        return self.nearest(feats, 1)[0][:, 0]

    def unfamiliar(self, feats: np.ndarray) -> np.ndarray:
        return self.distance(feats) > self.threshold


def fit(train_feats: np.ndarray, val_feats: np.ndarray, keep: float = KEEP) -> Familiarity:
    """The index of the training features, with the threshold that keeps `keep` of the validation
    photos familiar."""
    index = Familiarity(_normalise(train_feats), 0.0)
    index.threshold = float(np.quantile(index.distance(val_feats), keep)) if len(val_feats) else 1.0
    return index


def save(folder: str | Path, index: Familiarity, n_val: int) -> None:
    folder = Path(folder)
    atomic_write(folder / FEATURES, lambda f: np.save(f, index.train.astype(np.float16), allow_pickle=False))
    write_json(folder / CARD, {"method": METHOD, "threshold": index.threshold, "keep": KEEP,
                               "train_images": int(len(index.train)), "val_images": int(n_val)})


def load(folder: str | Path) -> Familiarity | None:
    """The run's index, or None when it has none (trained before this existed)."""
    folder = Path(folder)
    if not (folder / FEATURES).is_file() or not (folder / CARD).is_file():
        return None
    train = np.load(folder / FEATURES, allow_pickle=False).astype(np.float32)
    return Familiarity(train, float(read_json(folder / CARD)["threshold"]))
