"""The served model without the HTTP part: what may come in (`Limits`, `Refused`), photos decoded through
the project's loader (`decode`), verdicts on them (`verdicts`), the model loaded from a run or an export
(`load_model`), and the one thread that scores photos arriving together as one batch (`Batcher`).
`decode` and `verdicts` are pure, so another serving stack can reuse them."""
from __future__ import annotations

import hashlib
import io
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from PIL import Image

from core.base import runtime
from core.base.errors import BadCheckpoint, BadInput, GraftError
from core.data.images import MAX_PIXELS, ImageError, open_image

MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one request may bring, and how much work may wait."""

    image_bytes: int = 20 * MB  # one photo
    request_bytes: int = 64 * MB  # one request, all its photos
    files: int = 32  # photos a request
    queue: int = 128  # photos admitted and not yet answered; beyond it a request is answered 503 at once
    max_batch: int = 32  # photos scored together
    window_ms: float = 5.0  # how long the scorer waits for more photos when others are on their way
    pixels: int = MAX_PIXELS  # decoded pixels a photo (the image loader's budget; shown, not set, here)

    def __post_init__(self):
        for name in ("image_bytes", "request_bytes", "files", "queue", "max_batch"):
            if getattr(self, name) < 1:
                raise BadInput(f"{name.replace('_', ' ')} must be at least 1 (got {getattr(self, name)})")
        if not 0 <= self.window_ms <= 1000:
            raise BadInput(f"the batching window must be between 0 and 1000 ms (got {self.window_ms})")


class Refused(Exception):
    """A photo or request that cannot be scored: the HTTP status, the file and a short named reason."""

    def __init__(self, status: int, file: str, reason: str, detail: str = ""):
        self.status, self.file, self.reason, self.detail = status, file, reason, detail
        super().__init__(f"{file}: {reason}" + (f" ({detail})" if detail else ""))

    def entry(self) -> dict:
        return {"file": self.file, "error": self.reason, "detail": self.detail}


STATUS = {"too large": 413, "not an image": 415}  # the loader's reasons; any other (zero bytes, truncated,
# unreadable) is a 422


# ------------------------------------------------------------------ the pure part


def decode(data: bytes, name: str = "image", max_bytes: int | None = None) -> Image.Image:
    """One photo's bytes → the RGB image the model reads, through the project's loader; `Refused`
    with the loader's reason (zero bytes, not an image, truncated, unreadable, too large)."""
    if max_bytes is not None and len(data) > max_bytes:
        raise Refused(413, name, "too large", f"{len(data)} bytes; the limit is {max_bytes} a photo")
    source = io.BytesIO(data)
    source.name = name
    try:
        return open_image(source).image
    except ImageError as err:
        raise Refused(STATUS.get(err.reason, 422), name, err.reason, err.detail) from None


def verdicts(predictor, images: list, names: dict[str, str] | None = None, top_k: int | None = None,
             batch_size: int = 32) -> list[dict]:
    """Decoded photos → one verdict each, exactly as `Predictor.predict` (and so `graft predict`)
    labels them: `label`, `name` (its display name), `prob`, `top` [{label, name, prob}…],
    `uncertain`, `unfamiliar` (None without a detector), and `decision`, `p_inspect` under a rule."""
    names = names or {}
    rows = predictor.predict(list(images), top_k=top_k or len(predictor.labels), batch_size=batch_size)
    out = []
    for row in rows:
        if "label" not in row:  # a photo decoded earlier cannot fail here; kept for other callers
            out.append({"error": row.get("error", "unreadable"), "detail": row.get("detail", "")})
            continue
        verdict = {"label": row["label"], "name": names.get(row["label"], row["label"]), "prob": row["confidence"],
                   "top": [{"label": label, "name": names.get(label, label), "prob": p} for label, p in row["top"]],
                   "uncertain": bool(row["uncertain"]), "unfamiliar": row.get("unfamiliar")}
        if "distance" in row:
            verdict["distance"] = row["distance"]
        if "decision" in row:
            verdict["decision"], verdict["p_inspect"] = row["decision"], row["p_inspect"]
        out.append(verdict)
    return out


