"""A training run's settings (`TrainConfig`) and each one's description, written once: what people
call it, one plain sentence of help, the values it may take and how its value reads. The command
line's `train` flags, the Train page's widgets, the Runs page's "what differs" and the README's
settings table (`python -m core.train.config`) all come from here. No heavy imports: the CLI builds
its flags from this module, so `graft --help` answers at once."""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from functools import cache
from typing import Any

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


@dataclass(frozen=True, eq=False)
class Setting:
    """One TrainConfig field as people meet it. `label`: what it is called (lower case, as the Runs page
    names it; `title` for a widget); `help`: one plain sentence; `choices`, and `options` saying each in
    words (the Train page's drop-downs, `--help`); `shows`: how a value reads (a mapping or a function;
    else as it is), `unset`: how None reads; `between`: the range it must lie in. `name`, `default`,
    `kind`, `count` and `flag` come from the field (`settings()`), `flag` and `metavar` given where the
    command line spells them otherwise."""

    label: str
    help: str
    choices: tuple[str, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict)
    shows: Mapping | Callable[[Any], str] | None = None
    unset: str = "default"
    between: tuple[float, float] | None = None
    flag: str = ""
    metavar: str | tuple[str, ...] | None = None
    name: str = ""
    default: Any = None
    required: bool = False
    kind: type = str
    count: int | None = None  # a fixed number of values (fractions: 3)
    text: bool = False  # the flag takes text that TrainConfig reads into the field's type (`--budget 10m`)

    @property
    def title(self) -> str:
        """The label as a widget's caption: 'what trains' → 'What trains'."""
        return self.label[:1].upper() + self.label[1:]

    def read(self, value) -> str:
        """A value as people read it: 'head only', 'Lite0', 'automatic'."""
        if value is None:
            return self.unset
        try:
            if isinstance(self.shows, Mapping):
                return str(self.shows.get(value, value))
            if callable(self.shows):
                return self.shows(value)
        except (TypeError, ValueError):  # an odd value in an older run's config reads as it is
            pass
        return str(value)

    def option(self, choice: str) -> str:
        """A choice in words, as the Train page's drop-downs show it."""
        return self.options.get(choice, choice)

    @property
    def usage(self) -> str:
        """The flag as `graft train --help` writes it: `--freeze {head,partial,full}`, `--epochs N`."""
        if self.required or self.kind is bool:
            return self.flag
        if self.choices:
            return f"{self.flag} {{{','.join(self.choices)}}}"
        return " ".join([self.flag, *([self.metavar] if isinstance(self.metavar, str) else self.metavar)])

    @property
    def typed_default(self) -> str:
        """The default as typed on the command line (`head`, `0.7 0.15 0.15`), else in words (`automatic`, `on`)."""
        if self.required or self.default is None or self.kind is bool:
            return self.read(self.default)
        return " ".join(map(str, self.default)) if self.count else str(self.default)


def _about(default: Any = MISSING, **description) -> Any:
    """A TrainConfig field with its description (`Setting`) in the field's metadata."""
    return field(default=default, metadata={"setting": Setting(**description)})


def _minutes(seconds) -> str:
    return f"{float(seconds) / 60:g} min"


