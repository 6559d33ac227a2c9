"""The dataset map: every photo of a run's dataset as a dot on a plane, placed by a 2-D projection of
the backbone's features (photos the network sees as alike sit together), with the test mistakes,
the likely mislabels and the kept uploads marked.

The projection is UMAP (umap-learn) on the features reduced to 50 principal components; see
docs/data.md for the choice against scikit-learn's t-SNE. It is computed once per run and kept in
the run folder (`map.csv`: path, x, y); the marks are read fresh each time (a decision or a new
audit changes them, not the places). Above MAX_POINTS photos a stratified sample is projected that
keeps every marked photo.
"""
from __future__ import annotations

import base64
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.base.runtime import cpu_count
from core.base.storage import atomic_write
from core.data import catalog, notes, thumbs
from core.runs.folder import RunDir

MAP_FILE = "map.csv"
MAX_POINTS = 5000
PCA_DIMS = 50
METHOD = "UMAP"
MARKS = ("photo", "test mistake", "likely mislabel", "kept upload")
THUMB = 64  # pixels: the hover thumbnail
EPOCHS = 200  # UMAP's optimisation steps (its default for < 10,000 points is 500; the picture settles by 200)


@dataclass
class DatasetMap:
    """The drawn points (path, label, split, x, y, predicted, mark) and how many photos there were."""

    points: pd.DataFrame
    total: int
    method: str = METHOD

    @property
    def sampled(self) -> bool:
        return len(self.points) < self.total


def project(feats: np.ndarray, seed: int = 0) -> np.ndarray:
    """[N, 2] coordinates: PCA to 50 dimensions, then UMAP (15 neighbours, cosine distance, seeded) on
    the matrix of distances."""
    from sklearn.decomposition import PCA

    feats = np.asarray(feats, np.float32)
    if len(feats) < 4:
        return np.zeros((len(feats), 2), np.float32)
    reduced = PCA(n_components=min(PCA_DIMS, *feats.shape), random_state=seed).fit_transform(feats)
    import umap
    from sklearn.metrics.pairwise import cosine_distances

    # UMAP's exact neighbours for small sets call its distance once a pair from Python (minutes for a
    # few thousand photos); the matrix from BLAS is ~100x faster (float32: 100 MB at MAX_POINTS)
    distances = cosine_distances(reduced).astype(np.float32)
    np.fill_diagonal(distances, 0.0)
    reducer = umap.UMAP(n_neighbors=min(15, len(feats) - 1), min_dist=0.1, metric="precomputed", random_state=seed,
                        n_jobs=1, n_epochs=EPOCHS, init="spectral" if len(feats) > 50 else "random")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "inverse_transform will be unavailable": not used
        return reducer.fit_transform(distances).astype(np.float32)


