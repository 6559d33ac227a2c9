"""A run folder's files by name, and the typed model card (`model.json`).

Every module that reads or writes a run's files asks a `RunDir`; nobody else joins file names.
The `ModelCard` carries what is needed to rebuild and use the model: labels, preprocessing,
backbone, head, thresholds, metrics, and the training config with the data root resolved once.
It writes both forms of model.json: the run's (`to_dict`) and the export folder's (`to_export`),
which the standalone loader `graft_predict.py` reads.
`RunDir.load_model()` rebuilds the network and loads the best checkpoint (`weights_only`).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from core import __version__
from core.base.errors import BadCheckpoint, NotFound
from core.base.storage import atomic_write, load_torch, read_json, save_torch, write_json
from core.models.preprocess import Preprocessing

CARD_FORMAT = "graft-model"
EXPORT_FORMAT = "graft-export"
EXPORT_INPUT = "RGB, NCHW float32"
EXPORT_STEPS = ("EXIF transpose; RGB; shorter side -> resize_size (interpolation); centre crop input_size; /255; "
                "(x - mean) / std")
UNFAMILIAR_MEANING = "above the threshold: unfamiliar, the photo does not look like the training photos"


@dataclass
class ModelCard:
    """The run's model.json: everything needed to rebuild and use the model."""

    backbone: str
    head: str
    freeze: str
    labels: list[str]
    preprocessing: Preprocessing
    config: dict = field(default_factory=dict)
    dropout: float = 0.2
    metrics: dict = field(default_factory=dict)
    uncertainty_threshold: float | None = None
    checkpoint: str = "best.pt"
    version: str = __version__

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def data_root(self) -> Path:
        """The training data's folder: `~` expanded and made absolute, the same for every reader."""
        return data_root(self.config.get("data", ""))

    def to_dict(self) -> dict:
        return {"format": CARD_FORMAT, "version": self.version, "backbone": self.backbone, "head": self.head,
                "freeze": self.freeze, "dropout": self.dropout, "num_classes": self.num_classes,
                "labels": list(self.labels), "preprocessing": self.preprocessing.to_dict(),
                "checkpoint": self.checkpoint, "config": self.config, "metrics": self.metrics,
                "uncertainty_threshold": self.uncertainty_threshold}

    def to_export(self, run_id: str, files: dict[str, str], parity: dict, decision: dict | None = None,
                  familiarity: dict | None = None, loader: str = "graft_predict.py") -> dict:
        """The export folder's model.json: what a serving stack and the standalone loader read.

        `files` names the model files by format (onnx, torchscript); `parity` is the export's check
        against this model; `decision` the run's pass/inspect rule as a dict; `familiarity` the
        unfamiliar-photo detector as {file, threshold, method} (the features are the model's second
        output). Both may be None."""
        return {
            "format": EXPORT_FORMAT, "version": __version__,
            "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "run": run_id, "backbone": self.backbone, "head": self.head, "labels": list(self.labels),
            "preprocessing": {**self.preprocessing.to_dict(), "crop": "center", "input": EXPORT_INPUT,
                              "steps": EXPORT_STEPS},
            "files": dict(files), "metrics": self.metrics, "uncertainty_threshold": self.uncertainty_threshold,
            "decision": decision,
            "familiarity": {**familiarity, "output": "features", "meaning": UNFAMILIAR_MEANING} if familiarity else None,
            "parity": parity, "loader": loader,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "model.json") -> "ModelCard":
        """A card from its JSON, validated: a malformed card is refused with the reason."""
        if not isinstance(data, dict):
            raise BadCheckpoint(f"{source}: not a model card (a JSON object is expected)")
        labels = data.get("labels")
        if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
            raise BadCheckpoint(f"{source}: 'labels' must list at least two class names")
        if len(set(labels)) != len(labels):
            raise BadCheckpoint(f"{source}: 'labels' has duplicates")
        if "num_classes" in data and data["num_classes"] != len(labels):
            raise BadCheckpoint(f"{source}: {len(labels)} labels for {data['num_classes']} outputs")
        for key in ("backbone", "head", "freeze"):
            if not isinstance(data.get(key), str):
                raise BadCheckpoint(f"{source}: '{key}' is missing")
        try:
            prep = Preprocessing.from_dict(data.get("preprocessing") or {})
        except BadCheckpoint as err:
            raise BadCheckpoint(f"{source}: {err}") from None
        threshold = data.get("uncertainty_threshold")
        return cls(data["backbone"], data["head"], data["freeze"], labels, prep,
                   dict(data.get("config") or {}), float(data.get("dropout", 0.2)), dict(data.get("metrics") or {}),
                   float(threshold) if isinstance(threshold, (int, float)) else None,
                   str(data.get("checkpoint", "best.pt")), str(data.get("version", "")))

    def build(self, pretrained: bool = False):
        """The network this card describes (random head; weights from a checkpoint)."""
        from core.models.backbones import create

        return create(self.backbone, self.num_classes, self.freeze, self.head, pretrained=pretrained,
                      dropout=self.dropout, features=self.features)

    @property
    def features(self) -> str:
        """The feature recipe the model was trained with (`plain` when the config names none)."""
        return str(self.config.get("features", "plain"))

    def with_evaluation(self, metrics: dict, uncertainty_threshold: float | None) -> "ModelCard":
        return replace(self, metrics=metrics, uncertainty_threshold=uncertainty_threshold)


