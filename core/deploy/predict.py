"""Prediction: a `Predictor` built from a run applies exactly the run's preprocessing
(from its model.json) to paths, bytes or PIL images and returns labelled top-k probabilities."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from core.base import runtime
from core.base.errors import GraftError
from core.base.storage import cache_home, read_json, write_json
from core.data.images import ImageError, ImageSource, is_image_name, load_rgb
from core.evaluate.decision import for_run as decision_for_run
from core.models.preprocess import Preprocessing, eval_transform
from core.runs.folder import RunDir

log = logging.getLogger("graft")


class Predictor:
    """A trained model with its labels and preprocessing, ready to label images."""

    def __init__(self, model, labels: list[str], prep: Preprocessing, card: dict | None = None):
        """`model`: an nn.Module, or any callable mapping a float batch (N, 3, H, W) to logits."""
        self.device, self.channels_last = torch.device("cpu"), False
        if isinstance(model, torch.nn.Module):
            self.device = runtime.pick_device()
            model, self.channels_last = runtime.place(model.eval(), self.device)
        self.model = model
        self.labels, self.prep, self.card = labels, prep, card or {}
        self.transform = eval_transform(prep)
        self.decision = None  # a pass/inspect rule (core.decision.Decision) applied to every prediction
        self.decision_problem = ""  # why the run's saved rule could not be used, if it could not
        self.familiarity = None  # the run's unfamiliar-photo detector (core.familiar), when it has one
        self.data_root = None  # where the run's training photos are (for "it looks most like these")

    @property
    def threshold(self) -> float | None:
        """Top probability below which a prediction should read 'uncertain' (from validation)."""
        return self.card.get("uncertainty_threshold")

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, checkpoint: str | None = None) -> "Predictor":
        run = RunDir(run_dir)
        model, card = run.load_model(checkpoint)
        predictor = cls(model, card.labels, card.preprocessing, card.to_dict())
        try:
            predictor.decision = decision_for_run(run)
        except GraftError as err:  # a damaged rule is said; the model still answers without it
            predictor.decision_problem = f"The pass/inspect rule of this run cannot be used: {err}"
            log.warning(predictor.decision_problem)
        from core.trust import familiar

        predictor.familiarity = familiar.load(run)
        predictor.data_root = card.data_root
        return predictor

    @classmethod
    def from_export(cls, folder: str | os.PathLike, prefer: str = "onnx") -> "Predictor":
        """An export folder (model.onnx and/or model.ts beside its model.json)."""
        from core.deploy.export import export_card

        folder = Path(folder)
        card = export_card(folder)
        files = card["files"]
        model = _ExportModel(folder, files, prefer, features=bool(card.get("familiarity")))
        predictor = cls(model, card["labels"], Preprocessing.from_dict(card["preprocessing"]), card)
        if card.get("decision"):
            from core.evaluate.decision import Decision

            predictor.decision = Decision.from_dict(card["decision"])
        if card.get("familiarity") and model.has_features:
            from core.trust.familiar import Familiarity

            train = np.load(folder / card["familiarity"]["file"], allow_pickle=False).astype(np.float32)
            predictor.familiarity = Familiarity(train, float(card["familiarity"]["threshold"]))
        return predictor

    def _tensor(self, images: list) -> torch.Tensor:
        return runtime.to_input(torch.stack([self.transform(img) for img in images]), self.device,
                                self.channels_last)

    def probabilities(self, images: list) -> torch.Tensor:
        """Class probabilities for RGB PIL images (already loaded)."""
        return self._forward(images)[0]

    def _forward(self, images: list) -> tuple[torch.Tensor, np.ndarray | None]:
        """(class probabilities, the backbone's features when the detector needs them) in one pass."""
        with torch.inference_mode(), runtime.autocast(self.device):
            x = self._tensor(images)
            if self.familiarity is not None and hasattr(self.model, "backbone"):
                feats = self.model.backbone(x)
                logits = self.model.head(feats)
            elif self.familiarity is not None and getattr(self.model, "has_features", False):
                logits, feats = self.model.both(x)
            else:
                return torch.softmax(self.model(x).float(), dim=1).cpu(), None
            return torch.softmax(logits.float(), dim=1).cpu(), feats.float().cpu().numpy()

    def predict(self, sources: ImageSource | list[ImageSource], top_k: int = 3,
                batch_size: int = 32, progress: bool = False) -> list[dict]:
        """One dict per source: `label`, `confidence`, `top` [(label, p)…], or `error` (the reason)."""
        if not isinstance(sources, (list, tuple)):
            sources = [sources]
        top_k = max(1, min(top_k, len(self.labels)))
        results: list[dict] = []
        for start in tqdm(range(0, len(sources), batch_size), desc="predict", unit="batch",
                          disable=not progress, leave=False):
            chunk = sources[start:start + batch_size]
            loaded, entries = [], []
            for src in chunk:
                name = str(src) if isinstance(src, (str, os.PathLike)) else getattr(src, "name", "image")
                entry = {"source": name}
                try:
                    loaded.append(load_rgb(src))
                    entries.append(entry)
                except ImageError as err:
                    entry.update(error=err.reason, detail=err.detail)
                results.append(entry)
            if loaded:
                probs, feats = self._forward(loaded)
                distances = self.familiarity.distance(feats) if feats is not None else [None] * len(loaded)
                values, indices = probs.topk(top_k, dim=1)
                for entry, vals, idx, row, far in zip(entries, values.tolist(), indices.tolist(), probs.tolist(),
                                                      distances):
                    entry["top"] = [(self.labels[i], float(v)) for i, v in zip(idx, vals)]
                    entry["label"], entry["confidence"] = entry["top"][0]
                    entry["probabilities"] = dict(zip(self.labels, map(float, row)))
                    entry["uncertain"] = self.threshold is not None and entry["confidence"] < self.threshold
                    if far is not None:
                        entry["distance"], entry["unfamiliar"] = float(far), bool(far > self.familiarity.threshold)
                    if self.decision is not None:
                        entry["p_inspect"] = self.decision.p_inspect(entry["probabilities"])
                        entry["decision"] = self.decision.verdict(entry["probabilities"])
                if feats is not None and self.familiarity.photos is not None:  # it looks most like these
                    for entry, examples in zip(entries, self.familiarity.examples(feats, 4)):
                        entry["examples"] = examples
        return results

    def predict_table(self, sources: list, top_k: int = 3, progress: bool = False) -> pd.DataFrame:
        """`graft predict`'s table: one `table_row` a source."""
        return pd.DataFrame([table_row(r, self.decision is not None)
                             for r in self.predict(sources, top_k, progress=progress)])


class _ExportModel:
    """An exported model (ONNX Runtime or TorchScript) as a callable: batch → logits; `both(batch)`
    → (logits, backbone features) when the export carries the features output."""

    def __init__(self, folder: Path, files: dict, prefer: str, features: bool = False):
        if prefer == "onnx" and "onnx" in files or "torchscript" not in files:
            import onnxruntime

            options = onnxruntime.SessionOptions()  # the cores Graft may use (GRAFT_THREADS), one graph at a time
            options.intra_op_num_threads, options.inter_op_num_threads = runtime.cpu_count(), 1
            session = onnxruntime.InferenceSession(str(folder / files["onnx"]), options,
                                                   providers=["CPUExecutionProvider"])
            self.has_features = features and len(session.get_outputs()) > 1
            self._run = lambda x: [torch.from_numpy(o) for o in session.run(None, {"image": x.cpu().numpy()})]
        else:
            import warnings

            with warnings.catch_warnings():  # TorchScript is deprecated upstream but still what serving stacks load
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(str(folder / files["torchscript"]), map_location="cpu").eval()
            self._run = lambda x: list(out) if isinstance(out := module(x), (tuple, list)) else [out]
            self.has_features = features  # model.json says whether it was exported with the features output

    def both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self._run(x)
        return outputs[0], outputs[1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]


def table_row(result: dict, decision: bool) -> dict:
    """One `Predictor.predict` result as a row of `graft predict`'s table (CSV and Parquet): file, label,
    prob, uncertain, unfamiliar, error, decision and p_inspect under a pass/inspect rule, then top-k."""
    ok = "label" in result
    row = {"file": result["source"], "label": result.get("label", ""), "prob": result.get("confidence"),
           "uncertain": _bool(result.get("uncertain")) if ok else "",
           "unfamiliar": _bool(result.get("unfamiliar")) if ok and "unfamiliar" in result else "",
           "error": result.get("error", "")}
    if decision:
        row["decision"], row["p_inspect"] = result.get("decision", ""), result.get("p_inspect")
    for rank, (label, p) in enumerate(result.get("top", []), 1):
        row[f"top{rank}"], row[f"p{rank}"] = label, p
    return row


def _bool(value) -> str:
    return "true" if value else "false"


def expand_inputs(items: list[str | os.PathLike]) -> list[Path]:
    """Files as given, and folders expanded to the image files under them (sorted)."""
    paths: list[Path] = []
    for item in items:
        item = Path(item)
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.is_file() and is_image_name(p))
        else:
            paths.append(item)
    return paths


