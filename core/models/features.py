"""Batched inference over image files, and the on-disk feature cache for frozen backbones.

`forward_images` is the one place images go through a network without gradients (feature
extraction, validation, evaluation, TTA): `torch.inference_mode`, channels_last for CNNs,
decoding in DataLoader workers that use one thread each beside the model's threads.

`FeatureCache` keeps a frozen backbone's outputs per image and view in SQLite, keyed by a
fingerprint of the backbone's weights, its preprocessing and each file's content hash, so a
second run on the same data trains at once and adding images computes only the new ones.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from core.base import distributed, runtime
from core.base.errors import log as logger
from core.base.storage import cache_home, free_space
from core.models.preprocess import ImageDataset, Preprocessing, collate_skip_none

FEATURE_VERSION = 1


def view_seed(seed: int, view: int, key: str) -> int:
    return int(hashlib.sha1(f"{seed}:{view}:{key}".encode()).hexdigest()[:8], 16)


class _ViewDataset(ImageDataset):
    """(transformed image, its index); an augmented view is seeded per image and view, so it is
    reproducible whatever the batch order or worker."""

    def __init__(self, paths: list[Path], transform: Callable, keys: list[str] | None = None,
                 seed: int | None = None, view: int = 0):
        super().__init__(paths, list(range(len(paths))), transform)
        self.keys, self.seed, self.view = keys, seed, view

    def apply(self, i: int, image):
        if self.seed is not None:
            torch.manual_seed(view_seed(self.seed, self.view, self.keys[i] if self.keys else str(i)))
        return self.transform(image)


def forward_images(module: nn.Module, paths: list[Path], transform: Callable, *, batch_size: int = 32,
                   workers: int | None = None, keys: list[str] | None = None, seed: int | None = None,
                   view: int = 0, progress: bool = False, desc: str = "forward",
                   log: Callable[[str], None] | None = logger.info,
                   on_progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run `module` over image files without gradients → (outputs float32 [N, D], ok mask [N])."""
    device = runtime.pick_device()
    module, channels_last = runtime.place(module.eval(), device)
    loader = runtime.make_loader(_ViewDataset(paths, transform, keys, seed, view), batch_size, workers=workers,
                                 collate_fn=collate_skip_none)
    outputs: np.ndarray | None = None
    ok = np.zeros(len(paths), dtype=bool)
    start = time.perf_counter()
    with torch.inference_mode(), runtime.autocast(device):
        for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            if batch is None:
                continue
            images, index = batch
            out = module(runtime.to_input(images, device, channels_last)).float().cpu().numpy()
            if outputs is None:
                outputs = np.zeros((len(paths), out.shape[1]), dtype=np.float32)
            outputs[index.numpy()] = out
            ok[index.numpy()] = True
            if on_progress:
                on_progress(int(ok.sum()), len(paths))
    if channels_last:
        module.to(memory_format=torch.contiguous_format)
    seconds = time.perf_counter() - start
    if log and len(paths):
        log(f"{desc}: {int(ok.sum())} images in {seconds:.1f} s ({ok.sum() / max(seconds, 1e-9):.1f} img/s)")
    if outputs is None:
        outputs = np.zeros((len(paths), 0), dtype=np.float32)
    return outputs, ok


class OnnxBackbone(nn.Module):
    """A frozen backbone run by ONNX Runtime on the CPU: the same features as PyTorch's (within 1e-4,
    checked when it is built), faster on a CPU (docs/benchmarks.md). The ONNX
    file is exported once per weights and input size into the Graft cache. No parameters: `place`
    leaves it as it is, and inputs arrive in plain NCHW."""

    def __init__(self, path: Path, threads: int, spinning: bool = False):
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        # its threads wait without spinning: the photos are decoded beside it (forward_images' workers), and
        # spinning threads take the cores from them
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"image": batch})[0])


ONNX_TOLERANCE = 1e-4


def onnx_reads() -> bool:
    """Whether ONNX Runtime reads the photos for a frozen backbone: on a CPU, unless GRAFT_FEATURES=torch."""
    return os.environ.get("GRAFT_FEATURES", "onnx") != "torch" and runtime.pick_device().type == "cpu"


