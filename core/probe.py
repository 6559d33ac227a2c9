"""A classifier on cached backbone features: standardised features and a multinomial logistic
regression fitted to convergence (L-BFGS). It stands in for a trained head wherever an answer is
needed in seconds (the label check, core/audit.py; the learning curve, core/learning_curve.py), and
`fit_head` gives a frozen-backbone run its head fitted to convergence, C chosen on validation
(issue 14): the loop's head is under-trained on some sets, never the features."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_C = 0.05  # inverse regularisation; measured on ELPV and Fashion-MNIST features (bench/trust.py)


def make_probe(c: float = DEFAULT_C, seed: int = 0):
    """An unfitted scikit-learn pipeline: `fit(features, labels)`, `predict_proba(features)`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))


GRID = (0.003, 0.01, 0.03, 0.1, 0.3)  # inverse regularisation strengths tried on validation


def val_score(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    """(score, accuracy, balanced accuracy) on validation; the score, their mean, is what a head is
    chosen by, so a head never buys accuracy on the big classes with the small ones."""
    from sklearn.metrics import balanced_accuracy_score

    acc = float((y_true == y_pred).mean())
    balanced = float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0
    return (acc + balanced) / 2, acc, balanced


@dataclass
class FittedHead:
    """The head fitted to convergence: the chosen C, its validation score, accuracy, balanced accuracy
    and loss, and the logistic regression folded into one linear layer (weight [classes, features], bias)."""

    c: float
    val_score: float
    val_acc: float
    val_balanced: float
    val_loss: float
    weight: np.ndarray
    bias: np.ndarray
    tried: list[dict]


def fit_head(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, classes: int,
             sample_weight: np.ndarray | None = None, grid: tuple[float, ...] = GRID) -> FittedHead:
    """A multinomial logistic regression fitted to convergence (L-BFGS) for each C of the grid,
    the best by validation score (`val_score`, then loss), returned as a linear layer on the raw features:
    the standardisation is folded into the weights, so `x @ weight.T + bias` gives its logits."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    tx, vx = scaler.transform(train_x), scaler.transform(val_x)
    best, tried = None, []
    for c in grid:
        model = LogisticRegression(C=c, max_iter=3000).fit(tx, train_y, sample_weight=sample_weight)
        probs = _full_probs(model, vx, classes)
        score, acc, balanced = val_score(val_y, probs.argmax(1))
        loss = float(log_loss(val_y, probs, labels=list(range(classes))))
        tried.append({"C": c, "val_score": score, "val_acc": acc, "val_balanced": balanced, "val_loss": loss})
        if best is None or (score, -loss) > (best[1], -best[-1]["val_loss"]):
            best = (model, score, c, tried[-1])
    model, score, c, chosen = best
    coef, intercept = _full_coef(model, classes, train_x.shape[1])
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    weight = coef / scale
    bias = intercept - weight @ scaler.mean_
    return FittedHead(c, score, chosen["val_acc"], chosen["val_balanced"], chosen["val_loss"],
                      weight.astype(np.float32), bias.astype(np.float32), tried)


def _full_probs(model, x: np.ndarray, classes: int) -> np.ndarray:
    """Probabilities for every class index, also those absent from the training labels."""
    probs = np.zeros((len(x), classes))
    probs[:, model.classes_] = model.predict_proba(x)
    return probs / probs.sum(axis=1, keepdims=True)  # exactly one per row, as log_loss checks


def _full_coef(model, classes: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    coef, intercept = np.zeros((classes, dim)), np.full(classes, -1e4)
    if len(model.classes_) == 2:  # scikit-learn keeps one row for two classes: logit(class 1) - logit(class 0)
        coef[model.classes_[1]], intercept[model.classes_[1]] = model.coef_[0], model.intercept_[0]
        intercept[model.classes_[0]] = 0.0
    else:
        coef[model.classes_], intercept[model.classes_] = model.coef_, model.intercept_
    return coef, intercept
