"""How much a figure can be trusted: the images behind it, a 95 % interval, what a do-nothing
model would score, and whether two runs differ by more than noise. Their plain words (for a room
that will act on the numbers) are in `core.present.words`."""
from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for `correct` successes out of `n` (95 % by default); (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def majority_baseline(train_labels: list[str], eval_labels: list[str]) -> dict:
    """The figure to beat: the best a model that always gives the same answer could score on the evaluated
    images (their most common class; a tie goes to the class more common in training). `train_class` is the
    most common training class (a naive model's answer, and the usual 'good' class of an inspection)."""
    train_values, train_counts = np.unique(np.asarray(train_labels, dtype=object), return_counts=True)
    train_count = dict(zip(map(str, train_values), train_counts.tolist()))
    train_class = str(train_values[train_counts.argmax()]) if train_labels else None
    if not eval_labels:
        return {"class": train_class, "train_class": train_class, "correct": 0, "n": 0, "accuracy": 0.0}
    values, counts = np.unique(np.asarray(eval_labels, dtype=object), return_counts=True)
    best = max(zip(map(str, values), counts.tolist()), key=lambda vc: (vc[1], train_count.get(vc[0], 0)))
    return {"class": best[0], "train_class": train_class, "correct": int(best[1]), "n": len(eval_labels),
            "accuracy": best[1] / len(eval_labels)}


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """McNemar's exact test on the same images: `only_a` / `only_b` count the images one run gets
    right and the other wrong; `p_value` is the two-sided binomial probability of a split at least
    this uneven if the runs were equally good."""
    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    if a.shape != b.shape:
        raise ValueError("McNemar's test needs the two runs' results on the same images")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    if discordant == 0:
        return {"only_a": 0, "only_b": 0, "p_value": 1.0}
    from scipy.stats import binomtest

    return {"only_a": only_a, "only_b": only_b, "p_value": float(binomtest(only_a, discordant, 0.5).pvalue)}
