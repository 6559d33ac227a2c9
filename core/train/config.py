"""A training run's settings (`TrainConfig`), the values each may take and the words people read for them.
No heavy imports: the CLI builds its flags from here."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from core.base.errors import BadInput
from core.models.choices import (
    AUG_LEVELS,
    DEFAULT_BACKBONE,
    FEATURES,
    FREEZE_MODES,
    FREEZE_WORDS,
    HEADS,
    backbone_title,
)

HEAD_FITS = ("converge", "loop")  # converge: a frozen linear head also fitted to convergence (models.probe)
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "none")
CLASS_WEIGHTS = ("auto", "sqrt", "balanced", "off")

# A run's settings as the Runs page's "what differs" names them (the config keys stay for engineers).
SETTING_WORDS = {
    "data": "dataset folder", "backbone": "model", "weights": "weights file", "head": "last layer",
    "freeze": "what trains", "epochs": "epochs", "batch_size": "photos per step", "lr": "learning rate",
    "backbone_lr_mult": "network's share of the learning rate", "optimizer": "optimiser",
    "weight_decay": "weight decay", "momentum": "momentum", "schedule": "learning-rate schedule",
    "label_smoothing": "label smoothing", "class_weights": "class weights", "patience": "early-stopping patience",
    "aug": "augmentation", "aug_views": "augmented views per photo", "dropout": "dropout", "seed": "split seed",
    "name": "name", "fractions": "train / validation / test shares", "min_per_class": "minimum photos per class",
    "input_size": "photo size (px)", "cache": "cache", "workers": "loader workers",
    "tta": "test-time views", "features": "what the last layer sees", "head_fit": "last layer fitting",
    "time_limit": "time limit (s)"}


def setting_words(key: str, value) -> tuple[str, str]:
    """(what a run setting is called, its value) as people read them: 'what trains: head only',
    'model: Lite0', 'learning rate: default' (None means the default chosen for the run)."""
    if value is None:
        shown = "default"
    elif key == "freeze":
        shown = FREEZE_WORDS.get(value, str(value))
    elif key == "backbone":
        shown = backbone_title(value)
    else:
        shown = str(value)
    return SETTING_WORDS.get(key, key), shown


def default_features(backbone: str, freeze: str) -> str:
    """What the head sees by default: for a frozen EfficientNet-Lite its earlier blocks pooled beside the
    last (`pooled`: the same reading time, on ELPV 0.793 test accuracy against 0.768, on Fashion-MNIST
    0.883 against 0.877; README), else the backbone's own pooled output (`plain`)."""
    from core.models.backbones import rich_view_available

    try:
        lite = rich_view_available(backbone)
    except BadInput:  # an unknown backbone: its own error comes from create()
        lite = False
    return "pooled" if freeze == "head" and lite else "plain"


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as the run's config.json)."""

    data: str
    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    head: str = "linear"
    freeze: str = "head"
    epochs: int = 10
    batch_size: int = 32
    lr: float | None = None  # default: 1e-2 for a frozen backbone's head, 1e-3 when fine-tuning
    backbone_lr_mult: float = 0.1  # the backbone trains at lr × this when it trains
    optimizer: str = "adamw"
    weight_decay: float | None = None  # default: 0.01 (AdamW) / 1e-4 (SGD)
    momentum: float = 0.9
    schedule: str = "cosine"
    label_smoothing: float = 0.1
    class_weights: str = "auto"  # auto: sqrt weights when the largest class is ≥ 3× the smallest
    patience: int = 5
    aug: str = "auto"  # auto: none for a cached frozen backbone, light when fine-tuning
    aug_views: int = 2  # augmented views per training image cached in head mode (when aug != none)
    dropout: float = 0.2
    seed: int = 0
    name: str | None = None
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    min_per_class: int = 5
    input_size: int | None = None  # override the backbone's input resolution
    cache: bool = True  # feature cache (head) or decoded-image cache (partial/full); False: plain loop
    workers: int | None = None
    tta: int = 0  # evaluate with N TTA views as well
    features: str = "auto"  # auto: pooled for a frozen EfficientNet-Lite, else plain (FEATURES, resolved here)
    head_fit: str = "converge"  # converge: a frozen linear head also fitted to convergence, kept if better on val
    time_limit: float | None = None  # seconds: the best model within this time, in stages (core/stages.py)

    def __post_init__(self) -> None:
        self.data = str(self.data)
        self.fractions = tuple(float(f) for f in self.fractions)
        choices = {"freeze": FREEZE_MODES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES, "head": HEADS,
                   "class_weights": CLASS_WEIGHTS, "aug": ("auto", *AUG_LEVELS), "head_fit": HEAD_FITS,
                   "features": ("auto", *FEATURES)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise BadInput(f"{name} must be one of {', '.join(allowed)} (got {getattr(self, name)!r})")
        ranges = {"epochs": (1, 10_000), "batch_size": (1, 65_536), "patience": (1, 10_000), "aug_views": (1, 64),
                  "min_per_class": (1, 10**9), "tta": (0, 64), "label_smoothing": (0.0, 0.99),
                  "dropout": (0.0, 0.99), "momentum": (0.0, 0.9999), "backbone_lr_mult": (0.0, 100.0)}
        if self.lr is not None:
            ranges["lr"] = (1e-9, 10.0)
        if self.weight_decay is not None:
            ranges["weight_decay"] = (0.0, 10.0)
        if self.input_size is not None:
            ranges["input_size"] = (32, 1024)
        if self.time_limit is not None:
            ranges["time_limit"] = (30, 7 * 24 * 3600)
        if self.workers is not None:
            ranges["workers"] = (0, 64)
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise BadInput(f"{name.replace('_', '-')} must be between {low} and {high} (got {value!r})")
        if len(self.fractions) != 3 or min(self.fractions) < 0 or abs(sum(self.fractions) - 1) > 1e-6 \
                or self.fractions[0] <= 0:
            raise BadInput(f"fractions must be three shares (train > 0) that add up to 1 (got {self.fractions})")
        if self.features == "auto":
            self.features = default_features(self.backbone, self.freeze)
        from core.models.backbones import rich_view_available

        if self.features != "plain" and (self.freeze != "head" or not rich_view_available(self.backbone)):
            raise BadInput(f"features {self.features} need a frozen backbone (freeze head) and an EfficientNet-Lite "
                           f"model: they pool known blocks (got {self.backbone}, freeze {self.freeze})")

    def resolved(self) -> "TrainConfig":
        """The same config with every path absolute (`~` expanded), for a process started elsewhere."""
        from core.runs.folder import data_root

        values = asdict(self)
        values["data"] = str(data_root(self.data))
        if self.weights:
            values["weights"] = str(data_root(self.weights))
        return TrainConfig(**values)

    @property
    def augmentation(self) -> str:
        if self.aug != "auto":
            return self.aug
        return "none" if self.uses_cache else "light"

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return 1e-2 if self.freeze == "head" else 1e-3

    @property
    def uses_cache(self) -> bool:
        return self.freeze == "head" and self.cache

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
