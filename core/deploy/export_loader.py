"""Standalone loader for a Graft export folder (copied into it as `graft_predict.py`).

Needs only Pillow and numpy, plus onnxruntime (for model.onnx) or torch (for model.ts):

    python graft_predict.py EXPORT_DIR IMAGE...   # file, label, probability, uncertain, unfamiliar[, decision]
    from graft_predict import load; predict = load(EXPORT_DIR); predict(["a.jpg"])
    predict.verdicts(["a.jpg"])                    # the same, with the two warnings, as dicts

The model file is the one model.json names under "files": an INT8 export (`graft export --int8`)
names model.int8.onnx there and is loaded the same way. `name` is the class's display name.

Two warnings, each from model.json:
- uncertain: the top probability is below `uncertainty_threshold` (the photo looks like the
  training photos, but lies between two classes);
- unfamiliar: the cosine distance of the photo's features to the nearest training photo
  (familiar.npy) is above `familiarity.threshold` (it does not look like the training photos at
  all, so its label means little).

Preprocessing is read from model.json and matches training exactly: EXIF orientation, RGB,
shorter side resized (PIL, same filter), centre crop, scale to [0, 1], normalise.
"""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
           "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


def to_rgb(image):
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(arr / 257.0 if arr.max(initial=0) > 255 else arr, 0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def preprocess(image, prep):
    image = to_rgb(image)
    w, h = image.size
    short = prep["resize_size"]
    size = (short, max(1, int(short * h / w))) if w <= h else (max(1, int(short * w / h)), short)
    image = image.resize(size, FILTERS[prep["interpolation"]], reducing_gap=None)
    crop = prep["input_size"]
    left, top = int(round((size[0] - crop) / 2.0)), int(round((size[1] - crop) / 2.0))
    image = image.crop((left, top, left + crop, top + crop))
    arr = np.asarray(image, dtype=np.float32) / 255.0
    arr = (arr - np.array(prep["mean"], np.float32)) / np.array(prep["std"], np.float32)
    return arr.transpose(2, 0, 1)


def softmax(logits):
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def decide(probs, decision):
    """'inspect' or 'pass' under the run's pass/inspect rule (model.json "decision"), else None."""
    if not decision:
        return None
    p_inspect = sum(probs.get(c, 0.0) for c in decision["inspect"])
    return "inspect" if p_inspect >= decision["threshold"] else "pass"


def nearest_distance(feats, train):
    """Cosine distance of each row of `feats` to its nearest row of `train` (both L2-normalised here);
    features wider than the training rows are taken by their last columns (the network's own)."""
    feats = feats[:, feats.shape[1] - train.shape[1]:]
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    train = train / np.maximum(np.linalg.norm(train, axis=1, keepdims=True), 1e-12)
    return 1.0 - (feats @ train.T).max(axis=1)


def load(folder, prefer="onnx"):
    """A function: list of image paths (or PIL images) → list of {label: probability} dicts;
    its `verdicts` gives label, probability, uncertain, unfamiliar (and decision) per image."""
    folder = Path(folder)
    card = json.loads((folder / "model.json").read_text())
    files = card["files"]
    if prefer == "onnx" and "onnx" in files or "torchscript" not in files:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(folder / files["onnx"]), providers=["CPUExecutionProvider"])
        run = lambda x: session.run(None, {"image": x})  # noqa: E731
    else:
        import torch

        module = torch.jit.load(str(folder / files["torchscript"]), map_location="cpu").eval()

        def run(x):
            with torch.inference_mode():
                out = module(torch.from_numpy(x))
            return [o.numpy() for o in out] if isinstance(out, (tuple, list)) else [out.numpy()]

    familiarity = card.get("familiarity")
    train = np.load(folder / familiarity["file"], allow_pickle=False).astype(np.float32) if familiarity else None

    def forward(images):
        batch = np.stack([preprocess(img if isinstance(img, Image.Image) else Image.open(img), card["preprocessing"])
                          for img in images]).astype(np.float32)
        outputs = run(batch)
        probs = [dict(zip(card["labels"], map(float, p))) for p in softmax(outputs[0])]
        distances = nearest_distance(outputs[1], train) if train is not None and len(outputs) > 1 else None
        return probs, distances

    def predict(images):
        return forward(images)[0]

    def verdicts(images):
        probs, distances = forward(images)
        rows = []
        for i, p in enumerate(probs):
            label = max(p, key=p.get)
            threshold = card.get("uncertainty_threshold")
            row = {"label": label, "name": (card.get("display_names") or {}).get(label, label), "prob": p[label],
                   "uncertain": threshold is not None and p[label] < threshold,
                   "unfamiliar": None if distances is None else bool(distances[i] > familiarity["threshold"])}
            if card.get("decision"):
                row["decision"] = decide(p, card["decision"])
            rows.append(row)
        return rows

    predict.card, predict.verdicts = card, verdicts
    return predict


def _word(value):
    return "" if value is None else "true" if value else "false"


if __name__ == "__main__":
    predict = load(sys.argv[1])
    print("file\tlabel\tprob\tuncertain\tunfamiliar" + ("\tdecision" if predict.card.get("decision") else ""))
    for path, row in zip(sys.argv[2:], predict.verdicts(sys.argv[2:])):
        print(f"{path}\t{row['label']}\t{row['prob']:.4f}\t{_word(row['uncertain'])}\t{_word(row['unfamiliar'])}"
              + (f"\t{row['decision']}" if "decision" in row else ""))
