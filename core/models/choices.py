"""What a model can be asked for (backbone, what trains, the head, what it sees, augmentation) and
how those values read to people. No heavy imports, so the CLI's `--help` answers at once."""

DEFAULT_BACKBONE = "efficientnet_lite0"
FREEZE_MODES = ("head", "partial", "full")
HEADS = ("linear", "mlp")
FEATURES = ("plain", "pooled", "rich")  # what a frozen backbone gives the head (backbones.create)
AUG_LEVELS = ("none", "light", "standard", "strong")

FREEZE_WORDS = {"head": "head only", "partial": "last stages", "full": "whole network"}


def backbone_title(name: str) -> str:
    """'efficientnet_lite0' → 'Lite0'; 'timm/resnet18' → 'resnet18'; others as they are."""
    name = str(name)
    if name.startswith("efficientnet_lite"):
        return "Lite" + name[len("efficientnet_lite"):]
    return name.split("/")[-1]
