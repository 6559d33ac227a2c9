"""Decisions an audience can make (issue 15), on a real ELPV run: honest figures (images behind every
accuracy, a 95 % interval, the do-nothing baseline, McNemar between runs), the choice by validation,
scoring another labelled folder, and the pass/inspect rule applied on Predict, in the CLI and in the
export."""
from __future__ import annotations

import math
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from core.deploy.predict import Predictor
from core.evaluate.decision import Decision, at_threshold, for_run, sweep
from core.evaluate.stats import majority_baseline, mcnemar, wilson
from core.runs.folder import RunDir
from core.runs.store import RunStore

from helpers import elpv, make_subset, open_page, run_cli
from helpers import run_state as _state


def test_the_interval_and_the_baseline_match_an_independent_computation(trained_run):
    runs, run_id, _ = trained_run
    run = RunDir(runs / run_id)
    metrics = run.metrics()
    predictions = run.predictions()
    correct = int((predictions["correct"].astype(str) == "True").sum())
    assert (metrics["correct"], metrics["n"]) == (correct, len(predictions))
    reference = binomtest(correct, len(predictions)).proportion_ci(confidence_level=0.95, method="wilson")
    assert metrics["accuracy_ci"] == pytest.approx([reference.low, reference.high], abs=1e-9)
    manifest = run.manifest().manifest
    test_labels = manifest[manifest["split"] == "test"]["label"]
    assert metrics["baseline"]["correct"] == test_labels.value_counts().max()  # the best always-the-same answer
    assert metrics["baseline"]["correct"] == int((test_labels == metrics["baseline"]["class"]).sum())
    assert metrics["baseline"]["train_class"] == manifest[manifest["split"] == "train"]["label"].value_counts().idxmax()
    for row in metrics["per_class"]:
        right = int(((predictions["label"] == row["class"]) & (predictions["predicted"] == row["class"])).sum())
        assert row["correct"] == right and row["support"] == int((predictions["label"] == row["class"]).sum())
        ci = binomtest(right, row["support"]).proportion_ci(method="wilson") if row["support"] else None
        if ci:
            assert row["ci"] == pytest.approx([ci.low, ci.high], abs=1e-9)
    assert wilson(0, 0) == (0.0, 1.0)


def test_mcnemar_equals_the_exact_binomial_by_hand():
    rng = np.random.default_rng(3)
    a, b = rng.random(80) < 0.7, rng.random(80) < 0.6
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n, k = only_a + only_b, min(only_a, only_b)
    by_hand = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    result = mcnemar(a, b)
    assert (result["only_a"], result["only_b"]) == (only_a, only_b)
    assert result["p_value"] == pytest.approx(by_hand, rel=1e-9)
    assert mcnemar(a, a)["p_value"] == 1.0


def _clone_run(store: RunStore, source: RunDir, name: str, val: float, test: float) -> str:
    run_id = store.create({"data": str(elpv())}, name)
    target = store.run_dir(run_id)
    for item in source.path.iterdir():
        if item.is_file() and item.name not in ("config.json",):
            shutil.copy2(item, target.path / item.name)
    store.update(run_id, status="completed", best_val_acc=val, test_acc=test)
    return run_id


def test_the_default_pick_is_by_validation_never_by_test(trained_run, elpv_small, tmp_path):
    runs, run_id, _ = trained_run
    store = RunStore(tmp_path / "runs")
    better_on_val = _clone_run(store, RunDir(runs / run_id), "better on validation", val=0.80, test=0.70)
    _clone_run(store, RunDir(runs / run_id), "better on test", val=0.75, test=0.90)
    assert store.best_by_validation()["id"].tolist()[0] == better_on_val
    at = open_page("pages/predict.py", str(elpv_small), str(tmp_path / "runs"))
    assert not at.exception, at.exception
    assert at.selectbox(key="predict_run").value == better_on_val


@pytest.mark.slow
def test_eval_on_another_folder_names_an_unknown_class_and_scores_the_rest(trained_run, tmp_path):
    runs, run_id, _ = trained_run
    other = make_subset(tmp_path / "other_line", 5, classes=("defect_000", "defect_100"))
    make_subset(tmp_path / "scratch_src", 4, classes=("defect_033",))
    (tmp_path / "scratch_src" / "defect_033").rename(other / "scratches")  # a class the run does not know
    result = run_cli("eval", run_id, "--data", str(other), "--runs", str(runs))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped class scratches: 4 images" in result.stdout
    check = RunDir(runs / run_id).checks()[0]
    assert f"Right on {check['correct']} of 10 images ({check['accuracy']:.0%};" in result.stdout  # the saved figure
    assert check["name"] == "other_line" and check["n"] == 10 and check["skipped_classes"] == {"scratches": 4}
    files = sorted((other / "defect_000").glob("*.png")) + sorted((other / "defect_100").glob("*.png"))
    predicted = [r["label"] for r in Predictor.from_run(runs / run_id).predict(files)]
    truth = ["defect_000"] * 5 + ["defect_100"] * 5
    assert check["correct"] == sum(p == t for p, t in zip(predicted, truth))
    assert sum(map(sum, check["confusion_matrix"])) == 10


@pytest.mark.slow
def test_an_unwritable_or_foreign_folder_is_a_clear_error(trained_run, tmp_path):
    runs, run_id, _ = trained_run
    foreign = make_subset(tmp_path / "foreign", 3, classes=("defect_033",))
    (foreign / "defect_033").rename(foreign / "cats")
    result = run_cli("eval", run_id, "--data", str(foreign), "--runs", str(runs))
    assert result.returncode != 0 and "no images of this run's classes" in result.stderr
    assert "Traceback" not in result.stderr