def parse_duration(value, flag: str = "--budget") -> float:
    """A duration as typed → seconds: `90`, `90s` and `90 sec` are seconds, `10m` and `1.5 min` minutes;
    a number is seconds. Anything else is refused in one line (BadInput)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|secs|seconds?|m|min|mins|minutes?)?\s*", str(value), re.I)
    if not found:
        raise BadInput(f"{flag} {value!r}: not a duration; give seconds (90 or 90s) or minutes (10m)")
    minutes = (found.group(2) or "s").lower().startswith("m")
    return float(found.group(1)) * (60.0 if minutes else 1.0)


def _shares(fractions) -> str:
    return " / ".join(f"{float(f):.0%}" for f in fractions)


ON_OFF = {True: "on", False: "off"}


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
    """Everything that defines a training run (saved as the run's config.json); each field's description
    is in its metadata (`settings()`)."""

    data: str = _about(
        label="dataset folder", unset="required",
        help="The folder of photos: one subfolder a class (`ROOT/<class>/*.jpg`), or `train`, `val` and `test` "
             "folders, each with one subfolder a class.")
    backbone: str = _about(
        DEFAULT_BACKBONE, label="model", shows=backbone_title, metavar="NAME",
        help="The ImageNet-pretrained network that reads the photos: larger ones are a little more accurate and "
             "slower, and Lite0, the default, is the fast one.")
    weights: str | None = _about(
        None, label="weights file", unset="the model's own", metavar="FILE",
        help="A file of pretrained weights for the model (a PyTorch state_dict) instead of the ones that come "
             "with it.")
    head: str = _about(
        "linear", label="last layer", choices=HEADS,
        options={"linear": "one layer from the network's features to the classes",
                 "mlp": "two layers with 256 units between them"},
        help="The new layer that learns your classes from what the network sees.")
    freeze: str = _about(
        "head", label="what trains", choices=FREEZE_MODES, shows=FREEZE_WORDS,
        options={"head": "only the last layer (fastest)", "partial": "the last stages too (slower, often better)",
                 "full": "the whole network (slowest)"},
        help="How much of the network learns: with only the last layer the network reads each photo once and "
             "training then takes seconds; training more of it adapts it to your photos but takes minutes to "
             "hours on a CPU.")
    epochs: int = _about(
        10, label="epochs", between=(1, 10_000), metavar="N",
        help="Passes over the training photos; training stops earlier when the validation loss stops improving.")
    batch_size: int = _about(
        32, label="photos per step", between=(1, 65_536), metavar="N",
        help="How many photos each training step learns from: 32 suits a CPU; lower it if memory runs out.")
    lr: float | None = _about(
        None, label="learning rate", unset="automatic", between=(1e-9, 10.0), metavar="X",
        help="How big each training step is; automatic: 0.01 when only the last layer trains, else 0.001.")
    backbone_lr_mult: float = _about(
        0.1, label="network's share of the learning rate", between=(0.0, 100.0), metavar="X",
        help="When the network trains too, its learning rate is the last layer's times this.")
    optimizer: str = _about(
        "adamw", label="optimiser", choices=OPTIMIZERS,
        options={"adamw": "AdamW", "sgd": "SGD with momentum"},
        help="The rule that turns each step's errors into changes of the weights.")
    weight_decay: float | None = _about(
        None, label="weight decay", unset="automatic", between=(0.0, 10.0), metavar="X",
        help="How strongly the weights are pulled towards zero at each step; automatic: 0.01 with AdamW, "
             "0.0001 with SGD.")
    momentum: float = _about(
        0.9, label="momentum", between=(0.0, 0.9999), metavar="X",
        help="With SGD, the share of the previous step carried into the next.")
    schedule: str = _about(
        "cosine", label="learning-rate schedule", choices=SCHEDULES,
        options={"cosine": "falls smoothly to a hundredth over the epochs", "onecycle": "rises, then falls",
                 "none": "stays the same"},
        help="How the learning rate changes over the training.")
    label_smoothing: float = _about(
        0.1, label="label smoothing", between=(0.0, 0.99), metavar="X",
        help="The share of certainty taken from the right answer and spread over the other classes while "
             "training, so the model is less over-confident.")
    class_weights: str = _about(
        "auto", label="class weights", choices=CLASS_WEIGHTS,
        options={"auto": "square-root weights when the largest class has 3 times the photos of the smallest, "
                         "else none",
                 "sqrt": "square-root weights: rarer classes count more", "balanced": "every class counts the same",
                 "off": "every photo counts the same"},
        help="Give rare classes more weight so the model does not ignore them.")
    patience: int = _about(
        5, label="early-stopping patience", between=(1, 10_000), metavar="N",
        help="Training stops after this many epochs without a lower validation loss; the best epoch's model "
             "is kept.")
    aug: str = _about(
        "auto", label="augmentation", choices=("auto", *AUG_LEVELS),
        options={"auto": "none when only the last layer trains on cached features, else light",
                 "none": "the photos as they are", "light": "crops and flips", "standard": "larger crops, flips and colour changes",
                 "strong": "the largest crops, flips, colour changes and more"},
        help="Varied copies of the training photos (crops, flips, colour), which help small datasets.")
    aug_views: int = _about(
        2, label="augmented views per photo", between=(1, 64), metavar="K",
        help="When only the last layer trains with augmentation, how many varied copies of each training photo "
             "are read and cached.")
    dropout: float = _about(
        0.2, label="dropout", between=(0.0, 0.99), metavar="X",
        help="The share of a linear last layer's inputs left out at random at each step, so it does not lean "
             "on a few.")
    seed: int = _about(
        0, label="random seed", metavar="N",
        help="Fixes the random choices (the split, the order, the augmentation) so a run can be repeated.")
    name: str | None = _about(
        None, label="name", unset="automatic",
        help="A name for the run; by default the model, what trains, the epochs and the date.")
    fractions: tuple[float, float, float] = _about(
        (0.7, 0.15, 0.15), label="train / validation / test shares", shows=_shares,
        metavar=("TRAIN", "VAL", "TEST"),
        help="How a folder without train, val and test subfolders is split: the shares of photos for training, "
             "validation and test.")
    min_per_class: int = _about(
        5, label="minimum photos per class", between=(1, 10**9), metavar="N",
        help="Classes with fewer photos than this are left out.")
    input_size: int | None = _about(
        None, label="photo size (px)", unset="the model's own", between=(32, 1024), metavar="PX",
        help="The size in pixels each photo is resized to before the network reads it.")
    cache: bool = _about(
        True, label="cache", shows=ON_OFF,
        help="Keep what is read from each photo (its features when only the last layer trains, else the "
             "decoded pixels) so later epochs skip the reading; off: the plain loop.")
    workers: int | None = _about(
        None, label="loader workers", unset="automatic", between=(0, 64), metavar="N",
        help="Processes that decode photos beside the training; automatic: the cores less one, at most 4.")
    tta: int = _about(
        0, label="test-time views", between=(0, 64), metavar="N",
        help="Also score the test photos with their predictions averaged over this many varied views "
             "(0 or 1: the photo as it is).")
    features: str = _about(
        "auto", label="what the last layer sees", choices=("auto", *FEATURES),
        options={"auto": "the best view that costs one reading",
                 "plain": "the network's summary of each photo",
                 "pooled": "the summary and earlier layers' patterns (same time)",
                 "rich": "earlier layers too, each photo in 8 orientations (about 5× the reading time)"},
        help="What the last layer learns from: automatic gives it, with only the last layer training and an "
             "EfficientNet-Lite model, the earlier layers' patterns beside the network's summary (on the solar-cell sample right on 79 photos in 100 against "
             "77), else the summary; the 8 orientations suit photos with no up or down (cells, parts, tissue, "
             "textures); pooled and rich need only the last layer training and an EfficientNet-Lite model.")
    head_fit: str = _about(
        "converge", label="last layer fitting", choices=HEAD_FITS,
        options={"converge": "also fitted to convergence, kept when better on validation",
                 "loop": "the training loop's only"},
        help="When only a linear last layer trains, it is also fitted to convergence on the cached features "
             "(L-BFGS, its strength chosen on validation) and kept when it beats the training loop's on the "
             "validation photos.")
    time_limit: float | None = _about(
        None, label="time limit", unset="none", shows=_minutes, between=(30, 7 * 24 * 3600), metavar="SECONDS",
        help="The best model within this time, in stages: the last layer first (a usable model within a "
             "minute), then a richer view of the photos when it fits, then the network's last stages "
             "fine-tuned on smaller photos, then at full size; the best on the validation photos is kept at "
             "every moment, and the time includes scoring it.")
    budget: float | None = _about(
        None, label="budget", unset="none", shows=_minutes, between=(30, 7 * 24 * 3600), metavar="DURATION",
        text=True,
        help="Find the best model within this time (90, 90s or 10m): every model whose weights are here is tried "
             "with its last layer on the photos read once, at two photo sizes and two views, cheapest gain first, "
             "then the best is fine-tuned with the time left; chosen on the validation photos only, the cheaper "
             "model kept when the better one's lead is within noise, and the time includes scoring it "
             "(leaderboard.json).")

    def __post_init__(self) -> None:
        self.data = str(self.data)
        if self.budget is not None:
            self.budget = parse_duration(self.budget)
            if self.time_limit is not None and self.time_limit != self.budget:
                raise BadInput("give --budget or --time-limit, not both: a budget spends its time in stages too")
        self.fractions = tuple(float(f) for f in self.fractions)
        described = settings()
        for s in described:
            if s.choices and getattr(self, s.name) not in s.choices:
                raise BadInput(f"{s.name} must be one of {', '.join(s.choices)} (got {getattr(self, s.name)!r})")
        for s in described:
            value = getattr(self, s.name)
            if s.between is None or (value is None and s.default is None):
                continue
            low, high = s.between
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise BadInput(f"{s.name.replace('_', '-')} must be between {low} and {high} (got {value!r})")
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


_KINDS = {"str": str, "int": int, "float": float, "bool": bool}


def _described(f) -> Setting:
    """A field's description completed from the field: its name, default, value type and flag."""
    about = f.metadata["setting"]
    base = f.type.replace(" | None", "")
    count = base.count("float") if base.startswith("tuple[") else None
    kind = _KINDS["float" if count else base]
    required = f.default is MISSING
    default = None if required else f.default
    flag = about.flag or (f.name.upper() if required else
                          f"--no-{f.name}" if kind is bool and default else "--" + f.name.replace("_", "-"))
    metavar = about.metavar or (None if about.choices or kind is bool else f.name.upper())
    kind = str if about.text else kind
    return replace(about, name=f.name, default=default, required=required, kind=kind, count=count, flag=flag,
                   metavar=metavar)


@cache
def settings() -> tuple[Setting, ...]:
    """Every TrainConfig field's description, in field order."""
    return tuple(_described(f) for f in fields(TrainConfig))


def setting(name: str) -> Setting:
    """One field's description by its name (KeyError for a name TrainConfig does not have)."""
    found = {s.name: s for s in settings()}
    return found[name]


def setting_words(key: str, value) -> tuple[str, str]:
    """(what a run setting is called, its value) as people read them: 'what trains: head only',
    'model: Lite0', 'learning rate: automatic'. A key TrainConfig does not know (an older run's) reads
    as it is, its None as 'default'."""
    known = {s.name: s for s in settings()}
    if key not in known:
        return key, "default" if value is None else str(value)
    return known[key].label, known[key].read(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_table() -> str:
    """The README's table of `graft train` settings, one row a setting (tests/test_settings.py checks
    the README holds it; `python -m core.train.config` prints it)."""
    rows = ["| flag | what it is | default | choices |", "|---|---|---|---|"]
    for s in settings():
        in_words = s.required or s.default is None or s.kind is bool  # 'automatic', 'on'; else as typed
        default = s.typed_default if in_words else f"`{s.typed_default}`"
        choices = "; ".join(f"`{c}`" + (f": {s.options[c]}" if c in s.options else "") for c in s.choices)
        rows.append(f"| `{_cell(s.usage)}` | **{_cell(s.label)}**: {_cell(s.help)} | {_cell(default)} | "
                    f"{_cell(choices)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
