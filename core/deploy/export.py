"""Export a run as TorchScript and/or ONNX, with a model.json holding everything a serving
stack needs (labels, display names, preprocessing, backbone, metrics, version) and a parity check
against the PyTorch model on real validation images. No pickle anywhere.

Optionally the ONNX model is quantized to INT8 (ONNX Runtime's static quantization, calibrated on
the run's training photos): smaller and faster on a CPU, with slightly different answers; its size,
speed and accuracy change on the test split, against the fp32 model measured in the same run, are
what `int8_figures` returns and model.json records under "int8"."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.base import runtime
from core.base.errors import BadCheckpoint, BadInput
from core.base.storage import atomic_write, read_json, write_json
from core.data.images import ImageError, load_rgb
from core.data.notes import display_names, load_class_notes
from core.deploy.export_loader import preprocess as loader_preprocess
from core.evaluate.decision import for_run as decision_for_run
from core.models.preprocess import Preprocessing, eval_transform
from core.runs.folder import EXPORT_FORMAT, ModelCard, RunDir

FORMATS = ("torchscript", "onnx", "both")
TOLERANCE = 1e-4
EXPORT_CARD = "model.json"  # beside model.onnx / model.ts and graft_predict.py
FAMILIAR_FILE = "familiar.npy"  # the training photos' features (float16, no pickle), when the run has them
INT8_FILE = "model.int8.onnx"  # the quantized model; an --int8 export ships it instead of model.onnx
CALIBRATION_PHOTOS = 200  # training photos whose activations set the INT8 ranges


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


def export(run_dir: str | Path, out_dir: str | Path, fmt: str = "both", force: bool = False,
           int8: bool = False) -> dict:
    """Write the export folder; returns its model.json (with the parity results).

    Parity is checked on real validation images: the PyTorch model against each exported file,
    and the numpy preprocessing that `graft_predict.py` uses against the torch transform. With
    `int8`, the ONNX model is quantized and ships as model.int8.onnx instead of the fp32 file
    (model.json "files" names it, so every loader takes it the same way), its figures under "int8"."""
    if fmt not in FORMATS:
        raise BadInput(f"format must be one of {FORMATS}")
    if int8 and fmt == "torchscript":
        raise BadInput("INT8 quantization is for the ONNX model: choose --format onnx or both")
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
    quantized = None
    if int8:
        calibration = quantize_int8(run, out_dir / "model.onnx", out_dir / INT8_FILE)
        quantized = {**int8_figures(run, out_dir / "model.onnx", out_dir / INT8_FILE),
                     "calibration_photos": calibration}
        (out_dir / "model.onnx").unlink()
        files["onnx"] = INT8_FILE
    elif (out_dir / INT8_FILE).exists():  # an earlier --int8 export into this folder
        (out_dir / INT8_FILE).unlink()
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
    exported["display_names"] = display_names(load_class_notes(card.data_root), card.labels)
    exported["int8"] = quantized
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


# ------------------------------------------------------------------ ONNX Runtime and INT8


def ort_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime session for serving: the cores Graft may use (GRAFT_THREADS) inside each
    operator, one operator at a time; no memory pattern and no arena, because batch sizes vary from
    one call to the next (each new shape would keep its own plan and the arena only grows)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads or runtime.cpu_count(), 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.enable_mem_pattern = False
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _split_arrays(run: RunDir, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `limit` photos of a split (spread over it) as the loader's float32 inputs, and their
    class indices; photos that cannot be opened are left out."""
    card = run.card()
    rows = run.manifest().manifest
    rows = rows[rows["split"] == split]
    rows = rows.iloc[:: max(1, len(rows) // limit)].head(limit)
    arrays, targets = [], []
    for path, label in zip(rows["path"], rows["label"]):
        try:
            arrays.append(numpy_input(load_rgb(card.data_root / path), card.preprocessing))
        except ImageError:
            continue
        targets.append(card.labels.index(label) if label in card.labels else -1)
    if not arrays:
        raise BadInput(f"no {split} photo of run {run.id} could be opened (data folder {card.data_root})")
    return np.stack(arrays).astype(np.float32), np.array(targets)


def _run_dir(run_dir) -> RunDir:
    return run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)


def _calibration(arrays: np.ndarray, batch: int = 8):
    """Training photos in batches of 8, as ONNX Runtime's calibration reader hands them over."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"image": arrays[i:i + batch]} for i in range(0, len(arrays), batch)])

        def get_next(self):
            return next(self.batches, None)

    return Reader()


def quantize_int8(run_dir: str | Path, fp32: str | Path, out: str | Path,
                  photos: int = CALIBRATION_PHOTOS) -> int:
    """Static INT8 quantization of an exported model (QDQ, per-channel int8 weights, uint8
    activations whose ranges come from up to `photos` training photos, MinMax). The stem
    convolution and the classifier stay fp32: they cost little and most of the error is there.
    Returns the number of calibration photos."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    run, out = _run_dir(run_dir), Path(out)
    arrays, _ = _split_arrays(run, "train", photos)
    reader = _calibration(arrays)
    with tempfile.TemporaryDirectory(prefix="graft-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # timm's dynamic padding
            nodes = onnx.load(str(prepared)).graph.node
            keep = [n.name for n in nodes if n.op_type == "Conv"][:1] + [n.name for n in nodes if n.op_type == "Gemm"]
            quantize_static(str(prepared), str(Path(tmp) / "int8.onnx"), reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=keep)
        shutil.move(str(Path(tmp) / "int8.onnx"), str(out))
    return len(arrays)


def _speed(sessions: dict, batch: np.ndarray, rounds: int = 3) -> dict[str, float]:
    """Photos a second of each session on the same batch, rounds interleaved (best of `rounds`), so
    a busy machine slows both alike."""
    best = {name: float("inf") for name in sessions}
    for session in sessions.values():
        session.run(None, {"image": batch})  # warm-up
    for _ in range(rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {"image": batch})
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: len(batch) / seconds for name, seconds in best.items()}


def int8_figures(run_dir: str | Path, fp32: str | Path, int8: str | Path, limit: int = 500) -> dict:
    """What INT8 changes, on the run's test split (up to `limit` photos), both models measured in
    the same run: size on disk, photos a second (batches of up to 32), accuracy, and how often the
    two give the same label."""
    run = _run_dir(run_dir)
    arrays, targets = _split_arrays(run, "test", limit)
    sessions = {"fp32": ort_session(fp32), "int8": ort_session(int8)}
    labels = {name: np.concatenate([s.run(None, {"image": arrays[i:i + 32]})[0].argmax(1)
                                    for i in range(0, len(arrays), 32)]) for name, s in sessions.items()}
    speed = _speed(sessions, arrays[:32])
    accuracy = {name: float((found == targets).mean()) for name, found in labels.items()}
    sizes = {"fp32": os.path.getsize(fp32), "int8": os.path.getsize(int8)}
    return {"photos": len(arrays), "split": "test",
            "bytes": sizes, "size_ratio": sizes["int8"] / sizes["fp32"],
            "photos_per_s": speed, "speedup": speed["int8"] / speed["fp32"], "threads": runtime.cpu_count(),
            "accuracy": accuracy, "accuracy_change": accuracy["int8"] - accuracy["fp32"],
            "agreement": float((labels["int8"] == labels["fp32"]).mean())}


def int8_preview(run_dir: str | Path) -> dict:
    """`int8_figures` for a run before anything is exported (an fp32 ONNX file and its INT8 copy in
    a temporary folder, removed afterwards): what the owner reads before choosing INT8."""
    run = _run_dir(run_dir)
    with tempfile.TemporaryDirectory(prefix="graft-int8-preview-") as tmp:
        model, card = run.load_model()
        model = model.cpu().eval()
        example = torch.stack([eval_transform(card.preprocessing)(Image.new("RGB", (64, 64)))] * 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(Path(tmp) / "model.onnx"), input_names=["image"],
                              output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=17, dynamo=False)
        calibration = quantize_int8(run, Path(tmp) / "model.onnx", Path(tmp) / INT8_FILE)
        return {**int8_figures(run, Path(tmp) / "model.onnx", Path(tmp) / INT8_FILE),
                "calibration_photos": calibration}