# ------------------------------------------------------------------ the model


@dataclass
class ServedModel:
    """A loaded predictor with what the server says about it."""

    predictor: object  # core.deploy.predict.Predictor
    id: str  # the run id
    sha256: str  # of the weights file served
    source: str  # "run" or "export"
    engine: str  # "pytorch", "onnxruntime" or "torchscript"
    names: dict  # {label: display name}
    card: dict  # what GET /model answers

    @property
    def labels(self) -> list[str]:
        return list(self.predictor.labels)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _test_figures(metrics: dict | None, full: dict | None) -> dict | None:
    """Test accuracy with its 95 % interval (from the run's metrics.json, else from the headline)."""
    from core.evaluate.stats import wilson

    metrics = full or metrics or {}
    if metrics.get("accuracy") is None:
        return None
    n = int(metrics.get("n", 0))
    interval = metrics.get("accuracy_ci") or list(wilson(round(metrics["accuracy"] * n), n))
    figures = {"split": metrics.get("split", "test"), "n": n, "accuracy": metrics["accuracy"],
               "interval": [float(interval[0]), float(interval[1])]}
    for key in ("balanced_accuracy", "macro_f1"):
        if metrics.get(key) is not None:
            figures[key] = metrics[key]
    return figures


def load_model(ref: str | os.PathLike, runs_root: str | os.PathLike | None = None) -> ServedModel:
    """A run id (in `runs_root`), a run folder or an export folder, loaded and checked by scoring one
    blank photo; a damaged or mismatched folder is a GraftError with the reason."""
    try:
        served = _load(ref, runs_root)
        _check(served)
    except GraftError:
        raise
    except Exception as err:  # onnxruntime, torch or a malformed card: the folder cannot be served
        raise BadCheckpoint(f"{ref}: the model cannot be served ({type(err).__name__}: {str(err)[:300]})") from None
    return served


def _load(ref, runs_root) -> ServedModel:
    from core.deploy.export import export_card, is_export
    from core.deploy.predict import Predictor

    runtime.configure_threads()
    if is_export(ref):
        folder = Path(ref)
        card = export_card(folder)
        predictor = Predictor.from_export(folder)
        files = card["files"]
        engine = "onnxruntime" if "onnx" in files else "torchscript"
        if engine == "onnxruntime":  # serving's session options (threads, no arena: memory stays flat)
            predictor.model = OnnxModel(folder / files["onnx"], bool(card.get("familiarity")))
        weights = folder / files["onnx" if engine == "onnxruntime" else "torchscript"]
        names = {**{label: label for label in card["labels"]}, **(card.get("display_names") or {})}
        run_id, source, full = str(card.get("run", folder.name)), "export", None
        familiarity = card.get("familiarity")
    else:
        from core.data.notes import display_names, load_class_notes
        from core.runs.folder import RunDir
        from core.runs.store import RunStore

        run_id, run = RunStore.open(runs_root).resolve(ref)
        predictor = Predictor.from_run(run.path)
        card = predictor.card
        weights, engine, source = run.file(card.get("checkpoint") or RunDir.BEST), "pytorch", "run"
        names = display_names(load_class_notes(predictor.data_root), predictor.labels)
        full = run.metrics()
        familiarity = ({"threshold": predictor.familiarity.threshold} if predictor.familiarity is not None else None)
    if predictor.familiarity is not None and getattr(predictor.familiarity, "photos", None) is not None:
        # no "looks most like these" training photos: their paths are this machine's business
        predictor.familiarity = replace(predictor.familiarity, photos=None)
    decision = predictor.decision.to_dict() if predictor.decision is not None else None
    sha = _sha256(weights)
    info = {"id": run_id, "sha256": sha, "source": source, "engine": engine, "backbone": card.get("backbone"),
            "labels": list(predictor.labels), "display_names": names, "preprocessing": predictor.prep.to_dict(),
            "test": _test_figures(card.get("metrics"), full),
            "uncertainty_threshold": predictor.threshold, "decision": decision,
            "unfamiliar": ({"threshold": familiarity.get("threshold")} if familiarity else None),
            "version": card.get("version"),
            "quantization": "int8" if source == "export" and card.get("int8") else None,
            "int8": card.get("int8") if source == "export" else None}
    return ServedModel(predictor, run_id, sha, source, engine, names, info)


