"""The model chosen within a time budget (`graft train DATA --budget 10m`, core.train.budget): the duration
as typed, the choice rule and its sentence, the cost columns of an older run history, and a real budgeted
run on real photos with real weights."""
from __future__ import annotations

import sqlite3
import time
from dataclasses import replace

import numpy as np
import pytest

from core.base.errors import BadInput
from core.evaluate.stats import mcnemar
from core.models.probe import clearly_better
from core.present.words import budget_choice_sentence
from core.runs.store import RunStore
from core.train.budget import SAME_SPEED, candidates, choose, pareto
from core.train.config import TrainConfig, parse_duration

from helpers import make_subset, run_cli


def test_a_budget_reads_seconds_or_minutes_and_anything_else_is_one_clear_line(tmp_path):
    assert [parse_duration(t) for t in ("90", "90s", "90 sec", "10m", "1.5 min", "2 minutes", 45)] == \
        [90.0, 90.0, 90.0, 600.0, 90.0, 120.0, 45.0]
    for bad in ("10x", "", "m", "-5m", "ten minutes", "5h"):
        with pytest.raises(BadInput, match="not a duration"):
            parse_duration(bad)
    assert TrainConfig(data=str(tmp_path), budget="10m").budget == 600.0
    with pytest.raises(BadInput, match="budget must be between 30"):
        TrainConfig(data=str(tmp_path), budget="10s")
    with pytest.raises(BadInput, match="not both"):
        TrainConfig(data=str(tmp_path), budget="10m", time_limit=300)
    result = run_cli("train", str(tmp_path), "--budget", "10x", "--runs", str(tmp_path / "runs"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["error: --budget '10x': not a duration; give seconds (90 or 90s) "
                                                  "or minutes (10m)"]


def entry(name: str, score: float, ms: float, size: float = 20.0) -> dict:
    return {"name": name, "status": "tried", "val_score": score, "val_acc": score, "ms_per_photo": ms,
            "size_mb": size, "val_ci": [score - 0.04, score + 0.04], "reads_own_view": True}


def test_the_cheaper_model_is_kept_when_the_better_ones_lead_is_within_noise():
    n = 390
    answers = {"Lite0 · 224 px": np.arange(n) < 312}  # 80 % right
    answers["Lite2 · 260 px"] = np.arange(n) < 316  # 4 photos more: past the 1-point margin, not past chance
    lite0, lite2 = entry("Lite0 · 224 px", 0.80, 10.0), entry("Lite2 · 260 px", 316 / n, 18.0, 25.0)
    choice = choose([lite2, lite0], n, answers)
    assert clearly_better(lite2["val_score"], lite0["val_score"], n)  # the head rule alone would pay for it
    assert choice == {"best": "Lite2 · 260 px", "kept": "Lite0 · 224 px", "runner_up": None}
    p = mcnemar(answers["Lite2 · 260 px"], answers["Lite0 · 224 px"])["p_value"]
    assert p > 0.05
    board = {**choice, "candidates": [lite0, lite2], "p_value": p}
    assert budget_choice_sentence(board) == (
        f"Lite2 · 260 px is 1.0 points better than Lite0 · 224 px on validation but within noise (McNemar's test: "
        f"p = {p:.2f}) and 1.8× slower per photo: Lite0 · 224 px is kept.")

    answers["Lite2 · 260 px"] = np.arange(n) < 332  # 20 photos more: beyond noise, the slower model is worth it
    lite2["val_score"] = 332 / n
    choice = choose([lite2, lite0], n, answers)
    assert choice == {"best": "Lite2 · 260 px", "kept": "Lite2 · 260 px", "runner_up": "Lite0 · 224 px"}
    sentence = budget_choice_sentence({**choice, "candidates": [lite0, lite2], "p_value": 1e-5})
    assert sentence == ("Lite2 · 260 px is kept: 5.1 points better on validation than the faster Lite0 · 224 px, beyond "
                        "noise (McNemar's test: p < 0.01), for 1.8× the time per photo.")
    assert pareto([lite0, lite2, entry("slow and worse", 0.79, 30.0)]) == {"Lite0 · 224 px", "Lite2 · 260 px"}


def test_an_older_run_history_gets_the_cost_columns_empty(tmp_path):
    with sqlite3.connect(tmp_path / "runs.sqlite") as db:  # the schema before the cost columns
        db.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, name TEXT, dataset TEXT, backbone TEXT, freeze TEXT, "
                   "config TEXT, status TEXT NOT NULL, created REAL, started REAL, ended REAL, epochs_done INTEGER "
                   "DEFAULT 0, best_epoch INTEGER, best_val_loss REAL, best_val_acc REAL, test_acc REAL, error TEXT, "
                   "pid INTEGER, host TEXT, stop_requested INTEGER DEFAULT 0, progress TEXT)")
        db.execute("INSERT INTO runs (id, name, config, status, created, test_acc) VALUES ('old', 'old', '{}', "
                   "'completed', 1.0, 0.8)")
    store = RunStore(tmp_path)
    runs = store.list()
    assert runs.loc[0, "test_acc"] == 0.8 and runs[["train_seconds", "photos_per_s", "size_mb"]].isna().all(axis=None)
    store.update("old", photos_per_s=12.5)
    assert store.get("old")["photos_per_s"] == 12.5


@pytest.mark.slow
def test_a_small_budget_tries_models_keeps_the_one_validation_picks_and_ends_in_time(tmp_path):
    from core.deploy.predict import load_predictor
    from core.train.session import fit

    data = make_subset(tmp_path / "photos", 12)
    runs, budget = tmp_path / "runs", 60.0
    began = time.monotonic()
    run_id = fit(TrainConfig(data=str(data), budget=budget), runs, progress=False)
    took = time.monotonic() - began
    store = RunStore.open(runs)
    row, run = store.get(run_id), store.run_dir(run_id)
    assert row["status"] == "completed", row["error"]
    # the whole run, scoring included, within its budget (a correctness property of the deadline; the
    # slack covers a first candidate that always runs, under a loaded machine)
    assert took <= budget * 1.1 + 10, took

    board = run.leaderboard()
    entries = board["candidates"]
    base = {c.name for c in candidates(TrainConfig(data=str(data)))}
    assert base <= {e["name"] for e in entries}  # every candidate: tried, or skipped with its reason
    tried = [e for e in entries if e["status"] == "tried"]
    assert len(tried) >= 2 and tried[0]["name"] == "Lite0 · 224 px · pooled view"  # the default first
    assert any(e["features"] == "plain" for e in tried)  # its plain view, from the same reading
    for e in tried:
        low, high = e["val_ci"]
        assert 0 <= low <= e["val_acc"] <= high <= 1 and e["val_n"] == board["n_val"], e
        assert e["ms_per_photo"] > 0 and e["size_mb"] > 1 and e["seconds"] >= 0, e
    for e in entries:
        assert e["status"] == "tried" or e["reason"], e

    # the choice follows validation: the best score, and the cheapest model it is not clearly better than
    best = max(tried, key=lambda e: e["val_score"])
    assert board["best"] == best["name"] or next(e for e in tried if e["name"] == board["best"])["val_score"] == \
        best["val_score"]
    kept = next(e for e in tried if e["name"] == board["kept"])

    def close(e: dict) -> bool:  # the best's lead over it is noise: under the margin, or McNemar p >= 0.05
        return not clearly_better(best["val_score"], e["val_score"], board["n_val"]) or e["p_vs_best"] >= 0.05

    assert close(kept) and all(e["ms_per_photo"] * SAME_SPEED >= kept["ms_per_photo"] for e in tried if close(e))
    assert budget_choice_sentence(board)

    # the kept model is a normal run: its card, its cost, its test score, and it labels photos
    card = run.card()
    assert card.backbone == kept["backbone"] and card.preprocessing.input_size in (kept["input_size"],
                                                                                  round(kept["input_size"] * 0.75 / 32) * 32)
    if card.freeze == "head":
        assert card.features == kept["features"]
    assert row["test_acc"] is not None and run.metrics()["n"] > 0
    assert row["train_seconds"] > 0 and row["photos_per_s"] > 0 and row["size_mb"] > 1
    assert board["final"]["test_acc"] == row["test_acc"] and board["used_s"] <= took + 0.05  # used_s is rounded to 0.1 s
    photos = sorted(data.glob("*/*.png"))[:2]
    table = load_predictor(run_id, runs).predict_table(photos)
    assert list(table["error"]) == ["", ""] and set(table["label"]) <= set(card.labels)


@pytest.mark.slow
def test_every_run_records_its_cost_beside_its_accuracy(trained_run):
    runs, run_id, _ = trained_run
    row = RunStore.open(runs).get(run_id)
    assert row["test_acc"] is not None and row["train_seconds"] > 0 and row["size_mb"] > 1
    assert 1 < row["photos_per_s"] < 10_000  # a CPU reads a few to a few hundred photos a second
    frame = RunStore.open(runs).list()
    assert frame.loc[frame["id"] == run_id, "photos_per_s"].iloc[0] == row["photos_per_s"]


def test_a_budgeted_run_does_not_bring_back_the_richer_view_it_set_aside():
    """The time left after the choice fine-tunes the kept model; the richer view, a candidate of its own, is
    not tried again as a stage (the model at the end is the one the leaderboard names)."""
    from core.train.stages import rich_applies

    config = TrainConfig(data="photos")
    assert rich_applies(config) and rich_applies(replace(config, time_limit=900.0))
    assert not rich_applies(replace(config, time_limit=900.0, budget=900.0))
