"""Does a photo look like the training photos at all?

The top probability measures confusion *between* the known classes; it does not say whether a
photo belongs to the domain. This module does: a photo's distance is one minus the cosine
similarity of its backbone features to the nearest training photo's. The threshold is set so that
about 1 in 100 photos of the dataset's own kind is flagged: the 99th percentile of the distances of
the validation photos and of training photos each left out of the index in turn (a few hundred
validation photos alone put a 99th percentile on four of them); above it a photo is
**unfamiliar** ("does not look like the training photos"), which is a different verdict from
**uncertain** ("looks like the data, but between two classes").

Saved with the run (RunDir's familiar_* files): the training features, L2-normalised, as float16
`.npy` (no pickle), the threshold and how it was set, and which training photo each row is, so the
same index answers "it looks most like these" (explanation by example).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.base.storage import atomic_write, read_json, write_json
from core.runs.folder import RunDir

KEEP = 0.99  # share of the dataset's own photos that must read as familiar (about 1 in 100 flagged)
METHOD = "cosine distance to the nearest training photo (backbone features)"
CALIBRATION = "validation photos, and training photos each left out of the index in turn"
LEAVE_OUT_AT_MOST = 5000  # training photos left out in turn for the threshold (a sample above this)


def _normalise(feats: np.ndarray) -> np.ndarray:
    feats = np.asarray(feats, dtype=np.float32)
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


@dataclass
class Familiarity:
    train: np.ndarray  # [N, D] L2-normalised training features
    threshold: float
    photos: pd.DataFrame | None = None  # path, label, sha1 of each training row (explanation by example)

    def examples(self, feats: np.ndarray, k: int = 4) -> list[list[dict]]:
        """For each image, the k training photos nearest to it: path, label, sha1, distance."""
        if self.photos is None:
            return [[] for _ in range(len(feats))]
        distances, indices = self.nearest(feats, k)
        rows = self.photos.to_dict("records")
        return [[{**rows[i], "distance": float(d)} for i, d in zip(row_i, row_d)]
                for row_i, row_d in zip(indices, distances)]

    def nearest(self, feats: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(distances [M, k], indices [M, k]) of the k nearest training photos, nearest first. Features
        wider than the index's are taken by their last columns (a pooled view: the network's own)."""
        feats = np.asarray(feats)
        query, k = _normalise(feats[:, feats.shape[1] - self.train.shape[1]:]), min(k, len(self.train))
        distances, indices = [], []
        for start in range(0, len(query), 256):
            sims = query[start:start + 256] @ self.train.T
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # the k best, then in order
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1), axis=1)
            indices.append(top)
            distances.append(1.0 - np.take_along_axis(sims, top, axis=1))
        if not distances:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return np.concatenate(distances), np.concatenate(indices)

    def distance(self, feats: np.ndarray) -> np.ndarray:
        return self.nearest(feats, 1)[0][:, 0]

    def unfamiliar(self, feats: np.ndarray) -> np.ndarray:
        return self.distance(feats) > self.threshold


def fit(train_feats: np.ndarray, val_feats: np.ndarray, keep: float = KEEP, seed: int = 0) -> Familiarity:
    """The index of the training features, with the threshold that keeps `keep` of the dataset's own
    photos familiar: measured on the validation photos and on training photos left out in turn."""
    index = Familiarity(_normalise(train_feats), 0.0)  # float32, as `nearest` multiplies it
    calibration = np.r_[index.distance(val_feats) if len(val_feats) else np.zeros(0), _left_out(index, seed)]
    index.threshold = float(np.quantile(calibration, keep)) if len(calibration) else 1.0
    return index


def _left_out(index: Familiarity, seed: int) -> np.ndarray:
    """Distances of training photos to their nearest *other* training photo (at most LEAVE_OUT_AT_MOST
    of them): photos of the dataset's kind that the index has not seen, without spending validation."""
    n = len(index.train)
    if n < 2:
        return np.zeros(0, np.float32)
    rows = np.random.default_rng(seed).choice(n, LEAVE_OUT_AT_MOST, replace=False) if n > LEAVE_OUT_AT_MOST \
        else np.arange(n)
    distances, indices = index.nearest(index.train[rows], 2)
    return np.where(indices[:, 0] == rows, distances[:, 1], distances[:, 0])  # skip the photo itself


def save(run: str | Path | RunDir, index: Familiarity, n_val: int) -> None:
    run = RunDir(run) if not isinstance(run, RunDir) else run
    atomic_write(run.familiar_features_file, lambda f: np.save(f, index.train.astype(np.float16), allow_pickle=False))
    if index.photos is not None:
        atomic_write(run.familiar_train_file, lambda f: index.photos.to_csv(f, index=False), mode="w")
    write_json(run.familiar_card_file, {"method": METHOD, "threshold": index.threshold, "keep": KEEP,
                                        "calibration": CALIBRATION,
                                        "train_images": int(len(index.train)), "val_images": int(n_val)})


def flag_rate(run: str | Path | RunDir) -> float | None:
    """The share of the dataset's own photos the run's detector flags by design (0.05 for runs made
    before the 1-in-100 calibration), or None without a detector."""
    run = RunDir(run) if not isinstance(run, RunDir) else run
    if not run.familiar_card_file.is_file():
        return None
    return 1.0 - float(read_json(run.familiar_card_file).get("keep", 0.95))


def load(run: str | Path | RunDir) -> Familiarity | None:
    """The run's index, or None when the run has none."""
    run = RunDir(run) if not isinstance(run, RunDir) else run
    if not run.familiar_features_file.is_file() or not run.familiar_card_file.is_file():
        return None
    train = np.load(run.familiar_features_file, allow_pickle=False).astype(np.float32)
    photos = pd.read_csv(run.familiar_train_file, keep_default_na=False, dtype=str) \
        if run.familiar_train_file.is_file() else None
    return Familiarity(train, float(read_json(run.familiar_card_file)["threshold"]),
                       photos if photos is not None and len(photos) == len(train) else None)
