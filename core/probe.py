"""A quick classifier on cached backbone features: standardised features and a multinomial logistic
regression fitted to convergence (L-BFGS). It stands in for a trained head wherever an answer is
needed in seconds: the label check (core/audit.py) and the learning curve (core/learning_curve.py)."""
from __future__ import annotations

DEFAULT_C = 0.05  # inverse regularisation; measured on ELPV and Fashion-MNIST features (bench/trust.py)


def make_probe(c: float = DEFAULT_C, seed: int = 0):
    """An unfitted scikit-learn pipeline: `fit(features, labels)`, `predict_proba(features)`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