def onnx_backbone(backbone: nn.Module, input_size: int, key: str) -> OnnxBackbone | None:
    """The backbone as an ONNX Runtime module for CPU feature extraction, or None where it does not
    apply (a GPU, GRAFT_FEATURES=torch) or fails (then PyTorch does the work, with a warning)."""
    if not onnx_reads():
        return None
    path = cache_home() / "onnx" / f"{key}.onnx"
    try:
        if not path.is_file():
            _export_backbone(backbone, input_size, path)
            _prune(path.parent)
        return OnnxBackbone(path, torch.get_num_threads())
    except Exception as err:  # an architecture the exporter cannot take, a damaged file: PyTorch does it
        logger.warning("ONNX Runtime features unavailable (%s: %s); using PyTorch", type(err).__name__, err)
        path.unlink(missing_ok=True)
        return None


def _prune(folder: Path, keep: int = 8) -> None:
    """Keep the newest `keep` exported networks (fine-tuned runs each export their own)."""
    files = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)


def _export_backbone(backbone: nn.Module, input_size: int, path: Path) -> None:
    """Export once, check it against PyTorch on random inputs, then move it into place."""
    import warnings

    import onnxruntime

    from core.base.storage import atomic_write

    backbone = backbone.eval()
    example = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(backbone, (example,), str(tmp), input_names=["image"], output_names=["features"],
                          dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    try:
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        with torch.inference_mode():
            reference = backbone(example).numpy()
        diff = float(np.abs(session.run(None, {"image": example.numpy()})[0] - reference).max())
        if not diff <= ONNX_TOLERANCE:
            raise ValueError(f"ONNX features differ from PyTorch's by {diff:.1e}")
        atomic_write(path, lambda f: f.write(tmp.read_bytes()))
    finally:
        tmp.unlink(missing_ok=True)


def fingerprint(module: nn.Module) -> str:
    """A hash of a module's weights: the cache key part that says 'same backbone, same weights'."""
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_key(backbone: nn.Module, prep: Preprocessing) -> str:
    """The feature cache's name for a frozen backbone: its weights (and so its view) and its preprocessing."""
    key = json.dumps({"weights": fingerprint(backbone), "prep": prep.to_dict(), "v": FEATURE_VERSION}, sort_keys=True)
    return hashlib.sha1(key.encode()).hexdigest()[:20]


def cached_count(key: str, shas: list[str], view: str = "eval", root: str | os.PathLike | None = None) -> int:
    """How many of these photos (by SHA-1) already have features of `view` in cache `key` (0 without the cache)."""
    path = (Path(root) if root else cache_home() / "features") / f"{key}.sqlite"
    if not path.is_file():
        return 0
    shas, found = list(dict.fromkeys(shas)), 0
    try:
        with closing(sqlite3.connect(path, timeout=5)) as db:
            for start in range(0, len(shas), 500):
                chunk = shas[start:start + 500]
                found += db.execute(f"SELECT count(*) FROM features WHERE view = ? AND sha1 IN "
                                    f"({','.join('?' * len(chunk))})", (view, *chunk)).fetchone()[0]
    except sqlite3.Error:
        return 0  # unreadable or busy: count nothing as cached (an estimate, never a failure)
    return found


class FeatureCache:
    """Frozen-backbone features on disk: one SQLite file per (weights, preprocessing)."""

    def __init__(self, backbone: nn.Module, prep: Preprocessing, root: str | os.PathLike | None = None,
                 shared: bool = False):
        """`shared`: every rank of a torchrun launch asks for the same features together, and each computes
        its share of the missing ones (`features`); the ranks must then call it in step."""
        self.backbone = backbone
        self.shared = shared and distributed.active()
        self.key = cache_key(backbone, prep)
        self.root = Path(root) if root else cache_home() / "features"
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / f"{self.key}.sqlite"
        self.computed = 0  # images whose features were computed (not found) by this object
        self.input_size = prep.input_size
        self._fast: nn.Module | None = None  # the ONNX Runtime twin, built when features are first computed
        self._open()

    def _runner(self) -> nn.Module:
        """What computes missing features: ONNX Runtime on a CPU, else the PyTorch backbone."""
        if self._fast is None:
            if self.shared and not distributed.is_main():
                distributed.barrier()  # rank 0 exports the ONNX file once, the others then load it
            self._fast = onnx_backbone(self.backbone, self.input_size, self.key) or self.backbone
            if self.shared and distributed.is_main():
                distributed.barrier()
        return self._fast

    def _open(self) -> None:
        try:
            with self._connect() as db:
                db.execute("CREATE TABLE IF NOT EXISTS features (sha1 TEXT, view TEXT, dim INTEGER, "
                           "vec BLOB, PRIMARY KEY (sha1, view))")
                db.execute("SELECT count(*) FROM features").fetchone()
        except sqlite3.DatabaseError as err:
            logger.warning("feature cache %s is corrupt (%s); rebuilding it", self.path, err)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            with self._connect() as db:
                db.execute("CREATE TABLE features (sha1 TEXT, view TEXT, dim INTEGER, vec BLOB, "
                           "PRIMARY KEY (sha1, view))")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection that commits and closes at the end of the block (sqlite3's own context manager
        only commits: a connection left open keeps the file's WAL alive in this process)."""
        db = sqlite3.connect(self.path, timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:
                yield db
        finally:
            db.close()

    def _lookup(self, shas: list[str], view: str) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        try:
            with self._connect() as db:
                for start in range(0, len(shas), 500):
                    chunk = shas[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    for sha, dim, blob in db.execute(
                            f"SELECT sha1, dim, vec FROM features WHERE view = ? AND sha1 IN ({marks})",
                            (view, *chunk)):
                        vec = np.frombuffer(blob, dtype=np.float32) if blob else np.zeros(0, np.float32)
                        if dim and vec.size == dim and np.isfinite(vec).all():  # torn or bad rows are recomputed
                            found[sha] = vec
        except sqlite3.DatabaseError as err:
            logger.warning("feature cache unreadable (%s); recomputing", err)
            self._open()
        return found

    def _store(self, rows: list[tuple[str, str, int, bytes]]) -> None:
        """Keep computed features; a cache that cannot be written (disk full, read-only) costs only
        the reuse next time, never the run."""
        try:
            with self._connect() as db:
                db.executemany("INSERT OR REPLACE INTO features VALUES (?,?,?,?)", rows)
        except sqlite3.Error as err:
            logger.warning("could not write the feature cache %s (%s; %s free); training goes on without "
                           "caching these features", self.path, err, free_space(self.root))

    def features(self, paths: list[Path], shas: list[str], view: str, transform: Callable, *,
                 seed: int | None = None, view_index: int = 0, batch_size: int = 32,
                 workers: int | None = None, progress: bool = False,
                 log: Callable[[str], None] | None = logger.info,
                 on_progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Features for every image (computing only the missing ones, each content once) → (array [N, D],
        ok mask). A `shared` cache under torchrun splits the missing photos between the ranks, and every
        rank gets all of them."""
        found = self._lookup(list(dict.fromkeys(shas)), view)
        position: dict[str, int] = {}
        for i, sha in enumerate(shas):
            position.setdefault(sha, i)
        lacking = [sha for sha in position if sha not in found]
        if self.shared:  # what any rank lacks (one machine's cache may hold more than another's)
            lacking = sorted(set().union(*distributed.gather(lacking)))
        missing = [position[sha] for sha in lacking]
        # a backbone that looks at several views of each photo at once takes fewer photos a batch
        batch_size = max(1, batch_size // getattr(self.backbone, "views_per_image", 1))
        if missing:
            mine = [missing[j] for j in (distributed.share(len(missing)) if self.shared else range(len(missing)))]
            scale = len(missing) / max(len(mine), 1)
            report = (lambda done, _: on_progress(min(int(done * scale), len(missing)), len(missing))) \
                if on_progress and self.shared else on_progress
            out, ok = forward_images(self._runner(), [paths[i] for i in mine], transform,
                                     batch_size=batch_size, workers=workers, keys=[shas[i] for i in mine],
                                     seed=seed, view=view_index, progress=progress,
                                     desc=f"features {view}", log=log, on_progress=report)
            computed = {shas[i]: out[j] for j, i in enumerate(mine) if ok[j]}
            if self.shared:
                computed = {k: v for part in distributed.gather(computed) for k, v in part.items()}
            if distributed.local_rank() == 0 or not self.shared:  # one writer a machine
                self._store([(sha, view, vec.size, vec.tobytes()) for sha, vec in computed.items()])
            self.computed += len(computed)
            found.update(computed)
        dim = next((v.size for v in found.values()), 0)
        result = np.zeros((len(shas), dim), dtype=np.float32)
        ok_mask = np.zeros(len(shas), dtype=bool)
        for i, sha in enumerate(shas):
            if sha in found:
                result[i], ok_mask[i] = found[sha], True
        return result, ok_mask
