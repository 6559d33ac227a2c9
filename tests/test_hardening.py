"""What a stranger, a kill or a bad argument can do, and what survives: the kept model and its card change
together, a run killed in any stage of a time-limited run resumes or ends with its kept model, and
`share` says in one line what is wrong with its port or address."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from core.base.storage import load_torch
from core.runs.folder import RunDir
from core.runs.store import RunStore
from core.train.config import TrainConfig

from helpers import ROOT, make_subset, run_cli, wait_for


@pytest.fixture
def run_copy(trained_run, tmp_path) -> RunDir:
    runs, run_id, _ = trained_run
    copy = tmp_path / "runs" / run_id
    shutil.copytree(runs / run_id, copy)
    return RunDir(copy)


def _another_model(run: RunDir):
    state = {k: v.clone() for k, v in run.load_best().items()}
    head = max(k for k in state if k.startswith("head.") and k.endswith(".bias"))
    state[head] += 1.0  # another model of the same shape
    return state, replace(run.card(), dropout=0.33)  # and a card that tells them apart


def test_keep_model_changes_the_checkpoint_and_its_card_together(run_copy):
    old_card = run_copy.card()
    state, card = _another_model(run_copy)
    run_copy.keep_model(state, card)
    assert run_copy.card().dropout == 0.33 and not run_copy.pending_card_file.exists()
    assert torch.equal(load_torch(run_copy.best_file)[next(iter(state))], next(iter(state.values())))
    assert old_card.dropout != 0.33


def test_a_kill_at_any_step_of_keep_model_leaves_a_card_that_matches_the_checkpoint(run_copy):
    old_card, old_best = run_copy.card().to_dict(), run_copy.best_file.read_bytes()
    state, card = _another_model(run_copy)
    run_copy.keep_model(state, card)
    new_best = run_copy.best_file.read_bytes()
    pending = json.loads(json.dumps({"checkpoint_sha1": __import__("hashlib").sha1(new_best).hexdigest(),
                                     "card": card.to_dict()}))
    # killed after the new card was set aside, before the checkpoint: the old pair
    run_copy.best_file.write_bytes(old_best)
    run_copy.card_file.write_text(json.dumps(old_card))
    run_copy.pending_card_file.write_text(json.dumps(pending))
    assert run_copy.card().dropout == old_card["dropout"]
    run_copy.load_model()
    # killed after the checkpoint, before the card: the new pair
    run_copy.best_file.write_bytes(new_best)
    assert run_copy.card().dropout == 0.33
    model, _ = run_copy.load_model()
    assert model.head is not None


@pytest.mark.slow
# Each stage killed in its own run: stage 1 after its first epoch; stage 2 while it reads the photos in 8
# orientations; stage 3 as it starts; stage 4 (fine-tuning at full size) once it runs, from a 150-s limit
# that leaves each later stage its share.
@pytest.mark.parametrize("stage, limit", [(1, 45), (2, 150), (3, 150), (4, 150)])
def test_a_time_limited_run_killed_in_a_stage_resumes_or_ends_with_its_kept_model(stage, limit, tmp_path):
    photos = make_subset(tmp_path / "photos", 16)
    runs = tmp_path / "runs"
    store = RunStore(runs)
    config = TrainConfig(data=str(photos), time_limit=limit, min_per_class=3)
    run_id = store.create(vars(config))
    (tmp_path / "config.json").write_text(json.dumps(vars(config)))
    log = open(tmp_path / "train.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "core", "train", "--config", str(tmp_path / "config.json"),
                             "--run-id", run_id, "--runs", str(runs)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        def stage_now() -> int:
            return store.get(run_id)["progress"].get("stage", 1)

        def in_stage() -> bool:
            return stage_now() >= stage and (stage > 1 or store.get(run_id)["epochs_done"] >= 1)

        wait_for(lambda: in_stage() or proc.poll() is not None, timeout=300)
        assert proc.poll() is None and stage_now() == stage, (tmp_path / "train.log").read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
    store.reconcile()
    resumed = run_cli("resume", run_id, "--runs", str(runs))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert store.get(run_id)["status"] == "completed"
    run = RunDir(runs / run_id)
    model, card = run.load_model()  # the kept model loads with its card
    evaluated = run_cli("eval", run_id, "--runs", str(runs))
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert run.metrics()["n"] > 0 and card.labels == sorted(p.name for p in photos.iterdir())


@pytest.mark.parametrize("args, reason", [
    (["--port", "99999"], "port must be between 1 and 65535"),
    (["--port", "0"], "port must be between 1 and 65535"),
    (["--address", "10.9.9.9"], "is not an address of this machine"),
    (["--address", "no-such-host.invalid"], "is not a network address"),
])
def test_share_names_a_bad_port_or_address_in_one_line(args, reason):
    result = run_cli("share", *args, "--dry-run")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:") and reason in result.stderr, result.stderr


def test_share_names_a_port_in_use():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("share", "--address", "127.0.0.1", "--port", str(port), "--dry-run")
    assert result.returncode != 0 and f"port {port} is already in use" in result.stderr, result.stderr


def test_a_time_limit_never_cuts_the_first_epoch_so_a_run_always_has_a_model():
    import time

    from core.train.steps import Deadline, LoopState, StopTraining

    state, limit = LoopState(epochs=10, epoch=1), Deadline(time.monotonic() - 1, finish_an_epoch=True)
    limit.on_batch(state, 0.5)  # past the deadline, but no epoch has finished: no model yet, so go on
    assert not limit.reached
    state.record(0.9, 0.5)  # the first epoch's validation: now there is a model to keep
    with pytest.raises(StopTraining):
        limit.on_batch(state, 0.5)
    assert limit.reached