def _png(path) -> bytes:
    return open(path, "rb").read()


@pytest.mark.slow
def test_the_pass_inspect_rule_chosen_on_results_changes_predict_cli_and_export(trained_run, elpv_small, tmp_path):
    state, runs, run_id = _state(trained_run)
    run = RunDir(runs / run_id)
    (run.decision_file).unlink(missing_ok=True)
    image = sorted((elpv_small / "defect_100").glob("*.png"))[0]
    probs = Predictor.from_run(run.path).predict([image])[0]["probabilities"]
    inspect = ["defect_067", "defect_100"]
    p = sum(probs[c] for c in inspect)
    assert 0.0 < p < 1.0
    for threshold, expected in ((max(0.0, p - 0.02), "inspect"), (min(1.0, p + 0.02), "pass")):
        at = open_page("pages/results.py", str(elpv_small), str(runs), results_section="Pass or inspect", **state)
        at.multiselect(key=f"inspect_{run_id}").set_value(inspect).run()
        at.slider(key=f"inspect_threshold_{run_id}").set_value(round(threshold * 100)).run()  # in percent
        at.button(key="save_decision").click().run()
        assert not at.exception, at.exception
        saved = for_run(run)
        assert saved.inspect == inspect and saved.threshold == pytest.approx(round(threshold, 2))
        # Predict page: the same image, the verdict of the saved rule
        page = open_page("pages/predict.py", str(elpv_small), str(runs), **state)
        page.file_uploader(key="upload_images").set_value([("cell.png", _png(image), "image/png")]).run()
        assert not page.exception, page.exception
        shown = " ".join(m.value for m in [*page.warning, *page.success])
        assert ("send to inspection" in shown) == (expected == "inspect"), shown
        # the command line
        cli = run_cli("predict", str(run.path), str(image), "--csv", str(tmp_path / "p.csv"))
        assert cli.returncode == 0, cli.stderr[-2000:]
        assert pd.read_csv(tmp_path / "p.csv")["decision"].tolist() == [expected]
        # the export, through its own standalone loader
        out = tmp_path / f"export_{expected}"
        assert run_cli("export", str(run.path), str(out), "--format", "onnx").returncode == 0
        fresh = subprocess.run([sys.executable, "graft_predict.py", ".", str(image)], cwd=out, capture_output=True,
                               text=True)
        assert fresh.returncode == 0, fresh.stderr[-2000:]
        assert fresh.stdout.strip().split("\t")[-1] == expected
    override = run_cli("predict", str(run.path), str(image), "--threshold", "1.0", "--csv", str(tmp_path / "o.csv"))
    assert override.returncode == 0, override.stderr[-2000:]
    assert pd.read_csv(tmp_path / "o.csv")["decision"].tolist() == (["pass"] if p < 1.0 else ["inspect"])


def test_at_threshold_counts_by_hand():
    table = pd.DataFrame({"label": ["bad", "bad", "good", "good", "good"],
                          "p_bad": [0.9, 0.3, 0.6, 0.1, 0.2], "p_good": [0.1, 0.7, 0.4, 0.9, 0.8]})
    row = at_threshold(table, ["bad"], 0.5, cost_miss=100, cost_inspection=5)
    curve = sweep(table, ["bad"], cost_miss=100, cost_inspection=5)
    assert curve.iloc[50].to_dict() == pytest.approx(row)  # the chart's curve is the table's rule
    assert (row["caught"], row["missed"], row["good_sent"], row["inspections"]) == (1, 1, 1, 2)
    assert row["cost"] == 1 * 100 + 2 * 5
    with pytest.raises(ValueError):
        Decision([], 0.5)
    with pytest.raises(ValueError):
        Decision(["bad", "good"], 0.5, labels=["bad", "good"])  # nothing would pass
    assert Decision(["bad"], 0.5).verdict({"bad": 0.5, "good": 0.5}) == "inspect"


def test_a_damaged_rule_is_said_on_the_pages_not_a_traceback(trained_run, elpv_small):
    state, runs, run_id = _state(trained_run)
    run = RunDir(runs / run_id)
    run.decision_file.write_text('{"inspect": ["defect_100"], "threshold": "high"}')
    try:
        for page in ("pages/results.py", "pages/predict.py"):
            at = open_page(page, str(elpv_small), str(runs), results_section="Pass or inspect", **state)
            assert not at.exception, at.exception
            assert any("pass/inspect rule of this run cannot be used" in e.value for e in at.error)
    finally:
        run.decision_file.unlink(missing_ok=True)


def test_the_figure_to_beat_is_the_best_constant_answer_on_the_images_scored():
    # training mostly 'good', but the folder scored is mostly 'crack': always 'good' would make a weak
    # model look strong; always 'crack' is the bar a model must clear
    baseline = majority_baseline(["good"] * 5 + ["crack"] * 2, ["crack"] * 3 + ["good"])
    assert (baseline["class"], baseline["correct"], baseline["n"], baseline["train_class"]) == ("crack", 3, 4, "good")
    tie = majority_baseline(["good"] * 5 + ["crack"] * 2, ["crack", "good"])
    assert tie["class"] == "good" and tie["accuracy"] == 0.5