def load_predictor(ref: str | os.PathLike, runs_root: str | os.PathLike | None = None) -> Predictor:
    """A run id (in `runs_root`), a run folder, or an export folder."""
    from core.deploy.export import is_export
    from core.runs.store import RunStore

    runtime.configure_threads()
    if is_export(ref):
        return Predictor.from_export(ref)
    _, run_dir = RunStore.open(runs_root).resolve(ref)
    return Predictor.from_run(run_dir)


MAX_ZIP_BYTES = 256 * 1024**2  # uncompressed total
MAX_ZIP_ENTRIES = 5000
MAX_ZIP_RATIO = 200  # uncompressed / compressed, per entry (zip bombs)
KEEP_FREE_BYTES = 1024**3  # an upload never takes the disk below this


def uploads_root() -> Path:
    return cache_home() / "uploads"


def unpack_upload(data: bytes, root: str | os.PathLike | None = None) -> tuple[Path, list[Path], list[tuple[str, str]]]:
    """A zip's images unpacked once per content: (folder, image paths, refused entries). The same
    bytes again (a rerun of the page) reuse the folder; `remove_upload` deletes it when done."""
    import hashlib
    import io
    import shutil

    root = Path(root) if root else uploads_root()
    root.mkdir(parents=True, exist_ok=True)
    _prune_uploads(root)
    folder = root / hashlib.sha1(data).hexdigest()[:20]
    done = folder / ".graft-unpacked.json"
    if done.is_file():
        info = read_json(done)
        return folder, [folder / p for p in info["files"]], [tuple(r) for r in info["refused"]]
    tmp = root / f".{folder.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        paths, refused = extract_zip(io.BytesIO(data), tmp)
    except Exception as err:  # not a zip at all, or a damaged one
        shutil.rmtree(tmp, ignore_errors=True)
        return folder, [], [("upload", f"not a readable zip ({type(err).__name__}: {err})")]
    write_json(tmp / done.name, {"files": [str(p.relative_to(tmp)) for p in paths], "refused": refused})
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return folder, [folder / p.relative_to(tmp) for p in paths], refused


