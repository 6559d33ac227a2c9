"""Scoring a large folder on Ray Data (`graft predict RUN FOLDER --engine ray [--address ADDR]`).

Ray Data reads the photos' bytes (`read_binary_files`, streamed, spread over the cluster), an actor pool
scores them with the run's ONNX export (each actor one ONNX Runtime thread, the model loaded once an
actor), and the driver writes the same table as the local path: each photo is decoded by the project's
loader (`scoring.decode`) and labelled by `Predictor.predict` and `predict.table_row`, the code behind
`graft predict` and `graft serve`, so the verdicts (label, probability, uncertain, unfamiliar,
pass/inspect) are the same. The bytes, not Ray's own image reader, go to the actors: Ray's decoder
would not be the loader the model was trained and checked with (EXIF turns, greyscale, truncation).

`ray` is an optional extra (`pip install graft[scale]`); `ray.init()` starts a local cluster (2 CPUs,
no dashboard) unless an address joins an existing one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from core.base.errors import BadInput, GraftError
from core.base.storage import cache_home
from core.deploy.predict import Predictor, expand_inputs, table_row

INSTALL = "pip install graft[scale]"
LOCAL_CPUS = 2  # the local cluster's CPUs: one actor each
ACTOR_CPUS = 0.75  # what Ray counts for an actor (it runs one ONNX thread): a quarter of each CPU is left for
READ_CPUS = 0.25  # the read tasks, which mostly wait on the disk (with whole CPUs the actors starve them)
BATCH = 32  # photos an actor scores at once


class RayMissing(GraftError):
    """--engine ray without Ray installed."""


def import_ray():
    """The `ray` module with Ray Data, or RayMissing saying in one line how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayMissing(f"--engine ray needs Ray Data, which is not installed: {INSTALL}") from None
    return ray


def onnx_export_for(ref: str | os.PathLike, runs_root: str | os.PathLike | None = None) -> Path:
    """An export folder with model.onnx: `ref` itself when it is one, else the run exported once (ONNX, with
    its parity check) into the Graft cache, keyed by the run and its weights file."""
    from core.deploy.export import export, export_card, is_export
    from core.runs.folder import RunDir
    from core.runs.store import RunStore

    if is_export(ref):
        if "onnx" not in export_card(ref)["files"]:
            raise BadInput(f"{ref}: this export has no model.onnx; export the run with --format onnx or both")
        return Path(ref)
    run_id, run = RunStore.open(runs_root).resolve(ref)
    weights = run.file(run.card().to_dict().get("checkpoint") or RunDir.BEST)
    stat = weights.stat()
    key = hashlib.sha1(f"{run.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = cache_home() / "exports" / f"{run_id}-{key}"
    if not is_export(folder):
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        export(run.path, tmp, "onnx")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.replace(folder)
    return folder


class Scorer:
    """One actor of the pool: the export loaded once with one ONNX Runtime thread; a batch of
    {bytes, path} → {path, row} (each row `table_row`'s dict as JSON, one schema for every block)."""

    def __init__(self, folder: str, top_k: int, threshold: float | None):
        os.environ["GRAFT_THREADS"] = "1"  # read by the ONNX session's options: one thread an actor
        import torch

        torch.set_num_threads(1)
        self.predictor = Predictor.from_export(folder)
        if threshold is not None and self.predictor.decision is not None:
            self.predictor.decision.threshold = threshold
        self.top_k = top_k

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from core.deploy.scoring import Refused, decode

        rows: dict[int, dict] = {}
        images, where = [], []
        for i, (data, path) in enumerate(zip(batch["bytes"], batch["path"])):
            try:
                images.append(decode(bytes(data), str(path)))
                where.append(i)
            except Refused as refused:
                rows[i] = {"source": str(path), "error": refused.reason, "detail": refused.detail}
        if images:
            for i, result in zip(where, self.predictor.predict(images, top_k=self.top_k, batch_size=BATCH)):
                rows[i] = {**result, "source": str(batch["path"][i])}
        decision = self.predictor.decision is not None
        return {"path": np.array([str(p) for p in batch["path"]], dtype=object),
                "row": np.array([json.dumps(table_row(rows[i], decision)) for i in range(len(batch["path"]))],
                                dtype=object)}


def start(ray, address: str | None = None, progress: bool = True) -> bool:
    """Join the cluster at `address`, or start a local one (2 CPUs, no dashboard, quiet); returns whether
    this call started Ray (and so should shut it down)."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(num_cpus=LOCAL_CPUS, include_dashboard=False, **quiet)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress and sys.stderr.isatty()  # else Ray logs its progress every few s
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return True


def score(ref: str | os.PathLike, inputs: list[str | os.PathLike], runs_root: str | os.PathLike | None = None,
          address: str | None = None, top_k: int = 3, threshold: float | None = None,
          actors: int | None = None, progress: bool = True) -> pd.DataFrame:
    """`graft predict`'s table for these files and folders, scored on Ray Data (rows in the local path's
    order: the inputs as given, folders expanded and sorted)."""
    ray = import_ray()
    folder = onnx_export_for(ref, runs_root)
    paths = expand_inputs(inputs)
    from core.deploy.export import export_card

    decision = bool(export_card(folder).get("decision"))  # as `Predictor.from_export` reads it
    if threshold is not None and not decision:
        raise BadInput("this run has no pass/inspect classes yet: choose them on the Results page "
                       "(Pass or inspect), then --threshold moves the line")
    unique = list(dict.fromkeys(os.path.abspath(p) for p in paths if Path(p).is_file()))
    started = start(ray, address, progress)
    try:
        found: dict[str, dict] = {}
        if unique:
            actors = actors or max(1, int(ray.cluster_resources().get("CPU", LOCAL_CPUS)))
            data = ray.data.read_binary_files(unique, include_paths=True, ignore_missing_paths=True,
                                              num_cpus=READ_CPUS)
            scored = data.map_batches(Scorer, fn_constructor_kwargs={"folder": str(folder), "top_k": top_k,
                                                                     "threshold": threshold},
                                      batch_size=BATCH, batch_format="numpy", concurrency=actors,
                                      num_cpus=ACTOR_CPUS)
            for batch in scored.iter_batches(batch_size=1024, batch_format="numpy"):
                for path, row in zip(batch["path"], batch["row"]):
                    found[os.path.abspath("/" + str(path).lstrip("/"))] = json.loads(row)
    finally:
        if started:
            ray.shutdown()
    return pd.DataFrame([_row_for(p, found, decision) for p in paths])


def _row_for(path: Path, found: dict[str, dict], decision: bool) -> dict:
    """The row of one input as the local path names it, or the reason it was not read."""
    row = found.get(os.path.abspath(path))
    if row is None:
        reason = "unreadable" if Path(path).is_file() else "missing"  # the loader's words for the local path
        return table_row({"source": str(path), "error": reason}, decision)
    return {**row, "file": str(path)}
