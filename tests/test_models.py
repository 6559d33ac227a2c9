"""The backbone registry: offline Lite weights, torchvision weights from a file or the hub
cache (and the helpful error when missing), heads and freeze modes."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from core.models import backbones
from core.models.preprocess import eval_transform


def test_lite0_weights_recognise_real_photos():
    """The PyPI weights, renamed into timm's layout, give ImageNet's answers on real photos."""
    import timm

    from core.base.storage import load_torch

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    net.load_state_dict(backbones.convert_lite_state_dict(load_torch(backbones.lite_weights_file(0)), 0))
    net.eval()
    transform = eval_transform(backbones.preprocessing_for("efficientnet_lite0"))
    china, flower = load_sample_images().images
    with torch.no_grad():
        top = net(torch.stack([transform(Image.fromarray(china)), transform(Image.fromarray(flower))])).argmax(1)
    assert top.tolist() == [698, 985]  # ImageNet 'palace' and 'daisy'


def test_freeze_modes_train_more_and_more():
    trainable = {}
    for mode in backbones.FREEZE_MODES:
        m = backbones.create("efficientnet_lite0", 3, freeze=mode)
        trainable[mode] = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert trainable["head"] == 1280 * 3 + 3
    assert trainable["head"] < trainable["partial"] < trainable["full"]


def test_frozen_batchnorm_stays_in_eval_mode():
    m = backbones.create("efficientnet_lite0", 2, freeze="partial").train()
    assert not m.backbone.bn1.training  # stem: frozen
    assert m.backbone.blocks[6][0].conv_pw.training  # last stage: trains
    assert not m.backbone.blocks[6][0].bn1.training  # ... with the pretrained BatchNorm statistics
    assert m.backbone.blocks[6][0].bn1.weight.requires_grad  # ... and a trained scale and shift
    before = m.backbone.blocks[6][0].bn1.running_mean.clone()
    m(torch.rand(4, 3, 64, 64))
    assert torch.equal(m.backbone.blocks[6][0].bn1.running_mean, before)
    m = backbones.create("efficientnet_lite0", 2, freeze="full").train()
    assert m.backbone.blocks[6][0].bn1.training and m.backbone.bn1.training  # full: the network's own statistics
    m = backbones.create("efficientnet_lite0", 2, freeze="head").train()
    assert not any(mod.training for mod in m.backbone.modules())
    assert m.head.training


def test_mlp_head_is_the_boat_tutorials():
    m = backbones.create("efficientnet_lite0", 5, head="mlp", pretrained=False)
    kinds = [type(layer).__name__ for layer in m.head]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear"]
    assert m(torch.zeros(2, 3, 224, 224)).shape == (2, 5)


def test_missing_torchvision_weights_say_which_file_goes_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(backbones.WeightsNotFound) as err:
        backbones.create("resnet18", 3)
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in str(err.value)
    assert "--weights" in str(err.value)


def test_torchvision_weights_from_the_hub_cache_and_from_a_file(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    reference = torchvision.models.resnet18(weights=None)
    target = backbones.torchvision_weights_path(backbones.get_spec("resnet18"))
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    from_cache = backbones.create("resnet18", 3)
    assert torch.equal(from_cache.backbone.conv1.weight, reference.conv1.weight)
    assert backbones.weights_available("resnet18")
    other = torchvision.models.resnet18(weights=None)
    torch.save(other.state_dict(), tmp_path / "mine.pth")
    from_file = backbones.create("resnet18", 3, weights=str(tmp_path / "mine.pth"))
    assert torch.equal(from_file.backbone.conv1.weight, other.conv1.weight)
    assert from_file(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


def test_a_weights_file_that_is_not_a_state_dict_is_refused(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(backbones.WeightsNotFound, match="bad.pth"):
        backbones.create("resnet18", 3, weights=str(tmp_path / "bad.pth"))


def test_any_timm_model_by_name_with_a_local_weights_file(tmp_path):
    import timm

    source = timm.create_model("resnet10t", pretrained=False)
    torch.save(source.state_dict(), tmp_path / "r10t.pth")
    m = backbones.create("timm/resnet10t", 4, weights=str(tmp_path / "r10t.pth"))
    assert torch.equal(m.backbone.conv1[0].weight, source.conv1[0].weight)
    assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 4)
    cfg = timm.models.get_pretrained_cfg("resnet10t")
    assert backbones.get_spec("timm/resnet10t").preprocessing.input_size == cfg.input_size[-1]
