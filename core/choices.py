"""The option values shared by the library, the CLI and the pages (no heavy imports here, so
`python -m core --help` answers at once)."""

FREEZE_MODES = ("head", "partial", "full")
HEADS = ("linear", "mlp")
FEATURES = ("plain", "pooled", "rich")  # what a frozen backbone gives the head (core/models.py: create)
HEAD_FITS = ("converge", "loop")  # converge: a frozen linear head also fitted to convergence (core/probe.py)
AUG_LEVELS = ("none", "light", "standard", "strong")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "none")
CLASS_WEIGHTS = ("auto", "sqrt", "balanced", "off")
DEFAULT_BACKBONE = "efficientnet_lite0"

# How the choices read to people (run names, tables).
FREEZE_WORDS = {"head": "head only", "partial": "last stages", "full": "whole network"}


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


def backbone_title(name: str) -> str:
    """'efficientnet_lite0' → 'Lite0'; 'timm/resnet18' → 'resnet18'; others as they are."""
    name = str(name)
    if name.startswith("efficientnet_lite"):
        return "Lite" + name[len("efficientnet_lite"):]
    return name.split("/")[-1]