def stratified_sample(frame: pd.DataFrame, marked: np.ndarray, limit: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Row positions to draw: every marked row, and of the others a share of each class (by label) so
    that the total stays near `limit`."""
    marked = np.asarray(marked, bool)
    if len(frame) <= limit:
        return np.arange(len(frame))
    rest = np.flatnonzero(~marked)
    share = max(0.0, (limit - marked.sum()) / max(len(rest), 1))
    rng = np.random.default_rng(seed)
    keep = [np.flatnonzero(marked)]
    labels = frame["label"].to_numpy()[rest]
    for label in np.unique(labels):
        members = rest[labels == label]
        keep.append(rng.choice(members, size=min(len(members), max(1, round(share * len(members)))), replace=False))
    return np.sort(np.concatenate(keep))


def _marks(run: RunDir, frame: pd.DataFrame, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(mark of each row: MARKS, the predicted class of the test photos or '')."""
    from core.trust import audit

    mark = np.array([MARKS[3] if p.startswith(f"{notes.NOTES_DIR}/") else MARKS[0] for p in frame["path"]],
                    dtype=object)
    predicted = np.full(len(frame), "", dtype=object)
    try:
        index = catalog.scan(root)
        found = audit.cached(index, run.card().backbone) or audit.cached(index)
    except Exception:  # a folder gone or unreadable: the places still show
        found = None
    if found is not None:
        mark[frame["path"].isin(set(found.flagged["file"])).to_numpy()] = MARKS[2]
    if run.predictions_file.is_file():
        table = run.predictions().set_index("path")
        row = frame["path"].map(table["predicted"]).fillna("")
        predicted[:] = row.to_numpy()
        wrong = frame["path"].map(table["correct"].astype(str) != "True").fillna(False).astype(bool).to_numpy()
        mark[wrong] = MARKS[1]
    return mark, predicted


def _photos(run: RunDir) -> tuple[pd.DataFrame, Path]:
    """The run's photos (manifest) and the dataset's kept uploads: path, label, split, sha1."""
    card = run.card()
    root = card.data_root
    manifest = run.manifest(card.labels).manifest[["path", "label", "split", "sha1"]]
    uploads = [{"path": p, "label": "", "split": "upload", "sha1": v.get("sha1", "")}
               for p, v in notes.load_uploads(root).items() if v.get("unfamiliar") or v.get("uncertain")]
    frame = pd.concat([manifest, pd.DataFrame(uploads, columns=manifest.columns)], ignore_index=True)
    return frame.drop_duplicates("path").reset_index(drop=True), root


def _features(run: RunDir, frame: pd.DataFrame, root: Path, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    from core.evaluate.metrics import backbone_features

    model, card = run.load_model()
    feats, ok = backbone_features(model, card.preprocessing, [root / p for p in frame["path"]],
                                  frame["sha1"].tolist(), progress)
    summary = getattr(model.backbone, "summary_dim", None) or feats.shape[1]
    return feats[:, feats.shape[1] - summary:], ok


def dataset_map(run: RunDir | str, progress: bool = False, use_cache: bool = True) -> DatasetMap:
    """The run's dataset map: places from the run folder's map.csv when it covers the same photos,
    else computed (features through the feature cache, then `project`) and kept there."""
    run = RunDir(run) if not isinstance(run, RunDir) else run
    frame, root = _photos(run)
    mark, predicted = _marks(run, frame, root)
    frame = frame.assign(mark=mark, predicted=predicted)
    chosen = frame.iloc[stratified_sample(frame, mark != MARKS[0])].reset_index(drop=True)
    cache = run.file(MAP_FILE)
    places = _cached_places(cache, chosen) if use_cache else None
    if places is None:
        feats, ok = _features(run, chosen, root, progress)
        chosen = chosen[ok].reset_index(drop=True)
        xy = project(feats[ok])
        places = pd.DataFrame({"path": chosen["path"], "x": np.round(xy[:, 0], 4), "y": np.round(xy[:, 1], 4)})
        atomic_write(cache, lambda f: places.to_csv(f, index=False), mode="w")
    points = chosen.merge(places, on="path", how="inner")
    return DatasetMap(points[["path", "sha1", "label", "split", "x", "y", "predicted", "mark"]], len(frame))


def _cached_places(cache: Path, chosen: pd.DataFrame) -> pd.DataFrame | None:
    """The kept places when they cover every chosen photo (a new upload or a new sample recomputes)."""
    try:
        places = pd.read_csv(cache, dtype={"path": str}, keep_default_na=False)
    except (OSError, ValueError):
        return None
    if list(places.columns) != ["path", "x", "y"] or not set(chosen["path"]) <= set(places["path"]):
        return None
    return places


def thumbnail_uris(root: Path, points: pd.DataFrame, size: int = THUMB) -> list[str]:
    """A small JPEG data URI per point (the hover thumbnail), '' where the photo cannot be read.
    Thumbnails are cached on disk by content; a thread a core makes the first ones."""
    def one(row) -> str:
        data = thumbs.thumbnail(root / row[0], row[1], size)
        return "data:image/jpeg;base64," + base64.b64encode(data).decode() if data else ""

    with ThreadPoolExecutor(max_workers=max(1, cpu_count())) as pool:
        return list(pool.map(one, zip(points["path"], points["sha1"])))
