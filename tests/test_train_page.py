"""Train and Runs pages: a real (tiny) training launched from the form, live curves from the
run store, Stop, a killed process, one training at a time, and comparison of runs."""
from __future__ import annotations

import pandas as pd
import pytest

from core.runs.store import RunStore
from core.train import jobs
from core.train.config import TrainConfig

from helpers import chart_data, open_page, run_cli, wait_for


def start_button(at):
    return next(b for b in at.button if b.label == "Start training")


@pytest.mark.slow
def test_form_starts_one_real_run_and_the_page_shows_its_metrics(elpv_small, tmp_path):
    runs = tmp_path / "runs"
    at = open_page("pages/train.py", str(elpv_small), str(runs), tr_epochs=3)
    assert not at.exception, at.exception
    start_button(at).click().run()
    assert not at.exception, at.exception
    store = RunStore(runs)
    assert len(store.list()) == 1
    run_id = store.list()["id"].iloc[0]
    at.run()  # a rerun while it trains...
    at.run()
    assert len(store.list()) == 1  # ...starts nothing new
    assert wait_for(lambda: store.get(run_id)["status"] not in ("queued", "running"))
    assert store.get(run_id)["status"] == "completed", jobs.log_tail(run_id, runs)
    at.run()
    epochs = store.epochs(run_id)
    plotted = pd.concat([f for f in chart_data(at) if {"metric", "split", "epoch"} <= set(f.columns)])
    for metric, col in (("loss", "loss"), ("accuracy", "acc")):
        for split in ("train", "val"):
            points = plotted[(plotted["metric"] == metric) & (plotted["split"] == split)].sort_values("epoch")
            assert points["epoch"].tolist() == [1, 2, 3]
            assert points["value"].tolist() == pytest.approx(epochs[f"{split}_{col}"].tolist())
    batch_points = next(f for f in chart_data(at) if "smoothed" in f.columns)
    assert batch_points["loss"].tolist() == pytest.approx(store.batches(run_id)["loss"].tolist())
    table = next(df.value for df in at.dataframe if "val_acc" in df.value.columns)
    assert table["epoch"].tolist() == epochs["epoch"].tolist() == [1, 2, 3]
    assert table["val_acc"].tolist() == pytest.approx(epochs["val_acc"].tolist())
    assert table["train_loss"].tolist() == pytest.approx(epochs["train_loss"].tolist())
    test_acc = store.get(run_id)["test_acc"]
    assert any(f"Finished: right on {test_acc:.0%} of the held-out test photos" in s.value for s in at.success)
    assert at.session_state["current_run"] == run_id  # the run just trained is what Results and Predict open
    head_fit = store.run_dir(run_id).head_fit()  # a frozen run fits its last layer after the epochs on the curves
    assert head_fit and head_fit["chosen"] in ("converged", "loop")
    kept = next(c.value for c in at.caption if "model kept" in c.value or "one kept" in c.value)
    assert f"{head_fit['val_acc']:.0%}" in kept  # the page says which model is kept and its figure
    assert "Start training" in [b.label for b in at.get("form_submit_button") if not b.disabled]  # ready again


SLOW = dict(epochs=200, patience=1000, input_size=64, cache=False, batch_size=8, workers=0)


@pytest.mark.slow
def test_stop_button_ends_the_run_as_stopped(elpv_small, tmp_path):
    runs = tmp_path / "runs"
    run_id = jobs.start(TrainConfig(data=str(elpv_small), **SLOW), runs)
    store = RunStore(runs)
    assert wait_for(lambda: store.get(run_id)["epochs_done"] >= 1)
    with pytest.raises(jobs.Busy):  # a second start while one runs is refused
        jobs.start(TrainConfig(data=str(elpv_small), **SLOW), runs)
    from_cli = run_cli("train", str(elpv_small), "--runs", str(runs), "--epochs", "1")
    assert from_cli.returncode == 3 and run_id in from_cli.stderr  # the command line too
    assert len(store.list()) == 1
    at = open_page("pages/train.py", str(elpv_small), str(runs))
    at.button(key="stop_run").click().run()
    assert wait_for(lambda: store.get(run_id)["status"] == "stopped")
    assert store.run_dir(run_id).best_file.is_file()
    assert wait_for(lambda: jobs.active(runs) is None, timeout=60)  # the process exits soon after


