"""INT8 export: `graft export --int8` of a real trained run writes a smaller ONNX model that the
standalone loader and `graft serve` load like the fp32 one, mostly with the same labels as the
PyTorch model; the export and the server answer with the dataset's display names."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_serve import Client, serving

from helpers import elpv, run_cli

MIN_AGREEMENT = 0.6  # INT8 labels equal to PyTorch's on the ~20 test photos of a weak 4-class model (76 % seen)
MAX_ACCURACY_DROP = 0.15  # three of ~20 test photos


@pytest.fixture(scope="module")
def named_run(trained_run, elpv_small, elpv_dir, tmp_path_factory) -> Path:
    """A copy of the trained run whose data folder (a copy too) has the ELPV sample's display names."""
    from core.data.notes import load_class_notes, save_class_notes

    root = tmp_path_factory.mktemp("named")
    data = shutil.copytree(elpv_small, root / "data")
    save_class_notes(data, load_class_notes(elpv_dir))
    runs, run_id, _ = trained_run
    run = shutil.copytree(runs / run_id, root / run_id)
    card = json.loads((run / "model.json").read_text())
    card["config"]["data"] = str(data)
    (run / "model.json").write_text(json.dumps(card))
    return run


@pytest.fixture(scope="module")
def int8_export(named_run, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("int8") / "export"
    result = run_cli("export", str(named_run), str(out), "--format", "onnx", "--int8")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def test_the_display_names_are_the_datasets(named_run):
    from core.deploy.scoring import load_model

    names = load_model(named_run).names
    assert names["defect_000"] == "Working" and names["defect_033"] == "Possibly defective"


@pytest.mark.slow
def test_an_int8_export_is_smaller_and_mostly_agrees(named_run, int8_export):
    from core.deploy.export_loader import load
    from core.deploy.predict import Predictor
    from core.runs.folder import RunDir

    out, stdout = int8_export
    card = json.loads((out / "model.json").read_text())
    figures = card["int8"]
    assert card["files"] == {"onnx": "model.int8.onnx"} and not (out / "model.onnx").exists()
    assert (out / "model.int8.onnx").stat().st_size == figures["bytes"]["int8"] < 0.5 * figures["bytes"]["fp32"]
    assert "INT8 makes the model" in stdout and f"{figures['photos']} test photos" in stdout
    assert figures["photos"] > 0 and figures["calibration_photos"] > 0 and figures["photos_per_s"]["int8"] > 0
    assert figures["accuracy_change"] >= -MAX_ACCURACY_DROP, figures
    assert card["display_names"]["defect_000"] == "Working"
    # the standalone loader takes the INT8 file as it takes model.onnx; its labels against PyTorch's
    run = RunDir(named_run)
    manifest = run.manifest().manifest
    photos = [str(run.card().data_root / p) for p in manifest[manifest["split"] == "test"]["path"]]
    int8 = load(out).verdicts(photos)
    fp32 = Predictor.from_run(named_run).predict(photos, top_k=1)
    agreement = sum(a["label"] == b["label"] for a, b in zip(int8, fp32)) / len(photos)
    print(f"INT8 vs PyTorch fp32: same label on {agreement:.0%} of {len(photos)} test photos "
          f"(export's own figure {figures['agreement']:.0%}, speed-up {figures['speedup']:.2f}x)")
    assert agreement >= MIN_AGREEMENT
    assert {r["name"] for r in int8} <= set(card["display_names"].values())


@pytest.mark.slow
def test_an_int8_export_is_served_with_display_names(int8_export, tmp_path):
    out, _ = int8_export
    card = json.loads((out / "model.json").read_text())
    cell = next((elpv() / "defect_000").glob("*.png")).read_bytes()
    with serving(out, log=tmp_path / "serve.log") as port:
        client = Client(port)
        model = client.call("GET", "/model")[1]
        assert model["engine"] == "onnxruntime" and model["quantization"] == "int8"
        assert model["display_names"]["defect_100"] == "Defective"
        assert model["int8"]["agreement"] == card["int8"]["agreement"]
        status, answer = client.predict([("cell.png", cell)])
        assert status == 200, answer
        verdict = answer["results"][0]
        assert verdict["name"] == model["display_names"][verdict["label"]] != verdict["label"]



@pytest.mark.slow
def test_the_predict_page_shows_what_int8_changes_before_it_is_chosen(trained_run, elpv_small):
    from helpers import open_page, run_state

    state, runs, _ = run_state(trained_run)
    at = open_page("pages/predict.py", str(elpv_small), str(runs), **state)
    assert not at.exception, at.exception
    assert any(c.key == "export_int8" for c in at.checkbox)
    next(b for b in at.button if b.label == "Measure INT8 first").click().run()
    assert not at.exception, at.exception
    sentence = next(i.value for i in at.info if "INT8 makes the model" in i.value)
    assert "smaller" in sentence and "test photos" in sentence
    table = next(d.value for d in at.dataframe if "photos a second" in d.value.columns)
    assert list(table["model"]) == ["full precision (fp32)", "INT8"]
    assert table["size (MB)"].iloc[1] < table["size (MB)"].iloc[0]
