"""Accuracy per minute (issue 14) on real images and the real Lite0 weights: the head fitted to
convergence is kept only when it wins on validation and is what best.pt holds; ONNX Runtime's
features equal PyTorch's; the converged head reproduces scikit-learn's logistic regression, or its two
networks folded into the product's `mlp` head."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from core.data import catalog
from core.models import backbones
from core.models.features import FeatureCache, forward_images, onnx_backbone
from core.models.preprocess import eval_transform
from core.models.probe import clearly_better, fit_head
from core.runs.folder import RunDir
from core.train.head import with_head


@pytest.fixture(scope="module")
def lite0():
    return backbones.create("efficientnet_lite0", 2, freeze="head").backbone.eval()


def test_onnx_runtime_features_equal_pytorchs_on_real_photos(lite0, elpv_small):
    prep = backbones.preprocessing_for("efficientnet_lite0")
    paths = [elpv_small / p for p in catalog.scan(elpv_small).items["path"][::9]][:16]
    fast = onnx_backbone(lite0, prep.input_size, "test-lite0")
    assert fast is not None
    reference, ok = forward_images(lite0, paths, eval_transform(prep), log=None)
    onnx, ok_onnx = forward_images(fast, paths, eval_transform(prep), log=None)
    assert ok.all() and ok_onnx.all() and reference.shape == onnx.shape == (len(paths), 1280)
    assert np.abs(reference - onnx).max() <= 1e-4


def test_the_feature_cache_uses_onnx_runtime_on_the_cpu_unless_told_not_to(lite0, monkeypatch):
    prep = backbones.preprocessing_for("efficientnet_lite0")
    assert type(FeatureCache(lite0, prep)._runner()).__name__ == "OnnxBackbone"
    monkeypatch.setenv("GRAFT_FEATURES", "torch")
    assert FeatureCache(lite0, prep)._runner() is lite0


@pytest.fixture(scope="module")
def elpv_features(lite0, elpv_small):
    """(features, labels, train mask, val mask) of the ELPV subset through frozen Lite0."""
    prep = backbones.preprocessing_for("efficientnet_lite0")
    index = catalog.scan(elpv_small)
    feats, ok = FeatureCache(lite0, prep).features([elpv_small / p for p in index.items["path"]],
                                                   index.items["sha1"].tolist(), "eval", eval_transform(prep))
    labels = index.items["label"].astype("category").cat.codes.to_numpy()[ok]
    feats = feats[ok]
    return feats, labels, np.arange(len(feats)) % 3 != 0, np.arange(len(feats)) % 3 == 0


def test_the_converged_head_is_the_logistic_regression_folded_into_one_layer(elpv_features):
    feats, labels, train, val = elpv_features
    fitted = fit_head(feats[train], labels[train], feats[val], labels[val], 4, grid=(0.01, 0.1), mlp_grid=())
    assert fitted.kind == "linear" and fitted.penalty in (0.01, 0.1) and len(fitted.tried) == 2
    assert fitted.val_score == max(t["val_score"] for t in fitted.tried)
    scaler = StandardScaler().fit(feats[train])
    reference = LogisticRegression(C=fitted.penalty, max_iter=3000).fit(scaler.transform(feats[train]), labels[train])
    (weight, bias), = fitted.layers
    logits = feats[val] @ weight.T + bias
    expected = reference.predict_proba(scaler.transform(feats[val]))
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    assert np.abs(probs - expected).max() < 1e-4
    assert fitted.val_acc == pytest.approx(float((logits.argmax(1) == labels[val]).mean()))


def test_the_two_layer_head_is_two_scikit_learn_networks_folded_into_the_mlp_head(elpv_features):
    from sklearn.neural_network import MLPClassifier

    from core.models.probe import MLP_HIDDEN, MLP_MIN_PER_CLASS

    feats, labels, train, val = elpv_features
    fitted = fit_head(feats[train], labels[train], feats[val], labels[val], 4, grid=(0.01,), mlp_grid=(0.1,))
    kinds = {t["kind"]: t for t in fitted.tried}
    assert set(kinds) == {"linear", "mlp"}
    assert (fitted.kind == "mlp") == clearly_better(kinds["mlp"]["val_score"], kinds["linear"]["val_score"], int(val.sum()))
    mlp = fit_head(feats[train], labels[train], feats[val], labels[val], 4, grid=(), mlp_grid=(0.1,))
    assert mlp.kind == "mlp" and [w.shape for w, _ in mlp.layers] == [(2 * MLP_HIDDEN, 1280), (4, 2 * MLP_HIDDEN)]
    # the product's mlp head, loaded through with_head, gives the fitted logits
    model = backbones.create("efficientnet_lite0", 4, head="mlp", pretrained=False).eval()
    linear = backbones.create("efficientnet_lite0", 4, pretrained=False)
    model.load_state_dict(with_head(linear.state_dict(), mlp))
    x = torch.from_numpy(feats[val])
    with torch.inference_mode():
        assert np.abs(model.head(x).numpy() - mlp.logits(feats[val])).max() < 1e-3
    # each half is one of scikit-learn's networks (seeds 0 and 1) on standardised features, exactly
    scaler = StandardScaler().fit(feats[train])
    (w1, b1), (w2, b2) = mlp.layers
    intercepts = []
    for seed, part in enumerate((slice(0, MLP_HIDDEN), slice(MLP_HIDDEN, 2 * MLP_HIDDEN))):
        net = MLPClassifier((MLP_HIDDEN,), alpha=0.1, early_stopping=True, max_iter=300, random_state=seed).fit(
            scaler.transform(feats[train]), labels[train])
        hidden = np.maximum(feats[val] @ w1[part].T + b1[part], 0) @ (2 * w2[:, part]).T
        probs = torch.softmax(torch.from_numpy(hidden + net.intercepts_[1]), 1).numpy()
        assert np.abs(probs - net.predict_proba(scaler.transform(feats[val]))).max() < 1e-4
        intercepts.append(net.intercepts_[1])
    assert np.abs(b2 - np.mean(intercepts, 0)).max() < 1e-5  # their logits averaged
    # too few photos of a class for the network's early stopping: the logistic regression alone
    few = np.concatenate([np.flatnonzero(train & (labels == c))[:MLP_MIN_PER_CLASS - 1] for c in range(4)])
    small = fit_head(feats[few], labels[few], feats[val], labels[val], 4, grid=(0.01,), mlp_grid=(0.1,))
    assert small.kind == "linear" and {t["kind"] for t in small.tried} == {"linear"}


@pytest.mark.slow
def test_the_run_keeps_the_better_head_by_validation_and_best_pt_holds_it(trained_run):
    runs, run_id, _ = trained_run
    run = RunDir(runs / run_id)
    record = run.head_fit()
    assert record is not None and record["chosen"] in ("converged", "loop")
    same_kind = [t["val_score"] for t in record["tried"] if t["kind"] == record["kind"]]
    assert record["val_score"] == max(same_kind)  # C (alpha) by the mean of the two accuracies
    assert record["val_score"] == pytest.approx((record["val_acc"] + record["val_balanced"]) / 2)
    model, card = run.load_model()
    manifest = run.manifest().manifest
    val = manifest[manifest["split"] == "val"]
    assert (record["chosen"] == "converged") == clearly_better(record["val_score"], record["loop_val_score"], len(val))
    feats, ok = FeatureCache(model.backbone, card.preprocessing).features(
        [card.data_root / p for p in val["path"]], val["sha1"].tolist(), "eval", eval_transform(card.preprocessing))
    with torch.inference_mode():
        predicted = model.head.eval()(torch.from_numpy(feats[ok])).argmax(1).numpy()
    truth = val["label"].map({c: i for i, c in enumerate(card.labels)}).to_numpy()[ok]
    saved_acc = float((predicted == truth).mean())
    kept = record["val_acc"] if record["chosen"] == "converged" else record["loop_val_acc"]
    assert saved_acc == pytest.approx(kept, abs=1e-6)  # best.pt is the head that was kept
    assert card.head == (record["kind"] if record["chosen"] == "converged" else "linear")  # and its card says so


def test_the_deadline_step_stops_between_batches_and_before_an_epoch_that_would_not_fit():
    from core.train.steps import Deadline, EpochRow, LoopState, StopTraining

    state = LoopState(epochs=10)
    ahead = Deadline(time.monotonic() + 3600)
    ahead.on_batch(state, 0.5)  # an hour left: training goes on
    ahead.on_epoch(state, EpochRow(1, 0.5, 0.8, 0.6, 0.7, 1e-3, seconds=60.0))
    assert not ahead.reached and state.stop_reason is None
    ahead.on_epoch(state, EpochRow(2, 0.5, 0.8, 0.6, 0.7, 1e-3, seconds=7200.0))  # the next epoch would not fit
    assert ahead.reached and "would not finish in time" in state.stop_reason
    passed, state = Deadline(time.monotonic() - 1), LoopState(epochs=10)
    with pytest.raises(StopTraining):
        passed.on_batch(state, 0.5)
    assert passed.reached and state.stop_reason == "time limit reached"


@pytest.mark.slow
def test_a_time_limited_run_keeps_to_its_limit_and_saves_the_best_by_validation(elpv_small, tmp_path):
    from core.evaluate.metrics import predict_probs
    from core.runs.store import RunStore
    from core.train.config import TrainConfig
    from core.train.session import fit

    # how long it took is measured by bench/accuracy_per_minute.py, not asserted here
    run_id = fit(TrainConfig(data=str(elpv_small), time_limit=60.0), tmp_path / "runs", progress=False)
    store = RunStore.open(tmp_path / "runs")
    assert store.get(run_id)["status"] == "completed"
    epochs = store.epochs(run_id)
    assert epochs["epoch"].max() > 10  # stage 1's ten epochs, then at least one epoch of a later stage
    run = RunDir(tmp_path / "runs" / run_id)
    stages = run.stages()
    assert [s["stage"] for s in stages] == [1, 2, 3, 4] and sum(s.get("kept", False) for s in stages) == 1
    later = epochs[epochs["epoch"] > stages[0]["epochs"]]["val_acc"].tolist()  # the epochs of stages 2 to 4
    rich = stages[1]  # the richer view: its converged head is scored on validation too
    later += [] if rich.get("skipped") else [rich["best_val_acc"]]
    best_val = max([stages[0]["val_acc"], *later])
    for stage in stages[2:]:  # a fine-tuning stage records its own best epoch (as KeepBest compares) and its speed
        if stage.get("epochs"):
            own = epochs[epochs["epoch"].between(stage["first_epoch"], stage["first_epoch"] + stage["epochs"] - 1)]
            if own["val_acc"].isna().all():  # its one epoch was cut at the run's deadline, before validation
                assert stage["best_val_acc"] is None  # no figure (Results: "stopped before its validation")
                continue
            assert stage["best_val_acc"] == pytest.approx(own["val_acc"].max(), abs=1e-9)
            assert stage["trained_per_s"] > 0
    kept = next(s for s in stages if s["kept"])
    assert (kept["stage"] == 1) == (stages[0]["val_acc"] >= max(later, default=0.0))
    model, card = run.load_model()
    val = run.manifest().manifest.query("split == 'val'")
    (probs,), ok = predict_probs(model, card.preprocessing, [card.data_root / p for p in val["path"]],
                                 val["sha1"].tolist())
    truth = val["label"].map({c: i for i, c in enumerate(card.labels)}).to_numpy()
    assert float((probs.argmax(1) == truth)[ok].mean()) == pytest.approx(best_val, abs=1e-6)
    assert store.get(run_id)["best_val_acc"] == pytest.approx(best_val, abs=1e-6)
    # the Results page's engineer details say which stage's model is the one shown
    from helpers import open_page

    at = open_page("pages/results.py", str(elpv_small), str(tmp_path / "runs"), results_run=run_id,
                   results_section="Training")
    assert not at.exception, at.exception
    kept_lines = [m.value for m in at.markdown if "the model kept" in m.value]
    assert len(kept_lines) == 1 and kept_lines[0].startswith(f"Stage {kept['stage']}, {kept['words']}")


def test_the_rich_view_is_the_mean_over_8_orientations_of_earlier_and_last_stages(lite0):
    rich = backbones.create("efficientnet_lite0", 2, features="rich").backbone.eval()
    photo = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        plain = lite0(photo)
        turned = [rich.inner(v[None]) for v in rich.views(photo)]  # each orientation on its own
        together = rich(photo)
    assert together.shape == (1, 80 + 112 + 192 + 1280)
    assert torch.allclose(turned[0][:, -1280:], plain, atol=1e-5)  # the last stage's part is the plain features
    assert torch.allclose(together, torch.cat(turned).mean(0, keepdim=True), atol=1e-5)
    mirrored = photo.flip(3)
    with torch.inference_mode():
        assert torch.allclose(rich(mirrored), together, atol=1e-4)  # a mirrored photo reads the same
    with pytest.raises(Exception, match="frozen"):
        backbones.create("efficientnet_lite0", 2, freeze="partial", features="rich")
    from core.train.config import TrainConfig

    for backbone, freeze in (("resnet18", "head"), ("efficientnet_lite0", "partial")):
        with pytest.raises(Exception, match="EfficientNet-Lite"):  # refused before any run is created
            TrainConfig(data=".", backbone=backbone, freeze=freeze, features="rich")


@pytest.mark.slow
def test_a_rich_view_run_trains_predicts_exports_and_explains(tmp_path):
    from core.data.images import load_rgb
    from core.deploy.predict import Predictor
    from core.evaluate.metrics import predict_probs
    from core.train.config import TrainConfig
    from core.train.session import fit
    from core.trust.explain import Explainer

    from helpers import make_subset

    photos = make_subset(tmp_path / "data", 12)
    run_id = fit(TrainConfig(data=str(photos), features="rich", epochs=3), tmp_path / "runs", progress=False)
    run = RunDir(tmp_path / "runs" / run_id)
    model, card = run.load_model()
    assert card.features == "rich" and type(model.backbone).__name__ == "DihedralViews"
    test = run.manifest().manifest.query("split == 'test'")
    paths = [card.data_root / p for p in test["path"]]
    (probs,), ok = predict_probs(model, card.preprocessing, paths, test["sha1"].tolist())
    assert ok.all()
    predicted = Predictor.from_run(str(run.path)).predict([load_rgb(p) for p in paths[:3]], top_k=1)
    assert [r["top"][0][1] for r in predicted] == pytest.approx([float(p.max()) for p in probs[:3]], abs=1e-4)
    heat, target, _ = Explainer.from_run(str(run.path)).gradcam(load_rgb(paths[0]))
    assert heat.shape == load_rgb(paths[0]).size[::-1] and heat.max() > 0
    metrics = run.metrics()
    truth = test["label"].map({c: i for i, c in enumerate(card.labels)}).to_numpy()
    assert metrics["n"] == len(test)
    assert metrics["accuracy"] == pytest.approx(float((probs.argmax(1) == truth).mean()))  # the saved model's answers


def test_a_frozen_lite_run_reads_the_pooled_view_and_fine_tuning_starts_from_its_last_block(elpv_small, trained_run):
    from core.data.images import load_rgb
    from core.train.config import TrainConfig
    from core.trust import familiar

    assert TrainConfig(data=".").features == "pooled"  # the default for a frozen EfficientNet-Lite
    assert TrainConfig(data=".", freeze="partial").features == "plain"
    assert TrainConfig(data=".", backbone="resnet18").features == "plain"
    assert TrainConfig(data=".", features="plain").features == "plain"
    # the CLI run (the default) is pooled; its unfamiliar-photo detector uses the network's own features
    runs, run_id, _ = trained_run
    model, card = RunDir(runs / run_id).load_model()
    assert card.features == "pooled" and type(model.backbone).__name__ == "StagePooled"
    assert familiar.load(runs / run_id).train.shape[1] == model.backbone.summary_dim == 1280
    # stage 1's pooled model as the fine-tuning stages take it: the same logits as the pooled head with the
    # earlier blocks' features at their mean, through a plain network
    pooled = backbones.create("efficientnet_lite0", 4, features="pooled").eval()
    torch.nn.init.normal_(pooled.head[1].weight, std=0.05)
    photos = torch.stack([eval_transform(card.preprocessing)(load_rgb(p))
                          for p in sorted(elpv_small.rglob("*.png"))[::20]])
    with torch.inference_mode():
        feats = pooled.backbone(photos)
        plain = backbones.create("efficientnet_lite0", 4, freeze="partial").eval()
        plain.load_state_dict(backbones.drop_taps(pooled.state_dict(), feats.mean(0), pooled.backbone.summary_dim))
        at_mean = feats.clone()
        at_mean[:, :-1280] = feats[:, :-1280].mean(0)
        assert torch.allclose(plain(photos), pooled.head(at_mean), atol=1e-4)
        assert not torch.allclose(plain(photos), pooled.head(feats), atol=1e-2)  # the earlier blocks did count
        # a rich run's (a time limit with --features rich) loads the same way
        rich = backbones.create("efficientnet_lite0", 4, features="rich")
        plain.load_state_dict(backbones.drop_taps(rich.state_dict(), feats.mean(0), rich.backbone.summary_dim))