def test_a_killed_training_process_shows_as_failed(elpv_small, tmp_path):
    runs = tmp_path / "runs"
    run_id = jobs.start(TrainConfig(data=str(elpv_small), **SLOW), runs)
    store = RunStore(runs)
    assert wait_for(lambda: store.get(run_id)["status"] == "running")
    jobs.kill(run_id, runs)
    assert wait_for(lambda: run_id in store.reconcile(), timeout=30)  # what every page does first
    assert store.get(run_id)["status"] == "failed"
    at = open_page("pages/train.py", str(elpv_small), str(runs))
    assert any("failed" in e.value for e in at.error)


def test_runs_page_lists_and_compares(trained_run, elpv_small, tmp_path):
    from core.train.session import fit

    runs, run_id, _ = trained_run
    second = fit(TrainConfig(data=str(elpv_small), epochs=2, head="mlp", name="mlp head"), runs, progress=False)
    at = open_page("pages/runs.py", str(elpv_small), str(runs), compare_runs=[run_id, second])
    assert not at.exception, at.exception
    table = next(df.value for df in at.dataframe if "status" in df.value.columns)
    assert {run_id, second} <= set(table["id"])
    differ = next(df.value for df in at.dataframe if df.value.index.name == "setting")  # in words, not config keys
    assert sorted(differ.loc["last layer"]) == ["linear", "mlp"] and "head" not in differ.index
    assert sorted(differ.loc["epochs"]) == sorted([str(RunStore(runs).get(r)["config"]["epochs"]) for r in (run_id, second)])
    per_class = next(df.value for df in at.dataframe if df.value.index.name == "class")
    assert per_class.shape == (4, 2)
    store = RunStore(runs)
    plotted = next(f for f in chart_data(at) if "run" in f.columns)
    for r in (run_id, second):
        name = store.get(r)["name"]
        column = name if name in per_class.columns else f"{name} ({r})"  # the page adds the id to a shared name
        expected = {p["class"]: 100 * p["accuracy"] for p in store.run_dir(r).metrics()["per_class"]}
        assert per_class[column].to_dict() == pytest.approx(expected)  # each run's own metrics, in percent
        points = plotted[(plotted["run"] == column) & (plotted["metric"] == "loss") & (plotted["split"] == "train")]
        assert points.sort_values("epoch")["value"].tolist() == pytest.approx(store.epochs(r)["train_loss"].tolist())


def test_the_time_estimate_counts_only_the_photos_not_read_before(tmp_path):
    """A frozen run reads only the photos whose features are not cached: the Train page's estimate says so."""
    from PIL import Image

    from core.train.session import fit

    from helpers import make_subset

    folder = make_subset(tmp_path / "fresh", 6)  # real ELPV cells (greyscale), copied...
    for image in sorted(folder.rglob("*.png")):  # ...and one pixel changed: photos no other test has cached
        with Image.open(image) as im:
            cell = im.convert("L")
        cell.putpixel((0, 0), (cell.getpixel((0, 0)) + 1) % 256)
        cell.save(image)

    def caption(at) -> str:
        return next(c.value for c in at.caption if c.value.startswith("Rough time"))

    # the split of the run below (min 5 a class), whatever an earlier test saved in the settings
    at = open_page("pages/train.py", str(folder), str(tmp_path / "runs"), min_per_class=5)
    assert not at.exception, at.exception
    assert "reading the photos;" in caption(at) and "first epoch ~" in caption(at)
    fit(TrainConfig(data=str(folder), epochs=1), tmp_path / "runs", progress=False)  # reads train and val once
    at.run()
    assert "already computed" in caption(at), caption(at)
