"""A classifier on cached backbone features: standardised features and a multinomial logistic
regression fitted to convergence (L-BFGS). It stands in for a trained head wherever an answer is
needed in seconds (the label check, `core.trust.audit`; the learning curve, `core.evaluate.learning_curve`),
and `fit_head` gives a frozen-backbone run its head fitted to convergence, chosen on validation: the
loop's head is under-trained on some sets, never the features. It tries a logistic
regression (C from a grid) and a small two-layer network (scikit-learn's MLPClassifier, two seeds
averaged, alpha from a grid); both fold into the product's own `linear` and `mlp` heads."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_C = 0.05  # inverse regularisation of the quick classifier (how it was chosen: docs/benchmarks.md)


def make_probe(c: float = DEFAULT_C, seed: int = 0):
    """An unfitted scikit-learn pipeline: `fit(features, labels)`, `predict_proba(features)`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))


GRID = (0.003, 0.01, 0.03, 0.1, 0.3)  # inverse regularisation strengths tried on validation
MLP_GRID = (0.01, 0.1, 1.0)  # the two-layer network's L2 penalties (alpha) tried on validation
MLP_SEEDS, MLP_HIDDEN = 2, 128  # two networks of 128 averaged: exactly the `mlp` head's 256 hidden units
MLP_MIN_PER_CLASS = 10  # its early stopping holds out a tenth of the training photos, some of every class
MARGIN, MARGIN_PHOTOS = 0.01, 2  # a more complex head replaces a simpler one only when this much better on
# validation, and by more than this many photos: a few hundred photos cannot tell smaller differences apart,
# and on a 26-photo validation set one photo is 4 points


def clearly_better(score: float, than: float, n_val: int) -> bool:
    """Whether a validation score beats another by MARGIN and by more than MARGIN_PHOTOS photos' worth."""
    return score >= than + max(MARGIN, MARGIN_PHOTOS / max(n_val, 1) + 1e-9)


