"""Issue 10: one owner per concept. Preprocessing parity (torch vs the export's numpy twin), the
data root resolved once (`~/…` datasets), Grad-CAM on its own model, one zip extraction per
upload, evaluation outside Streamlit's cache, a training started from another working folder.
The training slot and the rebuilt run store are in tests/test_faults.py."""
from __future__ import annotations

import io
import os
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from core.base.errors import GraftError
from core.deploy.export import export, numpy_input
from core.deploy.predict import Predictor, uploads_root
from core.models.preprocess import Preprocessing, crop_box, eval_transform
from core.present.report import build
from core.runs.store import RunStore
from core.train import jobs
from core.train.config import TrainConfig
from core.train.session import fit
from core.trust.explain import Explainer

from helpers import elpv, make_subset, open_page, wait_for

TINY = dict(epochs=2, batch_size=16, min_per_class=3)


def _images() -> list[Image.Image]:
    """Real images of several shapes: ELPV cells (square greyscale → RGB) and colour photos, portrait
    and landscape, odd sizes."""
    cells = [Image.open(p).convert("RGB") for p in sorted(elpv().rglob("*.png"))[:4]]
    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    return cells + [china, flower, china.crop((0, 0, 301, 427)), flower.resize((333, 199))]


@pytest.mark.parametrize("prep", [Preprocessing(224, 0.875, (0.5,) * 3, (0.5,) * 3, "bicubic"),
                                  Preprocessing(240, 224 / 256, interpolation="bilinear")])
def test_the_export_loaders_numpy_preprocessing_equals_the_torch_transform(prep):
    transform = eval_transform(prep)
    for image in _images():
        torch_input = transform(image).numpy()
        assert numpy_input(image, prep).shape == torch_input.shape == (3, prep.input_size, prep.input_size)
        assert np.abs(numpy_input(image, prep) - torch_input).max() <= 1e-4


def test_the_crop_box_is_where_the_eval_transform_crops():
    prep = Preprocessing(224, 0.875)
    image = Image.fromarray(load_sample_images().images[0])  # 640×427, landscape
    left, top, right, bottom = crop_box(image.size, prep)
    assert bottom - top == pytest.approx(427 * 0.875, abs=1) and top + bottom == pytest.approx(427, abs=1)
    assert right - left == pytest.approx(bottom - top, abs=2) and left + right == pytest.approx(640, abs=2)
    crop = image.crop(tuple(round(v) for v in (left, top, right, bottom))).resize((224, 224), Image.BICUBIC)
    seen = eval_transform(Preprocessing(224, 0.875, (0.0,) * 3, (1.0,) * 3, "bicubic"))(image).numpy()
    assert np.abs(np.asarray(crop, np.float32).transpose(2, 0, 1) / 255 - seen).mean() < 0.03


@pytest.fixture(scope="module")
def home_run(tmp_path_factory):
    """A run trained on a dataset given as `~/photos` (HOME pointed at a temporary folder)."""
    home = tmp_path_factory.mktemp("home")
    make_subset(home / "photos", 8, classes=("defect_000", "defect_100"))
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        runs = home / "runs"
        run_id = fit(TrainConfig(data="~/photos", **TINY), runs, progress=False)
        yield home, runs, run_id
    finally:
        os.environ["HOME"] = old or ""


@pytest.mark.slow
def test_a_home_relative_dataset_reaches_results_report_and_export(home_run, tmp_path):
    home, runs, run_id = home_run
    run = RunStore(runs).run_dir(run_id)
    assert run.card().config["data"] == "~/photos" and run.card().data_root == home / "photos"
    assert "data:image/jpeg;base64" in build(run)  # the report's example thumbnails
    card = export(run, tmp_path / "export")
    val = run.manifest().manifest.query("split == 'val'")
    assert card["parity"]["images"] == min(32, len(val)) > 0 and not card["parity"]["unreadable"]  # every val photo read
    assert card["parity"]["preprocessing"]["ok"] and card["parity"]["onnx"]["ok"]
    at = open_page("pages/results.py", "~/photos", str(runs), results_run=run_id, results_section="Mistakes")
    assert not at.exception, at.exception
    assert len(at.get("image")) > 0  # the mistakes / category galleries have thumbnails


