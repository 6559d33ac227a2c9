"""The feature cache (frozen backbone) and the decoded-image cache (fine-tuning)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from core.data import catalog
from core.evaluate.metrics import predict_probs
from core.models import backbones
from core.models.features import FeatureCache
from core.models.preprocess import eval_transform, tensor_transforms
from core.runs.folder import RunDir
from core.runs.store import RunStore
from core.train.config import TrainConfig
from core.train.decoded import DecodedDataset, cache_dir
from core.train.session import fit


@pytest.fixture(scope="module")
def lite0():
    return backbones.create("efficientnet_lite0", 2, freeze="head")


def _rows(root, n=6):
    split = catalog.split(catalog.scan(root))
    rows = split.manifest.head(n)
    return [root / p for p in rows["path"]], rows["sha1"].tolist()


def test_cached_and_plain_paths_agree_on_held_out_images(trained_run):
    runs, run_id, _ = trained_run
    model, card = RunDir(runs / run_id).load_model()
    manifest = catalog.load_manifest(runs / run_id / "manifest.csv").manifest
    test = manifest[manifest["split"] == "test"]
    root = card.data_root
    paths = [f"{root}/{p}" for p in test["path"]]
    prep = card.preprocessing
    (cached,), _ = predict_probs(model, prep, paths, test["sha1"].tolist(), use_cache=True)
    (plain,), _ = predict_probs(model, prep, paths, test["sha1"].tolist(), use_cache=False)
    assert (cached.argmax(1) == plain.argmax(1)).all()
    assert np.abs(cached - plain).max() < 1e-4


def test_cache_is_reused_and_grows_only_by_new_images(tmp_path, elpv_small, lite0):
    paths, shas = _rows(elpv_small, 6)
    prep = backbones.preprocessing_for("efficientnet_lite0")
    first = FeatureCache(lite0.backbone, prep, tmp_path)
    a, ok = first.features(paths[:4], shas[:4], "eval", eval_transform(prep), log=None)
    assert ok.all() and first.computed == 4
    second = FeatureCache(lite0.backbone, prep, tmp_path)
    b, _ = second.features(paths, shas, "eval", eval_transform(prep), log=None)
    assert second.computed == 2  # only the two new images
    assert np.array_equal(a, b[:4])


def test_cache_is_invalidated_by_changed_content_preprocessing_or_weights(tmp_path, elpv_small, lite0):
    paths, shas = _rows(elpv_small, 3)
    prep = backbones.preprocessing_for("efficientnet_lite0")
    FeatureCache(lite0.backbone, prep, tmp_path).features(paths, shas, "eval", eval_transform(prep), log=None)
    changed = tmp_path / "changed.png"
    shutil.copy(paths[0], changed)
    from PIL import Image

    Image.open(changed).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(changed)
    import hashlib

    changed_sha = hashlib.sha1(changed.read_bytes()).hexdigest()
    assert changed_sha != shas[0]
    same = FeatureCache(lite0.backbone, prep, tmp_path)
    same.features([changed, *paths[1:]], [changed_sha, *shas[1:]], "eval", eval_transform(prep), log=None)
    assert same.computed == 1
    other_prep = backbones.preprocessing_for("efficientnet_lite0", input_size=160)
    resized = FeatureCache(lite0.backbone, other_prep, tmp_path)
    assert resized.key != same.key
    resized.features(paths, shas, "eval", eval_transform(other_prep), log=None)
    assert resized.computed == 3
    other_weights = backbones.create("efficientnet_lite0", 2, pretrained=False)
    assert FeatureCache(other_weights.backbone, prep, tmp_path).key != same.key


def test_a_corrupt_cache_file_is_rebuilt_not_trusted(tmp_path, elpv_small, lite0):
    paths, shas = _rows(elpv_small, 3)
    prep = backbones.preprocessing_for("efficientnet_lite0")
    cache = FeatureCache(lite0.backbone, prep, tmp_path)
    good, _ = cache.features(paths, shas, "eval", eval_transform(prep), log=None)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"{cache.path.name}{suffix}").unlink(missing_ok=True)
    cache.path.write_bytes(b"garbage" * 1000)
    rebuilt = FeatureCache(lite0.backbone, prep, tmp_path)
    again, ok = rebuilt.features(paths, shas, "eval", eval_transform(prep), log=None)
    assert ok.all() and rebuilt.computed == 3
    assert np.allclose(again, good, atol=1e-5)
    # a torn row (wrong length) is recomputed too
    import sqlite3

    with sqlite3.connect(rebuilt.path) as db:
        db.execute("UPDATE features SET vec = ? WHERE sha1 = ?", (b"\x00" * 12, shas[0]))
    third = FeatureCache(lite0.backbone, prep, tmp_path)
    fixed, _ = third.features(paths, shas, "eval", eval_transform(prep), log=None)
    assert third.computed == 1 and np.allclose(fixed, good, atol=1e-5)


def test_second_run_on_the_same_data_starts_from_the_cache(tmp_path, elpv_small, capsys):
    config = dict(data=str(elpv_small), epochs=2, lr=1e-2)
    fit(TrainConfig(**config), tmp_path / "runs", progress=False)
    capsys.readouterr()
    run_id = fit(TrainConfig(**config, head="mlp"), tmp_path / "runs", progress=False)
    out = capsys.readouterr().out
    assert "features eval" not in out  # nothing had to go through the backbone again
    assert RunStore(tmp_path / "runs").get(run_id)["status"] == "completed"


def test_decoded_cache_matches_the_eval_transform(tmp_path, elpv_small):
    prep = backbones.preprocessing_for("efficientnet_lite0", input_size=96)
    paths, shas = _rows(elpv_small, 3)
    train_tf, eval_tf = tensor_transforms(prep, "light")
    dataset = DecodedDataset(paths, shas, [0, 1, 0], prep, eval_tf)
    x, label = dataset[1]
    assert (cache_dir(prep) / f"{shas[1]}.npy").is_file()
    from core.data.images import load_rgb

    reference = eval_transform(prep)(load_rgb(paths[1]))
    assert x.shape == reference.shape and label == 1
    assert (x - reference).abs().max() < 0.02  # uint8 rounding of the resized square only
    again, _ = dataset[1]
    assert torch.equal(again, x)
    augmented, _ = DecodedDataset(paths, shas, [0, 1, 0], prep, train_tf)[1]
    assert augmented.shape == x.shape


@pytest.mark.slow
def test_partial_fine_tuning_trains_the_last_stages(tmp_path, elpv_small):
    run_id = fit(TrainConfig(data=str(elpv_small), freeze="partial", epochs=1, input_size=96, batch_size=16),
                 tmp_path / "runs", progress=False)
    store = RunStore(tmp_path / "runs")
    assert store.get(run_id)["status"] == "completed"
    base = backbones.create("efficientnet_lite0", 4, freeze="partial")
    trained, _ = RunDir(store.run_dir(run_id)).load_model()
    assert not torch.equal(base.backbone.blocks[6][0].conv_pw.weight, trained.backbone.blocks[6][0].conv_pw.weight)
    assert torch.equal(base.backbone.conv_stem.weight, trained.backbone.conv_stem.weight)
