"""Evaluation on the test split (val when there is none), with scikit-learn's metrics.

Accuracy, balanced accuracy, macro-F1, top-k, the confusion matrix, per-class
precision/recall/F1/support beside each class's train count, the most-confused pairs,
per-image predictions with their loss (for galleries) and test-time augmentation side by side.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn import metrics as skm

from core.evaluate.stats import majority_baseline, wilson
from core.models.backbones import GraftModel
from core.models.features import FeatureCache, forward_images
from core.models.preprocess import Preprocessing, eval_transform, train_transform
from core.runs.folder import RunDir


def softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits).float(), dim=1).numpy()


def predict_probs(model: GraftModel, prep: Preprocessing, paths: list[Path], shas: list[str], *,
                  views: int = 1, seed: int = 0, progress: bool = False,
                  use_cache: bool | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Class probabilities per view (view 0 = plain eval, then light augmentations) and an ok mask.

    A frozen backbone goes through the feature cache: the same forward pass, done once.
    """
    use_cache = model.freeze == "head" if use_cache is None else use_cache
    cache = FeatureCache(model.backbone, prep) if use_cache else None
    results, ok_all = [], np.ones(len(paths), dtype=bool)
    for v in range(max(1, views)):
        transform = eval_transform(prep) if v == 0 else train_transform(prep, "light")
        view_name = "eval" if v == 0 else f"tta-light/{seed}/{v}"
        vseed = None if v == 0 else seed
        if cache is not None:
            feats, ok = cache.features(paths, shas, view_name, transform, seed=vseed, view_index=v,
                                       progress=progress)
            with torch.inference_mode():
                logits = model.head.eval()(torch.from_numpy(feats)).numpy() if ok.any() else \
                    np.zeros((len(paths), model.head[-1].out_features), np.float32)
        else:
            feats, ok = forward_images(_backbone_runner(model, prep), paths, transform, keys=shas, seed=vseed,
                                       view=v, progress=progress, desc=f"eval view {v}")
            with torch.inference_mode():
                logits = model.head.eval()(torch.from_numpy(feats)).numpy() if ok.any() else \
                    np.zeros((len(paths), model.head[-1].out_features), np.float32)
        results.append(softmax(logits))
        ok_all &= ok
    return results, ok_all


