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


def backbone_title(name: str) -> str:
    """'efficientnet_lite0' → 'Lite0'; 'timm/resnet18' → 'resnet18'; others as they are."""
    name = str(name)
    if name.startswith("efficientnet_lite"):
        return "Lite" + name[len("efficientnet_lite"):]
    return name.split("/")[-1]
