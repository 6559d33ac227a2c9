"""Would more photos help, and of which class?

A learning curve from the run's backbone features: a quick classifier (`core.models.probe`) is fitted on
10, 25, 50 and 100 % of the training photos (a stratified draw, a few seeds) and scored on the
run's test photos (validation when there is no test split). The slope of each class's recall over
the last doubling of the data says where more photos would pay: "more photos of defect_067 would
help most; defect_000 has levelled off" (in words: `core.evaluate.words`). Seconds for a frozen backbone
(the features are cached).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.base.storage import read_json, write_json
from core.evaluate.words import more_photos_sentence
from core.runs.folder import RunDir

FRACTIONS = (0.1, 0.25, 0.5, 1.0)
SEEDS = (0, 1, 2)


def _subsample(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a stratified draw: `fraction` of each class, at least 2 photos (or all)."""
    picked = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        n = min(len(rows), max(2, int(round(fraction * len(rows)))))
        picked.append(rng.choice(rows, n, replace=False))
    return np.sort(np.concatenate(picked))


def curve(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, classes: list[str],
          fractions: tuple[float, ...] = FRACTIONS, seeds: tuple[int, ...] = SEEDS) -> dict:
    """Accuracy and per-class recall (mean over seeds) at each fraction of the training photos."""
    from core.models.probe import one_blas_thread

    with one_blas_thread():  # small matrices: BLAS's own threads cost more than they give
        points = [_point(fraction, train_x, train_y, test_x, test_y, classes, seeds) for fraction in fractions]
    return {"classes": classes, "points": points, "seeds": len(seeds), "test_images": int(len(test_y)),
            "sentence": more_photos_sentence(points, classes)}


def _point(fraction: float, train_x, train_y, test_x, test_y, classes: list[str], seeds) -> dict:
    """Accuracy, its spread over the seeds, and per-class recall at one fraction of the training photos."""
    from core.models.probe import make_probe

    accuracies, recalls, sizes = [], [], []
    for seed in (seeds if fraction < 1 else seeds[:1]):  # all the photos: one draw is all there is
        rows = _subsample(train_y, fraction, np.random.default_rng(seed))
        predicted = make_probe(seed=seed).fit(train_x[rows], train_y[rows]).predict(test_x)
        accuracies.append(float((predicted == test_y).mean()))
        recalls.append([float((predicted[test_y == c] == c).mean()) if (test_y == c).any() else float("nan")
                        for c in range(len(classes))])
        sizes.append(len(rows))
    return {"fraction": fraction, "train_images": int(np.mean(sizes)),
            "accuracy": float(np.mean(accuracies)), "accuracy_spread": float(np.std(accuracies)),
            "recall": dict(zip(classes, np.nanmean(np.array(recalls), axis=0).round(4).tolist()))}


def learning_curve(run: RunDir | str | os.PathLike, progress: bool = False) -> dict:
    """The run's learning curve (computed from its manifest and model, saved as learning_curve.json)."""
    from core.evaluate.metrics import backbone_features

    run = RunDir(run) if not isinstance(run, RunDir) else run
    model, card = run.load_model()
    split = run.manifest(card.labels)
    root = card.data_root
    index = {c: i for i, c in enumerate(card.labels)}
    parts = {}
    test_name = "test" if (split.manifest["split"] == "test").any() else "val"
    for name in ("train", test_name):
        rows = split.manifest[split.manifest["split"] == name]
        feats, ok = backbone_features(model, card.preprocessing, [root / p for p in rows["path"]],
                                      rows["sha1"].tolist(), progress)
        parts[name] = feats[ok], rows["label"].map(index).to_numpy()[ok]
    result = curve(*parts["train"], *parts[test_name], card.labels)
    result["scored_on"] = test_name
    write_json(run.learning_curve_file, result)
    return result


def table(result: dict, names: dict[str, str] | None = None):
    """One row per share of the training photos: how many, accuracy, and each class's recall (shares)."""
    import pandas as pd

    names = names or {}
    return pd.DataFrame([{"training photos": p["train_images"], "accuracy": p["accuracy"],
                          **{f"found: {names.get(c, c)}": r for c, r in p["recall"].items()}}
                         for p in result["points"]])


def load(run: RunDir | str | Path) -> dict | None:
    run = RunDir(run) if not isinstance(run, RunDir) else run
    try:
        return read_json(run.learning_curve_file) if run.learning_curve_file.is_file() else None
    except (OSError, ValueError):
        return None