def backbone_features(model: GraftModel, prep: Preprocessing, paths: list[Path], shas: list[str],
                      progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The backbone's pooled features (what the head sees) for the plain eval view, and an ok mask;
    through the feature cache for a frozen backbone (already there after training)."""
    if model.freeze == "head":
        return FeatureCache(model.backbone, prep).features(paths, shas, "eval", eval_transform(prep), progress=progress)
    return forward_images(_backbone_runner(model, prep), paths, eval_transform(prep), keys=shas, progress=progress,
                          desc="features")


def _backbone_runner(model: GraftModel, prep: Preprocessing):
    """A fine-tuned backbone for scoring: its ONNX Runtime twin on a CPU (exported once per weights,
    checked against PyTorch), else the backbone itself."""
    from core.models.features import fingerprint, onnx_backbone

    return onnx_backbone(model.backbone, prep.input_size, f"tuned-{fingerprint(model.backbone)}-{prep.input_size}") \
        or model.backbone


def build_familiarity(run: RunDir, model: GraftModel, prep: Preprocessing, split, root: Path,
                      progress: bool = False) -> None:
    """The run's unfamiliar-photo detector (`core.trust.familiar`): training features, and the threshold
    that keeps 99 % of the dataset's own photos familiar. Saved with the run. On a `pooled` or `rich`
    view only the network's own pooled features count (the last columns): the earlier blocks' large
    averages would swamp the cosine distance (a photo like the training photos would read as unfamiliar)."""
    from core.trust import familiar

    frames = {name: split.manifest[split.manifest["split"] == name] for name in ("train", "val")}
    feats, kept = {}, {}
    for name, rows in frames.items():
        values, ok = backbone_features(model, prep, [root / p for p in rows["path"]], rows["sha1"].tolist(), progress)
        summary = getattr(model.backbone, "summary_dim", None) or values.shape[1]
        feats[name], kept[name] = values[ok][:, values.shape[1] - summary:], rows[ok].reset_index(drop=True)
    if len(feats["train"]):
        index = familiar.fit(feats["train"], feats["val"])
        index.photos = kept["train"][["path", "label", "sha1"]]
        familiar.save(run, index, len(feats["val"]))


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str],
                    train_counts: dict[str, int] | None = None) -> dict:
    """Headline and per-class metrics from true labels and class probabilities."""
    labels = list(range(len(classes)))
    y_pred = probs.argmax(1)
    k = min(5, len(classes) - 1) if len(classes) > 2 else 1
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    pairs = [(classes[i], classes[j], int(cm[i, j])) for i in labels for j in labels if i != j and cm[i, j]]
    pairs.sort(key=lambda p: -p[2])
    top_k = float(skm.top_k_accuracy_score(y_true, probs, k=k, labels=labels)) if k > 1 else \
        float(skm.accuracy_score(y_true, y_pred))
    correct = int((y_pred == y_true).sum())
    per_class_correct = np.diag(cm)
    return {
        "n": int(len(y_true)),
        "correct": correct,
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "accuracy_ci": list(wilson(correct, int(len(y_true)))),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "top_k": k, "top_k_accuracy": top_k,
        "labels": classes,
        "confusion_matrix": cm.tolist(),
        "per_class": [{"class": c, "precision": float(precision[i]), "recall": float(recall[i]),
                       "f1": float(f1[i]), "support": int(support[i]), "accuracy": float(recall[i]),
                       "correct": int(per_class_correct[i]), "ci": list(wilson(int(per_class_correct[i]), int(support[i]))),
                       "train_count": int((train_counts or {}).get(c, 0))} for i, c in enumerate(classes)],
        "most_confused": [{"true": t, "predicted": p, "count": n} for t, p, n in pairs[:10]],
    }


def calibration(y_true: np.ndarray, probs: np.ndarray, bins: int = 10) -> dict:
    """Reliability diagram bins and the expected calibration error (ECE)."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == y_true
    edges = np.linspace(0, 1, bins + 1)
    rows, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (confidence > lo) & (confidence <= hi)
        if mask.any():
            acc, conf = float(correct[mask].mean()), float(confidence[mask].mean())
            rows.append({"lo": float(lo), "hi": float(hi), "count": int(mask.sum()), "confidence": conf,
                         "accuracy": acc})
            ece += mask.mean() * abs(acc - conf)
    return {"ece": float(ece), "bins": rows}


def uncertainty_threshold(y_true: np.ndarray, probs: np.ndarray, keep: float = 0.9) -> float:
    """The top probability below which a prediction reads 'uncertain': `keep` of the correct
    validation predictions are at or above it."""
    confidence = probs.max(1)[probs.argmax(1) == y_true]
    if confidence.size == 0:
        return 1.0 / probs.shape[1]
    return float(np.quantile(confidence, 1 - keep))


def needs_evaluation(metrics: dict | None) -> bool:
    """Whether a run's metrics.json is missing or from an older format (no figure to beat, or the older one:
    the most common training class instead of the best always-the-same answer on the test images)."""
    return metrics is None or "train_class" not in (metrics.get("baseline") or {})


def evaluate_run(run: RunDir | str | Path, tta: int = 0, progress: bool = False, store=None,
                 run_id: str | None = None) -> dict:
    """Evaluate the run's best checkpoint; records metrics.json, predictions.csv and, in the
    model card, the headline metrics and the uncertainty threshold."""
    run = RunDir(run)
    model, card = run.load_model()
    classes = card.labels
    split = run.manifest(classes)
    split_name = "test" if (split.manifest["split"] == "test").any() else "val"
    rows = split.manifest[split.manifest["split"] == split_name].reset_index(drop=True)
    root = card.data_root
    paths = [root / p for p in rows["path"]]
    prep = card.preprocessing
    seed = int(card.config.get("seed", 0))
    views, ok = predict_probs(model, prep, paths, rows["sha1"].tolist(), views=max(1, tta), seed=seed,
                              progress=progress)
    index = {c: i for i, c in enumerate(classes)}
    y_true = np.array([index[c] for c in rows["label"]])[ok]
    probs = views[0][ok]
    train_counts = split.manifest[split.manifest["split"] == "train"]["label"].value_counts().to_dict()
    train_labels = split.manifest[split.manifest["split"] == "train"]["label"].tolist()
    result = {"split": split_name, **compute_metrics(y_true, probs, classes, train_counts),
              "baseline": majority_baseline(train_labels, [classes[i] for i in y_true]),
              "calibration": calibration(y_true, probs),
              "unreadable": [str(p) for p, good in zip(rows["path"], ok) if not good]}
    val_table = None
    val_rows = split.manifest[split.manifest["split"] == "val"]
    if split_name == "test" and len(val_rows):
        (val_probs,), val_ok = predict_probs(model, prep, [root / p for p in val_rows["path"]],
                                             val_rows["sha1"].tolist(), progress=progress)
        val_true = np.array([index[c] for c in val_rows["label"]])[val_ok]
        result["uncertainty_threshold"] = uncertainty_threshold(val_true, val_probs[val_ok])
        val_table = _predictions_table(val_rows[val_ok].reset_index(drop=True), val_probs[val_ok], val_true, classes)
    else:
        result["uncertainty_threshold"] = uncertainty_threshold(y_true, probs)
    if tta and tta > 1:
        tta_probs = np.mean(views, axis=0)[ok]
        tta_metrics = compute_metrics(y_true, tta_probs, classes, train_counts)
        result["tta"] = {"views": tta, "accuracy": tta_metrics["accuracy"],
                         "balanced_accuracy": tta_metrics["balanced_accuracy"],
                         "macro_f1": tta_metrics["macro_f1"],
                         "per_class_accuracy": {p["class"]: p["accuracy"] for p in tta_metrics["per_class"]}}
    run.write_evaluation(result, _predictions_table(rows[ok], probs, y_true, classes), val_table)
    headline = {k: result[k] for k in ("split", "n", "accuracy", "balanced_accuracy", "macro_f1",
                                       "top_k", "top_k_accuracy")}
    headline["ece"] = result["calibration"]["ece"]
    if "tta" in result:
        headline["tta_accuracy"] = result["tta"]["accuracy"]
    run.write_card(card.with_evaluation(headline, result["uncertainty_threshold"]))
    built = run.familiar_card_file
    if not built.is_file() or built.stat().st_mtime < run.best_file.stat().st_mtime:  # once per best model
        build_familiarity(run, model, prep, split, root, progress)
    if store is not None and run_id:
        store.update(run_id, test_acc=result["accuracy"])
    return result


def _predictions_table(rows: pd.DataFrame, probs: np.ndarray, y_true: np.ndarray, classes: list[str]) -> pd.DataFrame:
    pred = probs.argmax(1)
    true_p = probs[np.arange(len(y_true)), y_true]
    table = pd.DataFrame({
        "path": rows["path"].to_numpy(), "label": rows["label"].to_numpy(),
        "predicted": [classes[i] for i in pred], "confidence": probs.max(1),
        "loss": -np.log(np.clip(true_p, 1e-12, 1.0)), "correct": pred == y_true})
    for i, c in enumerate(classes):
        table[f"p_{c}"] = probs[:, i]
    return table


def _unfamiliar_share(run: RunDir, model: GraftModel, prep: Preprocessing, paths: list[Path], shas: list[str],
                      y_true: np.ndarray, y_pred: np.ndarray, progress: bool) -> dict:
    """How many photos of a folder the run's detector finds unfamiliar (information for "will it
    work on our other line?"), and the accuracy on the familiar ones; {} without a detector."""
    from core.trust import familiar

    index = familiar.load(run)
    if index is None or not paths:
        return {}
    feats, ok = backbone_features(model, prep, paths, shas, progress)
    flagged = index.unfamiliar(feats[ok])
    right = (y_true == y_pred)[ok]
    return {"unfamiliar": int(flagged.sum()), "unfamiliar_share": float(flagged.mean()),
            "flag_rate": familiar.flag_rate(run),
            "familiar_accuracy": float(right[~flagged].mean()) if (~flagged).any() else None}


def check_folder(run: RunDir | str | Path, folder: str | Path, progress: bool = False) -> dict:
    """Score the run's model on another labelled folder (ROOT/<class>/*, any layout): the full
    metrics, the confusion matrix and the do-nothing baseline, saved beside the run. Images of a
    class the run does not know are named and skipped; so are unreadable files."""
    from core.base.errors import BadInput
    from core.data import catalog

    run = RunDir(run)
    model, card = run.load_model()
    classes = card.labels
    index = catalog.scan(folder, progress=progress)
    items = index.items
    unknown = items[~items["label"].isin(classes)]["label"].value_counts().to_dict()
    known = items[items["label"].isin(classes)].reset_index(drop=True)
    if known.empty:
        raise BadInput(f"{folder}: no images of this run's classes ({', '.join(classes)})"
                       + (f"; found only {', '.join(sorted(unknown))}" if unknown else ""))
    paths = [index.root / p for p in known["path"]]
    (probs,), ok = predict_probs(model, card.preprocessing, paths, known["sha1"].tolist(), progress=progress)
    class_index = {c: i for i, c in enumerate(classes)}
    y_true = np.array([class_index[c] for c in known["label"]])[ok]
    train_labels = run.manifest(classes).manifest.query("split == 'train'")["label"].tolist()
    result = {"folder": str(index.root), "name": index.root.name,
              **compute_metrics(y_true, probs[ok], classes),
              "baseline": majority_baseline(train_labels, [classes[i] for i in y_true]),
              "skipped_classes": {str(k): int(v) for k, v in unknown.items()},
              "missing_classes": [c for c in classes if c not in set(known["label"])],
              "skipped_files": int(len(index.skipped)) + int((~ok).sum())}
    result.update(_unfamiliar_share(run, model, card.preprocessing, [p for p, k in zip(paths, ok) if k],
                                    known["sha1"][ok].tolist(), y_true, probs[ok].argmax(axis=1), progress))
    run.write_check(result)
    return result