def val_score(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    """(score, accuracy, balanced accuracy) on validation; the score, their mean, is what a head is
    chosen by, so a head never buys accuracy on the big classes with the small ones."""
    from sklearn.metrics import balanced_accuracy_score

    acc = float((y_true == y_pred).mean())
    balanced = float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0
    return (acc + balanced) / 2, acc, balanced


@dataclass
class FittedHead:
    """The head fitted to convergence: what was chosen (`kind` linear or mlp, and its penalty), its
    validation score, accuracy, balanced accuracy and loss, every candidate tried, and its layers on the
    raw features as (weight [out, in], bias) pairs, the standardisation folded into the first: one for
    `linear` (`x @ weight.T + bias` gives its logits), two with a ReLU between them for `mlp`."""

    kind: str
    penalty: float
    val_score: float
    val_acc: float
    val_balanced: float
    val_loss: float
    layers: list[tuple[np.ndarray, np.ndarray]]
    tried: list[dict]

    @property
    def words(self) -> str:
        return head_words(self.kind, self.penalty)

    def record(self) -> dict:
        """The choice as the run saves it (head_fit.json, stages.json)."""
        return {"kind": self.kind, "penalty": self.penalty}

    def logits(self, x: np.ndarray) -> np.ndarray:
        return _logits(self.layers, x)


def head_words(kind: str, penalty: float) -> str:
    """What was fitted, in words (logs, the Results page's engineer details)."""
    if kind == "mlp":
        return f"a two-layer network ({MLP_SEEDS * MLP_HIDDEN} hidden units, L2 penalty alpha={penalty:g})"
    return f"a logistic regression (L-BFGS, C={penalty:g})"


def _logits(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    for i, (weight, bias) in enumerate(layers):
        x = (np.maximum(x, 0) if i else x) @ weight.T + bias
    return x


def fit_head(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, classes: int,
             sample_weight: np.ndarray | None = None, grid: tuple[float, ...] = GRID,
             mlp_grid: tuple[float, ...] = MLP_GRID) -> FittedHead:
    """Every candidate fitted to convergence on standardised features: a multinomial logistic
    regression (L-BFGS) per C of `grid`, and a two-layer network per alpha of `mlp_grid` (when every
    class has MLP_MIN_PER_CLASS training photos). The best of each kind by validation score
    (`val_score`, then loss); the network is chosen when `clearly_better` than the logistic regression.
    Returned as layers on the raw features (the standardisation folded into the first)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    tx, vx = scaler.transform(train_x), scaler.transform(val_x)
    counts = np.bincount(train_y, minlength=classes)
    mlp_grid = mlp_grid if counts[counts > 0].min() >= MLP_MIN_PER_CLASS else ()
    fitted = fit_in_parallel([lambda c=c: _logistic(tx, train_y, sample_weight, c, classes) for c in grid]
                             + [lambda a=a: _mlp(tx, train_y, sample_weight, a, classes) for a in mlp_grid])
    tried: list[dict] = []
    chosen = _best(tried, "linear", grid, fitted[:len(grid)], vx, val_y, classes) if grid else None
    if mlp_grid:
        mlp = _best(tried, "mlp", mlp_grid, fitted[len(grid):], vx, val_y, classes)
        if chosen is None or clearly_better(mlp[1]["val_score"], chosen[1]["val_score"], len(val_y)):
            chosen = mlp
    if chosen is None:
        raise ValueError("fit_head: no candidate to fit (an empty grid, and too few photos a class for the network)")
    layers, entry = chosen
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    first_weight = layers[0][0] / scale
    layers = [(first_weight, layers[0][1] - first_weight @ scaler.mean_), *layers[1:]]
    return FittedHead(entry["kind"], entry["penalty"], entry["val_score"], entry["val_acc"], entry["val_balanced"],
                      entry["val_loss"], [(w.astype(np.float32), b.astype(np.float32)) for w, b in layers], tried)


def one_blas_thread():
    """A context in which NumPy's BLAS uses one thread: on the small matrices of a head or a probe,
    OpenBLAS's own threads cost more than they give; the cores are better spent on one candidate or
    fold each (`fit_in_parallel`)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def fit_in_parallel(fits: list) -> list:
    """Every callable's result, one a core at a time, each with one BLAS thread (the same weights, to
    the last bit, as fitted one after another)."""
    from concurrent.futures import ThreadPoolExecutor

    from core.base.runtime import cpu_count

    with one_blas_thread(), ThreadPoolExecutor(max(1, min(cpu_count(), len(fits)))) as pool:
        return list(pool.map(lambda fit: fit(), fits))


def _best(tried: list[dict], kind: str, grid, fitted: list, vx: np.ndarray, val_y: np.ndarray, classes: int):
    """(layers, entry) of the grid's best candidate by validation score then loss; every one joins `tried`."""
    from sklearn.metrics import log_loss

    best = None
    for penalty, layers in zip(grid, fitted):
        logits = _logits(layers, vx)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        score, acc, balanced = val_score(val_y, probs.argmax(1))
        loss = float(log_loss(val_y, np.clip(probs, 1e-12, 1), labels=list(range(classes))))
        entry = {"kind": kind, "penalty": penalty, "val_score": score, "val_acc": acc, "val_balanced": balanced,
                 "val_loss": loss}
        tried.append(entry)
        if best is None or (score, -loss) > (best[1]["val_score"], -best[1]["val_loss"]):
            best = (layers, entry)
    return best


def _logistic(tx: np.ndarray, y: np.ndarray, sample_weight, c: float, classes: int) -> list:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=3000).fit(tx, y, sample_weight=sample_weight)
    return [_full_coef(model, classes, tx.shape[1])]


def _mlp(tx: np.ndarray, y: np.ndarray, sample_weight, alpha: float, classes: int) -> list:
    """MLP_SEEDS networks of MLP_HIDDEN ReLU units (Adam, early stopping on a tenth of the training
    photos), their logits averaged: one network of MLP_SEEDS × MLP_HIDDEN units, exactly."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    firsts, seconds, bias = [], [], np.zeros(classes)
    for seed in range(MLP_SEEDS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            net = MLPClassifier((MLP_HIDDEN,), alpha=alpha, early_stopping=True, max_iter=300,
                                random_state=seed).fit(tx, y, sample_weight=sample_weight)
        out = np.zeros((MLP_HIDDEN, classes))
        out_bias = np.full(classes, -1e4)
        if len(net.classes_) == 2:  # one output unit: the logit of class 1 against class 0
            out[:, net.classes_[1]], out_bias[net.classes_[1]] = net.coefs_[1][:, 0], net.intercepts_[1][0]
            out[:, net.classes_[0]], out_bias[net.classes_[0]] = 0.0, 0.0
        else:
            out[:, net.classes_], out_bias[net.classes_] = net.coefs_[1], net.intercepts_[1]
        firsts.append((net.coefs_[0].T, net.intercepts_[0]))
        seconds.append(out.T / MLP_SEEDS)
        bias += out_bias / MLP_SEEDS
    first = (np.concatenate([w for w, _ in firsts]), np.concatenate([b for _, b in firsts]))
    return [first, (np.concatenate(seconds, 1), bias)]


def _full_coef(model, classes: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    coef, intercept = np.zeros((classes, dim)), np.full(classes, -1e4)
    if len(model.classes_) == 2:  # scikit-learn keeps one row for two classes: logit(class 1) - logit(class 0)
        coef[model.classes_[1]], intercept[model.classes_[1]] = model.coef_[0], model.intercept_[0]
        intercept[model.classes_[0]] = 0.0
    else:
        coef[model.classes_], intercept[model.classes_] = model.coef_, model.intercept_
    return coef, intercept
