"""Export a run as TorchScript and/or ONNX, with a model.json holding everything a serving
stack needs (labels, preprocessing, backbone, metrics, version) and a parity check against the
PyTorch model on real validation images. No pickle anywhere."""
from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .data import load_manifest
from .evaluate import load_run_model
from .images import load_rgb
from .models import Preprocessing
from .storage import atomic_write, read_json, write_json
from .transforms import eval_transform

FORMATS = ("torchscript", "onnx", "both")
TOLERANCE = 1e-4


def _parity_images(run_dir: Path, card: dict, limit: int = 32) -> list:
    manifest = load_manifest(run_dir / "manifest.csv").manifest
    rows = manifest[manifest["split"] == "val"]
    rows = rows if len(rows) else manifest
    root = Path(card["config"]["data"])
    images = []
    for path in rows["path"].head(limit):
        try:
            images.append(load_rgb(root / path))
        except Exception:  # an image gone since training is simply not used for parity
            continue
    return images


def export(run_dir: str | Path, out_dir: str | Path, fmt: str = "both") -> dict:
    """Write the export folder; returns its model.json (with the parity results)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, card = load_run_model(run_dir)
    model = model.cpu().eval()
    prep = Preprocessing.from_dict(card["preprocessing"])
    transform = eval_transform(prep)
    images = _parity_images(run_dir, card)
    batch = torch.stack([transform(img) for img in images]) if images else \
        torch.zeros(2, 3, prep.input_size, prep.input_size)
    with torch.inference_mode():
        reference = torch.softmax(model(batch), 1).numpy()
    files, parity = {}, {}
    example = batch[:2]
    if fmt in ("torchscript", "both"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, example)
            atomic_write(out_dir / "model.ts", lambda f: torch.jit.save(traced, f))
            loaded = torch.jit.load(str(out_dir / "model.ts"))
        files["torchscript"] = "model.ts"
        with torch.inference_mode():
            parity["torchscript"] = _compare(reference, torch.softmax(loaded(batch), 1).numpy())
    if fmt in ("onnx", "both"):
        import onnxruntime

        tmp = out_dir / ".model.onnx.tmp"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                              dynamo=False)
        tmp.replace(out_dir / "model.onnx")
        files["onnx"] = "model.onnx"
        session = onnxruntime.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        logits = session.run(None, {"image": batch.numpy()})[0]
        parity["onnx"] = _compare(reference, torch.softmax(torch.from_numpy(logits), 1).numpy())
    shutil.copyfile(Path(__file__).with_name("export_loader.py"), out_dir / "graft_predict.py")
    exported = {
        "format": "graft-export", "version": __version__, "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run": run_dir.name, "backbone": card["backbone"], "head": card["head"], "labels": card["labels"],
        "preprocessing": {**card["preprocessing"], "crop": "center", "input": "RGB, NCHW float32",
                          "steps": "EXIF transpose; RGB; shorter side -> resize_size (interpolation); "
                                   "centre crop input_size; /255; (x - mean) / std"},
        "files": files, "metrics": card.get("metrics", {}),
        "uncertainty_threshold": card.get("uncertainty_threshold"),
        "parity": {"images": len(images), "tolerance": TOLERANCE, **parity},
        "loader": "graft_predict.py",
    }
    write_json(out_dir / "model.json", exported)
    return exported


def _compare(reference: np.ndarray, other: np.ndarray) -> dict:
    diff = float(np.abs(reference - other).max())
    same_top1 = bool((reference.argmax(1) == other.argmax(1)).all())
    return {"max_abs_diff": diff, "same_top1": same_top1, "ok": diff <= TOLERANCE and same_top1}


def is_export(folder: str | Path) -> bool:
    try:
        return read_json(Path(folder) / "model.json").get("format") == "graft-export"
    except (OSError, ValueError):
        return False