def _prune_uploads(root: Path, max_age_s: float = 24 * 3600) -> None:
    """Uploads of sessions that ended without replacing them: removed after a day."""
    import shutil
    import time

    for folder in root.iterdir():
        try:
            if time.time() - folder.stat().st_mtime > max_age_s:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


def remove_upload(folder: str | os.PathLike) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def extract_zip(source, dest: str | os.PathLike) -> tuple[list[Path], list[tuple[str, str]]]:
    """Safely unpack the image files of a zip into `dest`.

    Returns (extracted image paths, [(entry, reason) for what was refused]). Entries whose path
    leads outside `dest` (zip-slip), links, oversized or over-compressed entries are refused;
    nothing is ever written outside `dest`.
    """
    import shutil
    import stat
    import zipfile

    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    extracted: list[Path] = []
    refused: list[tuple[str, str]] = []
    total = 0
    budget = MAX_ZIP_BYTES
    try:
        budget = min(budget, shutil.disk_usage(dest).free - KEEP_FREE_BYTES)
    except OSError:
        pass
    with zipfile.ZipFile(source) as archive:
        entries = [i for i in archive.infolist() if not i.is_dir()]
        if len(entries) > MAX_ZIP_ENTRIES:
            refused += [(i.filename, f"more than {MAX_ZIP_ENTRIES} files in one zip") for i in entries[MAX_ZIP_ENTRIES:]]
        for info in entries[:MAX_ZIP_ENTRIES]:
            name = info.filename
            if info.is_dir():
                continue
            target = (dest / name).resolve()
            if name.startswith(("/", "\\")) or ".." in Path(name).parts or not target.is_relative_to(dest):
                refused.append((name, "path leads outside the upload folder (zip-slip)"))
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                refused.append((name, "symbolic link"))
                continue
            if not is_image_name(name):
                refused.append((name, "not an image (extension)"))
                continue
            if total + info.file_size > budget:
                refused.append((name, f"over the upload budget ({budget // 1024**2} MB unpacked in all)"))
                continue
            total += info.file_size
            if info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1) + 1024 * 1024:
                refused.append((name, "too large once uncompressed (zip bomb?)"))
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as out:
                out.write(src.read(info.file_size + 1)[: info.file_size])
            extracted.append(target)
    return extracted, refused