def test_export_refuses_a_folder_that_is_not_empty(home_run, tmp_path):
    _, runs, run_id = home_run
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(GraftError, match="not empty"):
        export(RunStore(runs).run_dir(run_id), tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_gradcam_leaves_the_shared_predictor_untouched(home_run):
    home, runs, run_id = home_run
    run = RunStore(runs).run_dir(run_id)
    predictor = Predictor.from_run(run)
    before = {k: v.clone() for k, v in predictor.model.state_dict().items()}
    explainer = Explainer.from_run(run)
    assert explainer.model is not predictor.model
    photo = Image.open(next((home / "photos").rglob("*.png"))).convert("RGB")
    heat, target, _ = explainer.gradcam(photo)
    assert heat.max() > 0 and target == int(predictor.probabilities([photo])[0].argmax())  # the class it predicts
    assert all(p.grad is None for p in predictor.model.parameters())
    assert all(p.grad is None for p in explainer.model.parameters())
    after = predictor.model.state_dict()
    assert all(after[k].device == before[k].device and (after[k] == before[k]).all() for k in before)


def test_results_page_evaluates_outside_the_cache(home_run):
    """A run without metrics.json is evaluated when Results opens, and again after the file is
    removed: evaluation is not hidden inside a cached function."""
    _, runs, run_id = home_run
    run = RunStore(runs).run_dir(run_id)
    for _ in range(2):
        run.metrics_file.unlink()
        at = open_page("pages/results.py", "~/photos", str(runs), results_run=run_id)
        assert not at.exception, at.exception
        assert run.metrics_file.is_file()
        metrics = run.metrics()  # what the page shows is what it just wrote
        assert {m.label: m.value for m in at.metric}["Accuracy"] == f"{metrics['accuracy']:.0%}"
        assert any(f"Right on {metrics['correct']} of {metrics['n']} " in m.value for m in at.markdown)


def test_a_zip_is_unpacked_once_per_upload_and_removed_when_replaced(home_run):
    home, runs, run_id = home_run
    files = sorted((home / "photos").rglob("*.png"))

    def zipped(chosen) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for f in chosen:
                zf.writestr(f.name, f.read_bytes())
        return buf.getvalue()

    shutil.rmtree(uploads_root(), ignore_errors=True)
    at = open_page("pages/predict.py", "~/photos", str(runs), predict_run=run_id)
    at.file_uploader(key="upload_zip").set_value(("a.zip", zipped(files[:3]), "application/zip")).run()
    assert not at.exception, at.exception
    folders = [p for p in uploads_root().iterdir()]
    assert len(folders) == 1
    marker = next(folders[0].glob(".graft-unpacked.json")).stat().st_mtime_ns
    at.slider(key="threshold").set_value(0.9).run()  # any widget: a rerun of the page
    at.number_input(key="predict_top_k").set_value(1).run()
    assert [p for p in uploads_root().iterdir()] == folders
    assert next(folders[0].glob(".graft-unpacked.json")).stat().st_mtime_ns == marker
    at.file_uploader(key="upload_zip").set_value(("b.zip", zipped(files[3:5]), "application/zip")).run()
    remaining = [p for p in uploads_root().iterdir()]
    assert len(remaining) == 1 and remaining != folders  # the first upload's files are gone


@pytest.mark.slow
def test_a_training_started_like_the_train_page_from_another_folder_completes(tmp_path, monkeypatch):
    make_subset(tmp_path / "elsewhere" / "photos", 6, classes=("defect_000", "defect_100"))
    monkeypatch.chdir(tmp_path / "elsewhere")  # the server was started here, not in the project
    run_id = jobs.start(TrainConfig(data="photos", **TINY), "runs")
    store = RunStore.open("runs")
    assert store.root == tmp_path / "elsewhere" / "runs"
    assert wait_for(lambda: store.get(run_id)["status"] not in ("queued", "running"), timeout=240)
    run = store.get(run_id)
    assert run["status"] == "completed", run["error"]
    assert run["config"]["data"] == str(tmp_path / "elsewhere" / "photos")  # resolved where it was given
    assert store.run_dir(run_id).has_model()
