"""Training end to end on real ELPV images with the real pretrained Lite0 backbone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest

from core.base.storage import load_torch, read_json
from core.deploy.predict import Predictor
from core.evaluate.metrics import evaluate_run
from core.models import preprocess
from core.runs.store import RunStore
from core.train.config import TrainConfig
from core.train.loop import class_weights
from core.train.session import fit

from helpers import ROOT, elpv, make_subset, run_cli, wait_for

FAST = dict(epochs=40, patience=1000, input_size=64, cache=False, batch_size=16, workers=0)


@pytest.mark.slow
def test_cli_train_learns_above_chance(trained_run, elpv_small):
    from core.data.images import load_rgb

    runs, run_id, stdout = trained_run
    last = stdout.strip().splitlines()[-1]
    assert last.startswith(f"run_id={run_id} ") and "test_acc=" in last
    acc = float(last.rsplit("test_acc=", 1)[1])
    run = RunStore(runs).get(run_id)
    assert run["status"] == "completed" and run["test_acc"] == pytest.approx(acc, abs=1e-4)
    # it learned: right on clearly more than a quarter (chance: 4 balanced classes) of 160 other ELPV photos;
    # the subset's own 21 test photos cannot tell (one photo is 5 points). Expected about 0.46.
    predictor, right = Predictor.from_run(runs / run_id), []
    for label in predictor.labels:
        seen = {f.name for f in (elpv_small / label).glob("*.png")}
        files = [f for f in sorted((elpv() / label).glob("*.png"))[1::2] if f.name not in seen][:40]
        predicted = predictor.probabilities([load_rgb(f) for f in files]).argmax(1).tolist()
        right += [p == predictor.labels.index(label) for p in predicted]
    assert len(right) == 160 and np.mean(right) > 0.34  # by chance above 0.34: probability 0.5 %
    epochs = RunStore(runs).epochs(run_id)
    assert epochs["epoch"].tolist() == list(range(1, len(epochs) + 1))
    for name in ("config.json", "manifest.csv", "model.json", "best.pt", "last.pt", "predictions.csv"):
        assert (runs / run_id / name).is_file(), name


def test_checkpoints_are_plain_state_dicts(trained_run):
    runs, run_id, _ = trained_run
    best = load_torch(runs / run_id / "best.pt")
    assert all(hasattr(v, "shape") for v in best.values())
    assert "head.1.weight" in best
    last = load_torch(runs / run_id / "last.pt")
    assert set(last) >= {"model", "optimizer", "scheduler", "epoch"}
    store = RunStore(runs)
    assert last["epoch"] == store.get(run_id)["epochs_done"] == store.epochs(run_id)["epoch"].max()  # the last logged
    assert set(last["model"]) == set(best)  # the same network's weights


@pytest.mark.slow
def test_saved_run_predicts_the_same_in_a_fresh_process(trained_run, elpv_small, tmp_path):
    runs, run_id, _ = trained_run
    out = tmp_path / "pred.csv"
    result = run_cli("predict", run_id, str(elpv_small), "--runs", str(runs), "--csv", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    fresh = pd.read_csv(out)
    files = sorted(p for p in elpv_small.rglob("*.png"))
    here = Predictor.from_run(runs / run_id).predict(files)
    assert fresh["file"].tolist() == [str(f) for f in files]
    assert list(fresh.columns[:5]) == ["file", "label", "prob", "uncertain", "unfamiliar"]  # the CLI contract
    assert fresh["label"].tolist() == [r["label"] for r in here]
    assert np.allclose(fresh["prob"], [r["confidence"] for r in here], atol=1e-4)
    assert set(fresh["uncertain"]) <= {True, False} and set(fresh["unfamiliar"]) <= {True, False}  # true / false
    assert fresh["unfamiliar"].tolist() == [r["unfamiliar"] for r in here]


def test_evaluation_is_consistent_with_the_manifest(trained_run):
    runs, run_id, _ = trained_run
    metrics = read_json(runs / run_id / "metrics.json")
    manifest = pd.read_csv(runs / run_id / "manifest.csv")
    test_rows = manifest[manifest["split"] == "test"]
    cm = np.array(metrics["confusion_matrix"])
    assert cm.sum() == len(test_rows) == metrics["n"]
    assert np.trace(cm) / cm.sum() == pytest.approx(metrics["accuracy"])
    train_counts = manifest[manifest["split"] == "train"]["label"].value_counts()
    assert {p["class"]: p["train_count"] for p in metrics["per_class"]} == train_counts.to_dict()
    preds = pd.read_csv(runs / run_id / "predictions.csv")
    assert sorted(preds["path"]) == sorted(test_rows["path"])
    assert preds["correct"].mean() == pytest.approx(metrics["accuracy"])
    card = read_json(runs / run_id / "model.json")
    assert card["labels"] == sorted(manifest["label"].unique())
    assert card["preprocessing"]["mean"] == [0.5, 0.5, 0.5]


def test_tta_is_reported_beside_the_plain_result(trained_run):
    runs, run_id, _ = trained_run
    result = evaluate_run(runs / run_id, tta=3)
    assert result["tta"]["views"] == 3
    assert 0 <= result["tta"]["accuracy"] <= 1
    assert set(result["tta"]["per_class_accuracy"]) == set(result["labels"])
    again = evaluate_run(runs / run_id)  # the plain result does not depend on TTA having run
    assert again["accuracy"] == result["accuracy"]


def test_class_weights_follow_the_imbalance():
    assert class_weights([100, 90, 80], "auto") is None
    w = class_weights([400, 100, 25], "auto")
    assert w is not None and w[2] > w[1] > w[0] and float(w.mean()) == pytest.approx(1.0)
    assert class_weights([400, 100, 25], "off") is None
    balanced = class_weights([400, 100, 25], "balanced")
    assert float(balanced[2] / balanced[0]) == pytest.approx(16.0)



def test_stop_request_ends_the_run_as_stopped_and_keeps_the_best(elpv_small, tmp_path):
    store = RunStore(tmp_path / "runs")
    config = TrainConfig(data=str(elpv_small), **FAST)
    run_id = store.create(vars(config))
    thread = threading.Thread(target=fit, args=(config, store.root, run_id), kwargs={"progress": False})
    thread.start()
    assert wait_for(lambda: store.get(run_id)["epochs_done"] >= 1)
    store.request_stop(run_id)
    thread.join(timeout=120)
    run = store.get(run_id)
    assert run["status"] == "stopped"
    assert run["epochs_done"] < FAST["epochs"]
    assert store.run_dir(run_id).best_file.is_file()
    answers = Predictor.from_run(store.run_dir(run_id)).predict(sorted(elpv_small.rglob("*.png"))[:2])
    classes = sorted(d.name for d in elpv_small.iterdir() if d.is_dir() and not d.name.startswith("."))
    assert [r["label"] in classes for r in answers] == [True, True]  # a class of the data, for each photo


@pytest.mark.slow
def test_killed_run_is_failed_then_resumes_from_its_last_epoch(tmp_path):
    runs = tmp_path / "runs"
    store = RunStore(runs)
    photos = make_subset(tmp_path / "photos", 10)  # 40 real photos: epochs of a second or two
    config = TrainConfig(data=str(photos), **{**FAST, "epochs": 12, "min_per_class": 3})
    run_id = store.create(vars(config))
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(vars(config)))
    proc = subprocess.Popen([sys.executable, "-m", "core", "train", "--config", str(config_file),
                             "--run-id", run_id, "--runs", str(runs)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ))
    assert wait_for(lambda: store.get(run_id)["epochs_done"] >= 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert store.reconcile() == [run_id]  # the dead process is noticed by an explicit call
    killed = store.get(run_id)
    assert killed["status"] == "failed" and "ended without finishing" in killed["error"]
    done_before = load_torch(runs / run_id / "last.pt")["epoch"]
    assert 1 <= done_before < 12  # last.pt is written just after the epoch is logged
    before = store.epochs(run_id).set_index("epoch").loc[:done_before, "train_loss"]
    result = run_cli("resume", run_id, "--runs", str(runs))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming after epoch {done_before}" in result.stdout
    run = store.get(run_id)
    assert run["status"] == "completed" and run["epochs_done"] == 12
    after = store.epochs(run_id).set_index("epoch")
    assert after.index.tolist() == list(range(1, 13))
    assert after.loc[:done_before, "train_loss"].equals(before)  # earlier epochs untouched


def test_a_file_broken_after_the_scan_is_skipped_not_fatal(tmp_path, elpv_small):
    files = sorted(elpv_small.rglob("*.png"))[:3]
    broken = tmp_path / "broken.png"
    broken.write_bytes(files[0].read_bytes()[:300])
    dataset = preprocess.ImageDataset([files[1], broken, files[2]], [0, 1, 2],
                                lambda img: np.asarray(img.resize((8, 8)), dtype=np.float32))
    assert dataset[1] is None
    batch = preprocess.collate_skip_none([dataset[i] for i in range(3)])
    assert batch[0].shape == (2, 8, 8, 3) and batch[1].tolist() == [0, 2]
