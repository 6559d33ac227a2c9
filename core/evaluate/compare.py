"""What changed between two runs, on the test photos they share: McNemar's exact test (is the
difference more than noise?), the photos whose verdict changed (right → wrong, wrong → right,
and photos whose label the owner changed between the runs), and the classes that moved."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.base.errors import NotFound
from core.evaluate.stats import mcnemar
from core.runs.folder import RunDir

CHANGES = ("wrong → right", "right → wrong")
CHANGED_COLUMNS = ["path", "change", "label_a", "label_b", "predicted_a", "predicted_b"]


@dataclass
class Comparison:
    """Run A against run B on the same test photos."""

    common: int  # test photos both runs scored
    test: dict  # McNemar: only_a, only_b, p_value
    accuracy_a: float
    accuracy_b: float
    changed: pd.DataFrame  # CHANGED_COLUMNS, one row a photo whose verdict changed
    classes: pd.DataFrame  # class, photos, accuracy_a, accuracy_b, change (B - A), largest move first

    @property
    def fixed(self) -> pd.DataFrame:
        return self.changed[self.changed["change"] == CHANGES[0]]

    @property
    def broken(self) -> pd.DataFrame:
        return self.changed[self.changed["change"] == CHANGES[1]]


def _predictions(run: RunDir) -> pd.DataFrame:
    if not run.predictions_file.is_file():
        raise NotFound(f"{run.path}: the run has no test predictions (evaluate it first: graft eval)")
    table = run.predictions()
    table["correct"] = table["correct"].astype(str) == "True"
    return table[["path", "label", "predicted", "correct"]]


def compare(run_a: RunDir | str, run_b: RunDir | str) -> Comparison:
    """Compare two evaluated runs photo by photo on the test photos they share (by path)."""
    a, b = (_predictions(RunDir(r) if not isinstance(r, RunDir) else r) for r in (run_a, run_b))
    both = a.merge(b, on="path", suffixes=("_a", "_b"))
    test = mcnemar(both["correct_a"].to_numpy(), both["correct_b"].to_numpy())
    change = np.where(both["correct_b"] & ~both["correct_a"], CHANGES[0],
                      np.where(both["correct_a"] & ~both["correct_b"], CHANGES[1], ""))
    changed = both.assign(change=change)
    changed = changed[changed["change"] != ""].sort_values(["change", "path"])[CHANGED_COLUMNS]
    per_class = both.groupby("label_b").agg(photos=("path", "size"), accuracy_a=("correct_a", "mean"),
                                            accuracy_b=("correct_b", "mean"))
    per_class = per_class.reset_index().rename(columns={"label_b": "class"})
    per_class["change"] = per_class["accuracy_b"] - per_class["accuracy_a"]
    per_class = per_class.iloc[np.argsort(-per_class["change"].abs().to_numpy(), kind="stable")]
    return Comparison(len(both), test, float(both["correct_a"].mean()) if len(both) else 0.0,
                      float(both["correct_b"].mean()) if len(both) else 0.0,
                      changed.reset_index(drop=True), per_class.reset_index(drop=True))
