"""The option values shared by the library, the CLI and the pages (no heavy imports here, so
`python -m core --help` answers at once)."""

FREEZE_MODES = ("head", "partial", "full")
HEADS = ("linear", "mlp")
AUG_LEVELS = ("none", "light", "standard", "strong")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "none")
CLASS_WEIGHTS = ("auto", "sqrt", "balanced", "off")
DEFAULT_BACKBONE = "efficientnet_lite0"