class OnnxModel:
    """An export's ONNX model (fp32 or INT8) as the predictor's callable, in a session set up for
    serving (`core.deploy.export.ort_session`): batch → logits; `both` → (logits, features)."""

    def __init__(self, path: Path, features: bool):
        import torch

        from core.deploy.export import ort_session

        self.session, self._torch = ort_session(path), torch
        self.has_features = features and len(self.session.get_outputs()) > 1

    def _run(self, x) -> list:
        return [self._torch.from_numpy(o) for o in self.session.run(None, {"image": x.cpu().numpy()})]

    def both(self, x):
        outputs = self._run(x)
        return outputs[0], outputs[1]

    def __call__(self, x):
        return self._run(x)[0]


def _check(served: ServedModel) -> None:
    """Score one blank photo: the model answers, with one probability a class."""
    size = served.predictor.prep.input_size
    blank = Image.new("RGB", (size, size), (128, 128, 128))
    probs = served.predictor.probabilities([blank])
    if probs.shape[-1] != len(served.labels):
        raise BadCheckpoint(f"{served.id}: the model gives {probs.shape[-1]} outputs for "
                            f"{len(served.labels)} classes (model.json and the weights do not match)")
    result = verdicts(served.predictor, [blank], served.names)[0]  # the unfamiliar-photo detector too
    if "error" in result:
        raise BadCheckpoint(f"{served.id}: the model could not score a test photo ({result['error']})")


# ------------------------------------------------------------------ micro-batching


class Batcher:
    """One thread owns the model and scores what is waiting as one batch.

    A request first `admit`s its photos (False when `capacity` photos are already admitted: the
    caller answers 503 at once, nothing queues without bound), then `submit`s them and waits on the
    future. The thread takes the first waiting request and, while other admitted photos are still on
    their way, waits up to `window` seconds for more, up to `max_batch` photos."""

    def __init__(self, score: Callable[[list], list], max_batch: int = 32, window: float = 0.005,
                 capacity: int = 128):
        self.score, self.max_batch, self.window, self.capacity = score, max_batch, window, capacity
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self.batches = self.scored = 0
        self.score_seconds = 0.0  # in the model, all batches together (what /health reports as a mean)
        self._thread = threading.Thread(target=self._loop, name="graft-scorer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def admit(self, n: int) -> bool:
        with self._lock:
            if self._pending + n > self.capacity:
                return False
            self._pending += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self._pending -= n

    def submit(self, items: list) -> Future:
        future: Future = Future()
        self._queue.put((items, future))
        return future

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        carry = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is None:
                return
            batch, count, closing = [first], len(first[0]), False
            deadline = time.monotonic() + self.window
            while count < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._pending <= count:  # nothing else on its way: no waiting
                        break
                    try:
                        item = self._queue.get(timeout=left)
                    except queue.Empty:
                        break
                if item is None:
                    closing = True
                    break
                if count + len(item[0]) > self.max_batch:
                    carry = item
                    break
                batch.append(item)
                count += len(item[0])
            self._run(batch)
            if closing:
                return

    def _run(self, batch: list) -> None:
        batch = [(items, future) for items, future in batch if future.set_running_or_notify_cancel()]
        if not batch:
            return
        start = time.perf_counter()
        try:
            results = self.score([x for items, _ in batch for x in items])
        except Exception as err:  # a bug, not a photo: those who waited hear of it; the thread lives on
            for _, future in batch:
                future.set_exception(err)
            return
        self.batches += 1
        self.scored += len(results)
        self.score_seconds += time.perf_counter() - start
        start = 0
        for items, future in batch:
            future.set_result(results[start:start + len(items)])
            start += len(items)
