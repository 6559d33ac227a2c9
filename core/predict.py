"""Prediction: a `Predictor` built from a run applies exactly the run's preprocessing
(from its model.json) to paths, bytes or PIL images and returns labelled top-k probabilities."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from .features import configure_threads, pick_device
from .images import ImageError, ImageSource, is_image_name, load_rgb
from .models import Preprocessing, uses_channels_last
from .transforms import eval_transform


class Predictor:
    """A trained model with its labels and preprocessing, ready to label images."""

    def __init__(self, model: torch.nn.Module, labels: list[str], prep: Preprocessing, card: dict | None = None):
        self.device = pick_device()
        self.model = model.eval().to(self.device)
        self.channels_last = uses_channels_last(self.model)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.labels, self.prep, self.card = labels, prep, card or {}
        self.transform = eval_transform(prep)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, checkpoint: str = "best.pt") -> "Predictor":
        from .evaluate import load_run_model

        model, card = load_run_model(run_dir, checkpoint)
        return cls(model, card["labels"], Preprocessing.from_dict(card["preprocessing"]), card)

    def _tensor(self, images: list) -> torch.Tensor:
        batch = torch.stack([self.transform(img) for img in images]).to(self.device)
        return batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch

    def probabilities(self, images: list) -> torch.Tensor:
        """Class probabilities for RGB PIL images (already loaded)."""
        with torch.inference_mode():
            return torch.softmax(self.model(self._tensor(images)).float(), dim=1).cpu()

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
                probs = self.probabilities(loaded)
                values, indices = probs.topk(top_k, dim=1)
                for entry, vals, idx in zip(entries, values.tolist(), indices.tolist()):
                    entry["top"] = [(self.labels[i], float(v)) for i, v in zip(idx, vals)]
                    entry["label"], entry["confidence"] = entry["top"][0]
        return results

    def predict_table(self, sources: list, top_k: int = 3, progress: bool = False) -> pd.DataFrame:
        rows = []
        for r in self.predict(sources, top_k, progress=progress):
            row = {"file": r["source"], "predicted": r.get("label", ""), "confidence": r.get("confidence"),
                   "error": r.get("error", "")}
            for rank, (label, p) in enumerate(r.get("top", []), 1):
                row[f"top{rank}"], row[f"p{rank}"] = label, p
            rows.append(row)
        return pd.DataFrame(rows)


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


def load_predictor(ref: str | os.PathLike, runs_root: str | os.PathLike = "runs") -> Predictor:
    """A run id (in `runs_root`) or a run folder."""
    from .runs import RunStore

    _, run_dir = RunStore(runs_root).resolve(ref)
    configure_threads()
    return Predictor.from_run(run_dir)
