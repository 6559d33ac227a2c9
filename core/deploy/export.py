"""Export a run as TorchScript and/or ONNX, with a model.json holding everything a serving
stack needs (labels, preprocessing, backbone, metrics, version) and a parity check against the
PyTorch model on real validation images. No pickle anywhere."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.base.errors import BadCheckpoint, BadInput
from core.base.storage import atomic_write, read_json, write_json
from core.data.images import ImageError, load_rgb
from core.deploy.export_loader import preprocess as loader_preprocess
from core.evaluate.decision import for_run as decision_for_run
from core.models.preprocess import Preprocessing, eval_transform
from core.runs.folder import EXPORT_FORMAT, ModelCard, RunDir

FORMATS = ("torchscript", "onnx", "both")
TOLERANCE = 1e-4
EXPORT_CARD = "model.json"  # beside model.onnx / model.ts and graft_predict.py
FAMILIAR_FILE = "familiar.npy"  # the training photos' features (float16, no pickle), when the run has them


def _parity_images(run: RunDir, card: ModelCard, limit: int = 32) -> tuple[list, list[str]]:
    """Up to `limit` real validation images of the run (any split when it has no val), and the
    reason for each one that could not be opened."""
    manifest = run.manifest().manifest
    rows = manifest[manifest["split"] == "val"]
    rows = rows if len(rows) else manifest
    images, problems = [], []
    for path in rows["path"].head(limit):
        try:
            images.append(load_rgb(card.data_root / path))
        except ImageError as err:
            problems.append(str(err))
    return images, problems


def _check_target(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"{out_dir} is a file, not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force and not is_export(out_dir):
        raise BadInput(f"{out_dir} is not empty; choose an empty folder (or --force to write into it)")


class _WithFeatures(torch.nn.Module):
    """The model with a second output, the backbone's pooled features: what the unfamiliar-photo
    detector compares with the training photos (`core.trust.familiar`)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.model.backbone(x)
        return self.model.head(feats), feats


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def export(run_dir: str | Path, out_dir: str | Path, fmt: str = "both", force: bool = False) -> dict:
    """Write the export folder; returns its model.json (with the parity results).

    Parity is checked on real validation images: the PyTorch model against each exported file,
    and the numpy preprocessing that `graft_predict.py` uses against the torch transform."""
    if fmt not in FORMATS:
        raise BadInput(f"format must be one of {FORMATS}")
    run, out_dir = RunDir(run_dir), Path(out_dir)
    _check_target(out_dir, force)
    model, card = run.load_model()
    model = model.cpu().eval()
    prep = card.preprocessing
    from core.trust import familiar

    familiarity = familiar.load(run)
    exported_model = _WithFeatures(model).eval() if familiarity is not None else model
    images, problems = _parity_images(run, card)
    if not images:
        raise BadInput(f"no validation image of the run could be opened for the parity check "
                       f"(data folder {card.data_root}): " + "; ".join(problems[:3]))
    out_dir.mkdir(parents=True, exist_ok=True)
    transform = eval_transform(prep)
    batch = torch.stack([transform(img) for img in images])
    numpy_batch = np.stack([numpy_input(img, prep) for img in images])
    with torch.inference_mode():
        reference = torch.softmax(model(batch), 1).numpy()
    files = {}
    parity = {"preprocessing": {"max_abs_diff": float(np.abs(numpy_batch - batch.numpy()).max()),
                                "ok": bool(np.abs(numpy_batch - batch.numpy()).max() <= TOLERANCE)}}
    example = batch[:2]
    if fmt in ("torchscript", "both"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(exported_model, example)
            atomic_write(out_dir / "model.ts", lambda f: torch.jit.save(traced, f))
            loaded = torch.jit.load(str(out_dir / "model.ts"))
        files["torchscript"] = "model.ts"
        with torch.inference_mode():
            parity["torchscript"] = _compare(reference, torch.softmax(_first(loaded(batch)), 1).numpy())
    if fmt in ("onnx", "both"):
        import onnxruntime

        tmp = out_dir / ".model.onnx.tmp"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outputs = ["logits", "features"] if familiarity is not None else ["logits"]
            torch.onnx.export(exported_model, (example,), str(tmp), input_names=["image"], output_names=outputs,
                              dynamic_axes={"image": {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
                              opset_version=17, dynamo=False)
        tmp.replace(out_dir / "model.onnx")
        files["onnx"] = "model.onnx"
        session = onnxruntime.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        logits = session.run(None, {"image": batch.numpy()})[0]
        parity["onnx"] = _compare(reference, torch.softmax(torch.from_numpy(logits), 1).numpy())
    shutil.copyfile(Path(__file__).with_name("export_loader.py"), out_dir / "graft_predict.py")
    if familiarity is not None:
        atomic_write(out_dir / FAMILIAR_FILE,
                     lambda f: np.save(f, familiarity.train.astype(np.float16), allow_pickle=False))
    decision = decision_for_run(run)
    exported = card.to_export(
        run.id, files, {"images": len(images), "unreadable": problems, "tolerance": TOLERANCE, **parity},
        decision=decision.to_dict() if decision else None,
        familiarity={"file": FAMILIAR_FILE, "threshold": familiarity.threshold, "method": familiar.METHOD}
        if familiarity is not None else None)
    write_json(out_dir / EXPORT_CARD, exported)
    return exported


def _compare(reference: np.ndarray, other: np.ndarray) -> dict:
    diff = float(np.abs(reference - other).max())
    same_top1 = bool((reference.argmax(1) == other.argmax(1)).all())
    return {"max_abs_diff": diff, "same_top1": same_top1, "ok": diff <= TOLERANCE and same_top1}


def export_card(folder: str | Path) -> dict:
    """An export folder's model.json (the export owns its folder's layout)."""
    card = read_json(Path(folder) / EXPORT_CARD)
    if not isinstance(card, dict):
        raise BadCheckpoint(f"{Path(folder) / EXPORT_CARD}: not a model card (a JSON object is expected)")
    return card


def is_export(folder: str | Path) -> bool:
    try:
        return export_card(folder).get("format") == EXPORT_FORMAT
    except (OSError, ValueError):  # BadCheckpoint is a ValueError
        return False


def export_zip(folder: str | Path) -> bytes:
    """The export folder as one zip (what the dashboard hands over for download)."""
    import io
    import zipfile

    folder = Path(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                archive.write(path, path.name)
    return buffer.getvalue()


def numpy_input(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """The export loader's numpy rendering (C, H, W float32), exactly as `graft_predict.py` runs it."""

    return loader_preprocess(image, prep.to_dict())
