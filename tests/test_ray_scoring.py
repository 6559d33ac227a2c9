"""`graft predict --engine ray`: Ray Data reads the photos and a 2-actor pool on a local 2-CPU cluster scores
them with the run's ONNX export, and every photo's row equals the local path's.

Every photo of the ELPV sample (2,624) and one that cannot be read. The model is a frozen Lite0 reading
96-px photos, trained here on the 160-photo subset: at that size scoring the sample takes seconds a path,
where the network's own 224 px would take a minute or more of the suite's time on 2 cores; the reading,
decoding, verdicts and tables are the same code either way."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import ROOT, run_cli


def _linked_copy(source, target) -> None:
    """The sample's photos under `target`, hard-linked where the file system allows (seconds, no space)."""
    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link, ignore=shutil.ignore_patterns(".*"))


@pytest.mark.slow
def test_ray_scoring_agrees_with_local_prediction_on_the_whole_sample(elpv_dir, elpv_small, tmp_path):
    runs = tmp_path / "runs"
    trained = run_cli("train", str(elpv_small), "--input-size", "96", "--epochs", "2", "--runs", str(runs))
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_id = trained.stdout.strip().splitlines()[-1].split()[0].split("=", 1)[1]
    folder = tmp_path / "photos"
    _linked_copy(elpv_dir, folder)
    photos = sum(1 for p in folder.rglob("*.png"))
    assert photos == 2624
    (folder / "defect_000" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    export = tmp_path / "export"
    assert run_cli("export", run_id, str(export), "--format", "onnx", "--runs", str(runs)).returncode == 0

    ray = run_cli("predict", str(export), str(folder), "--engine", "ray", "--csv", str(tmp_path / "ray.csv"),
                  "--parquet", str(tmp_path / "ray.parquet"), env={"GRAFT_THREADS": "1"})
    assert ray.returncode == 0, ray.stderr[-3000:]
    local = run_cli("predict", str(export), str(folder), "--csv", str(tmp_path / "local.csv"))
    assert local.returncode == 0, local.stderr[-3000:]

    ours, theirs = pd.read_csv(tmp_path / "ray.csv"), pd.read_csv(tmp_path / "local.csv")
    assert list(ours.columns) == list(theirs.columns) and len(ours) == photos + 1
    parquet = pd.read_parquet(tmp_path / "ray.parquet")
    assert list(parquet.columns) == list(ours.columns) and parquet["label"].tolist() == ours["label"].fillna("").tolist()
    text = [c for c in ours.columns if not c.startswith("p")]  # file, label, verdicts, error, top-k labels
    pd.testing.assert_frame_equal(ours[text].fillna(""), theirs[text].fillna(""))
    numbers = [c for c in ours.columns if c.startswith("p")]
    assert np.nanmax(np.abs(ours[numbers].to_numpy(float) - theirs[numbers].to_numpy(float))) <= 1e-5
    broken = ours[ours["file"].str.endswith("broken.png")]
    assert broken["error"].iloc[0] in ("not an image", "truncated", "unreadable")
    assert (ours["error"].fillna("") == "").sum() == photos
    assert ours["label"].nunique() > 1  # a model that answers, not one label for everything


def test_ray_engine_names_its_install_line_when_ray_is_missing(tmp_path):
    """Without Ray the command fails in one line that says how to install it."""
    code = ("import sys; sys.modules['ray'] = None; from core.cli import main; "  # `import ray` then fails
            f"sys.exit(main(['predict', 'some-run', {str(tmp_path)!r}, '--engine', 'ray']))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: --engine ray needs Ray Data, which is not installed: pip install graft[scale]"]