def data_root(path: str | os.PathLike) -> Path:
    """A dataset folder as typed (`~/photos`, `photos`) → the absolute folder it means."""
    return Path(os.path.abspath(Path(path).expanduser())) if str(path) else Path()


class RunDir:
    """One run's folder and the name of each of its files."""

    CONFIG, MANIFEST, CARD, BEST, LAST = "config.json", "manifest.csv", "model.json", "best.pt", "last.pt"
    PENDING_CARD = "model.json.pending"  # a card written before the checkpoint it describes (`keep_model`)
    METRICS, PREDICTIONS, REPORT, LOG, REQUEST = ("metrics.json", "predictions.csv", "report.html", "train.log",
                                                  "request.json")
    VAL_PREDICTIONS, DECISION, CHECKS = "val_predictions.csv", "decision.json", "checks"
    FAMILIAR_FEATURES, FAMILIAR_CARD, FAMILIAR_TRAIN = "familiar.npy", "familiar.json", "familiar_train.csv"
    LEARNING_CURVE, HEAD_FIT, STAGES = "learning_curve.json", "head_fit.json", "stages.json"
    LEADERBOARD = "leaderboard.json"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    config_file = property(lambda self: self.path / self.CONFIG)
    manifest_file = property(lambda self: self.path / self.MANIFEST)
    card_file = property(lambda self: self.path / self.CARD)
    best_file = property(lambda self: self.path / self.BEST)
    pending_card_file = property(lambda self: self.path / self.PENDING_CARD)
    last_file = property(lambda self: self.path / self.LAST)
    metrics_file = property(lambda self: self.path / self.METRICS)
    predictions_file = property(lambda self: self.path / self.PREDICTIONS)
    report_file = property(lambda self: self.path / self.REPORT)
    log_file = property(lambda self: self.path / self.LOG)
    request_file = property(lambda self: self.path / self.REQUEST)
    export_dir = property(lambda self: self.path / "export")
    val_predictions_file = property(lambda self: self.path / self.VAL_PREDICTIONS)
    decision_file = property(lambda self: self.path / self.DECISION)
    checks_dir = property(lambda self: self.path / self.CHECKS)
    familiar_features_file = property(lambda self: self.path / self.FAMILIAR_FEATURES)
    familiar_card_file = property(lambda self: self.path / self.FAMILIAR_CARD)
    familiar_train_file = property(lambda self: self.path / self.FAMILIAR_TRAIN)
    learning_curve_file = property(lambda self: self.path / self.LEARNING_CURVE)
    head_fit_file = property(lambda self: self.path / self.HEAD_FIT)
    stages_file = property(lambda self: self.path / self.STAGES)
    leaderboard_file = property(lambda self: self.path / self.LEADERBOARD)

    def is_run(self) -> bool:
        return self.config_file.is_file()

    def has_model(self) -> bool:
        return self.best_file.is_file()

    # ------------------------------------------------------------ config, card, manifest

    def read_config(self) -> dict:
        return self._json(self.config_file)

    def write_config(self, config: dict) -> None:
        write_json(self.config_file, config)

    def card(self) -> ModelCard:
        """The card of the model in best.pt (a card `keep_model` was killed before settling counts when
        best.pt is the checkpoint it describes)."""
        pending = self._pending_card()
        if pending is not None:
            return ModelCard.from_dict(pending, str(self.pending_card_file))
        return ModelCard.from_dict(self._json(self.card_file), str(self.card_file))

    def _pending_card(self) -> dict | None:
        try:
            record = read_json(self.pending_card_file)
            matches = self.best_file.is_file() and record.get("checkpoint_sha1") == _sha1(self.best_file.read_bytes())
        except (OSError, ValueError, AttributeError):
            return None
        return record.get("card") if matches else None

    def write_card(self, card: ModelCard) -> None:
        write_json(self.card_file, card.to_dict())

    def manifest(self, classes: list[str] | None = None):
        from core.data.catalog import load_manifest

        if not self.manifest_file.is_file():
            raise NotFound(f"{self.manifest_file}: the run has no manifest")
        return load_manifest(self.manifest_file, classes)

    def write_manifest(self, split) -> None:
        from core.data.catalog import save_manifest

        save_manifest(split, self.manifest_file)

    # ------------------------------------------------------------ evaluation outputs

    def metrics(self) -> dict | None:
        return self._json(self.metrics_file) if self.metrics_file.is_file() else None

    def write_evaluation(self, metrics: dict, predictions: pd.DataFrame,
                         val_predictions: pd.DataFrame | None = None) -> None:
        atomic_write(self.predictions_file, lambda f: predictions.to_csv(f, index=False), mode="w")
        if val_predictions is not None:
            atomic_write(self.val_predictions_file, lambda f: val_predictions.to_csv(f, index=False), mode="w")
        write_json(self.metrics_file, metrics)

    def predictions(self) -> pd.DataFrame:
        return pd.read_csv(self.predictions_file, keep_default_na=False)

    # ------------------------------------------------------------ decisions and checks on other folders

    def decision_record(self) -> dict | None:
        """The owner's pass/inspect rule as saved (`evaluate.decision.for_run` reads it), or None."""
        return self._json(self.decision_file) if self.decision_file.is_file() else None

    def write_decision(self, decision) -> None:
        write_json(self.decision_file, decision.to_dict())

    def write_check(self, result: dict) -> Path:
        """Keep a score on another folder (one file per folder, the latest score)."""
        import hashlib

        key = hashlib.sha1(result["folder"].encode()).hexdigest()[:8]
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in result["name"])[:40] or "folder"
        result = {**result, "checked": time.time()}
        return write_json(self.checks_dir / f"{safe}-{key}.json", result)

    def checks(self) -> list[dict]:
        """Every saved score on another folder, newest first."""
        found = [self._json(p) for p in sorted(self.checks_dir.glob("*.json"))] if self.checks_dir.is_dir() else []
        return sorted(found, key=lambda c: -c.get("checked", 0))

    # ------------------------------------------------------------ checkpoints and the model

    def save_best(self, state_dict: dict) -> None:
        """A better checkpoint of the same model (the card stays as it is)."""
        save_torch(self.best_file, state_dict)

    def keep_model(self, state_dict: dict, card: ModelCard) -> None:
        """Keep another model as best.pt with the card that describes it, as one change: the card is
        written first beside the old one with the new checkpoint's fingerprint, then the checkpoint,
        then the card itself. A process killed at any point leaves a best.pt and a card that match."""
        import io

        import torch

        buffer = io.BytesIO()
        torch.save(state_dict, buffer)
        data = buffer.getvalue()
        write_json(self.pending_card_file, {"checkpoint_sha1": _sha1(data), "card": card.to_dict()})
        atomic_write(self.best_file, lambda f: f.write(data))
        write_json(self.card_file, card.to_dict())
        self.pending_card_file.unlink(missing_ok=True)

    def load_best(self) -> dict:
        return load_torch(self.best_file)

    def write_head_fit(self, record: dict) -> None:
        write_json(self.head_fit_file, record)

    def write_stages(self, record: list[dict]) -> None:
        write_json(self.stages_file, record)

    def stages(self) -> list[dict] | None:
        """A time-limited run's stages: epochs, best validation accuracy, which one's model was kept."""
        return self._json(self.stages_file) if self.stages_file.is_file() else None

    def write_leaderboard(self, board: dict) -> None:
        """A budgeted run's leaderboard (`train.budget`), written atomically."""
        write_json(self.leaderboard_file, board)

    def leaderboard(self) -> dict | None:
        """Every model a budgeted run tried, with its figures and the choice; None for other runs."""
        return self._json(self.leaderboard_file) if self.leaderboard_file.is_file() else None

    def head_fit(self) -> dict | None:
        return self._json(self.head_fit_file) if self.head_fit_file.is_file() else None

    def save_last(self, state: dict) -> None:
        save_torch(self.last_file, state)

    def load_last(self) -> dict | None:
        return load_torch(self.last_file) if self.last_file.is_file() else None

    def load_model(self, checkpoint: str | None = None):
        """(the run's model in eval mode, its card): architecture from the card, weights from the
        checkpoint, loaded with `weights_only=True`."""
        card = self.card()
        file = self.file(checkpoint or card.checkpoint)
        if not file.is_file():
            raise NotFound(f"{file}: no checkpoint yet (the run has not finished an epoch)")
        model = card.build()
        try:
            model.load_state_dict(load_torch(file))
        except Exception as err:  # not a state_dict, torn, or for another architecture
            raise BadCheckpoint(f"{file}: not a usable checkpoint for {card.backbone} "
                                f"({type(err).__name__}: {str(err)[:200]})") from None
        return model.eval(), card

    # ------------------------------------------------------------ the log

    def log_tail(self, lines: int = 20, max_bytes: int = 65536) -> str:
        """The last `lines` non-empty lines of the training log (reads at most its last `max_bytes`)."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
                text = f.read().decode(errors="replace").replace("\r", "\n")
        except OSError:
            return ""
        return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])

    @staticmethod
    def _json(path: Path) -> Any:
        try:
            return read_json(path)
        except FileNotFoundError:
            raise NotFound(f"{path} does not exist") from None
        except ValueError as err:
            raise BadCheckpoint(f"{path}: not valid JSON ({err})") from None


def _sha1(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(data).hexdigest()


def card_for(config: dict, classes: list[str], prep: Preprocessing) -> ModelCard:
    """A new run's card, before evaluation."""
    return ModelCard(config["backbone"], config["head"], config["freeze"], list(classes), prep, dict(config),
                     float(config.get("dropout", 0.2)))


__all__ = ["EXPORT_FORMAT", "ModelCard", "RunDir", "card_for", "data_root"]
