"""Trust (issue 13, part 1): a photo unlike the training photos is called unfamiliar, separately from
uncertain, on a real ELPV run; the detector is saved with the run and calibrated on validation."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw
from sklearn.datasets import load_sample_images

from core import familiar
from core.predict import Predictor
from core.rundir import RunDir
from test_dashboard import open_page
from test_results_predict import _state


def house_drawing() -> Image.Image:
    """A generated line drawing of a house: nothing like a solar cell."""
    image = Image.new("RGB", (300, 300), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((70, 140, 230, 260), outline="black", width=6)
    draw.polygon([(60, 145), (150, 60), (240, 145)], outline="black", width=6)
    draw.rectangle((130, 190, 170, 260), fill="saddlebrown")
    draw.ellipse((240, 20, 290, 70), fill="gold")
    return image


def test_the_detector_is_saved_with_the_run_and_keeps_most_validation_photos_familiar(trained_run):
    runs, run_id, _ = trained_run
    run = RunDir(runs / run_id)
    index = familiar.load(run.path)
    assert index is not None and 0.0 < index.threshold < 1.0
    manifest = run.manifest().manifest
    assert len(index.train) == int((manifest["split"] == "train").sum())
    assert np.allclose(np.linalg.norm(index.train, axis=1), 1.0, atol=1e-2)
    test_files = [run.card().data_root / p for p in manifest[manifest["split"] == "test"]["path"]]
    flagged = np.mean([r["unfamiliar"] for r in Predictor.from_run(run.path).predict(test_files)])
    assert flagged <= 0.25  # in-domain photos mostly familiar (5 % on validation by construction)


def test_far_out_of_domain_photos_are_unfamiliar_not_just_uncertain(trained_run):
    runs, run_id, _ = trained_run
    predictor = Predictor.from_run(runs / run_id)
    strangers = [house_drawing(), *(Image.fromarray(a) for a in load_sample_images().images)]
    results = predictor.predict(strangers)
    assert all(r["unfamiliar"] for r in results), [r["distance"] for r in results]
    assert all(r["distance"] > predictor.familiarity.threshold for r in results)


def test_the_predict_page_says_unfamiliar_for_a_drawing_and_offers_no_heatmap(trained_run, elpv_small):
    state, runs, _ = _state(trained_run)
    at = open_page("pages/predict.py", str(elpv_small), str(runs), **state)
    drawing = io.BytesIO()
    house_drawing().save(drawing, "PNG")
    at.file_uploader(key="upload_images").set_value([("house.png", drawing.getvalue(), "image/png")]).run()
    assert not at.exception, at.exception
    assert "unfamiliar — this does not look like the training photos" in " ".join(m.value for m in at.markdown)
    assert any("No explanation offered" in i.value for i in at.info)
    assert not [t for t in at.toggle if t.key and t.key.startswith("gradcam_")]


def test_explanation_by_example_shows_the_nearest_training_photos(trained_run, elpv_small):
    runs, run_id, _ = trained_run
    run = RunDir(runs / run_id)
    manifest = run.manifest().manifest
    train_row = manifest[manifest["split"] == "train"].iloc[3]
    result = Predictor.from_run(run.path).predict([run.card().data_root / train_row["path"]])[0]
    nearest = result["examples"][0]
    assert nearest["path"] == train_row["path"] and nearest["label"] == train_row["label"]  # itself, first
    assert nearest["sha1"] == train_row["sha1"]  # the thumbnail key: never another dataset's same-named file
    assert nearest["distance"] < 1e-2 and len(result["examples"]) == 4
    assert [e["distance"] for e in result["examples"]] == sorted(e["distance"] for e in result["examples"])
    state, _, _ = _state(trained_run)
    at = open_page("pages/predict.py", str(elpv_small), str(runs), **state)
    cell = (run.card().data_root / train_row["path"]).read_bytes()
    at.file_uploader(key="upload_images").set_value([("cell.png", cell, "image/png")]).run()
    assert not at.exception, at.exception
    assert any("It looks most like these training photos" in c.value for c in at.caption)
