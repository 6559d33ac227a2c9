"""Trust (issue 13) on real images: a photo unlike the training photos is called unfamiliar, separately
from uncertain (part 1); photos filed in the wrong folder are found and the owner's decision is kept
and respected (part 2); the learning curve says which class more photos would help (part 3); the
nearest training photos explain a prediction (part 4)."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from core.data import catalog, notes
from core.deploy.predict import Predictor
from core.evaluate import learning_curve, metrics
from core.evaluate.words import more_photos_sentence
from core.present import report, words
from core.runs.folder import RunDir
from core.trust import familiar
from pages.common import escape_markdown as md

from helpers import chart_data, elpv, house_drawing, open_page, run_cli
from helpers import run_state as _state


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
    assert flagged <= 0.25  # in-domain photos mostly familiar (1 in 100 by construction, on a tiny run)


def test_the_threshold_flags_one_in_a_hundred_of_the_validation_and_left_out_training_photos(trained_run):
    runs, run_id, _ = trained_run
    run = RunDir(runs / run_id)
    index, manifest = familiar.load(run.path), run.manifest().manifest
    val_files = [run.card().data_root / p for p in manifest[manifest["split"] == "val"]["path"]]
    val = np.array([r["distance"] for r in Predictor.from_run(run.path).predict(val_files)])
    sims = index.train @ index.train.T
    np.fill_diagonal(sims, -1.0)
    left_out = 1.0 - sims.max(axis=1)  # each training photo against the others
    assert index.threshold == pytest.approx(np.quantile(np.r_[val, left_out], 0.99), abs=5e-3)
    assert familiar.flag_rate(run) == pytest.approx(0.01)
    assert words.flag_rate_words(0.01) == "about 1 in 100 ordinary photos is flagged as unfamiliar"


def test_far_out_of_domain_photos_are_unfamiliar_not_just_uncertain(trained_run):
    runs, run_id, _ = trained_run
    predictor = Predictor.from_run(runs / run_id)
    photos = [house_drawing(), *(Image.fromarray(a) for a in load_sample_images().images)]
    strangers = photos + [p.convert("L").convert("RGB") for p in photos]  # in colour and in grey
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
    assert any(c.value == "About 1 in 100 ordinary photos is flagged as unfamiliar." for c in at.caption)
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
    gallery = next(i for i in at.get("image") if len(i.proto.imgs) == len(result["examples"]))
    assert [im.caption for im in gallery.proto.imgs] == [e["label"] for e in result["examples"]]  # in the run's order


# ---------------------------------------------------------------------- part 2: the label check
def photo_crops(n: int) -> list[Image.Image]:
    """Crops of scikit-learn's two sample photos (a temple, a flower): nothing like a solar cell."""
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(3)
    return [photos[i % 2].crop((x, y, x + 300, y + 300))
            for i, (x, y) in enumerate(zip(rng.integers(0, 330, n), rng.integers(0, 120, n)))]


@pytest.fixture(scope="module")
def mislabelled(tmp_path_factory) -> tuple[Path, set[str]]:
    """Two classes anyone can tell apart, real solar cells and real photo crops, 18 each, with 3
    photos filed in the wrong folder. Returns (folder, the wrong files)."""
    root = tmp_path_factory.mktemp("mislabelled")
    (root / "cells").mkdir()
    (root / "photos").mkdir()
    cells = sorted((elpv() / "defect_000").glob("*.png"))[:20]
    for cell in cells[:18]:
        shutil.copy(cell, root / "cells" / cell.name)
    crops = photo_crops(19)
    for i, crop in enumerate(crops[:18]):
        crop.save(root / "photos" / f"photo_{i:02d}.png")
    wrong = {f"photos/{cells[18].name}", f"photos/{cells[19].name}", "cells/photo_99.png"}
    shutil.copy(cells[18], root / "photos" / cells[18].name)
    shutil.copy(cells[19], root / "photos" / cells[19].name)
    crops[18].save(root / "cells" / "photo_99.png")
    return root, wrong


def test_the_label_checks_cache_key_reads_every_row_as_the_plain_join_did(mislabelled, elpv_small):
    """The key hashes the rows built by Arrow; a label check saved under the older Python join stays found."""
    from core.trust import audit

    def plain(items: pd.DataFrame) -> bytes:
        return "".join("\0".join(row) for row in zip(items["path"], items["label"], items["sha1"])).encode()

    named = pd.DataFrame({"path": ["défaut/ü 1.png", "ok/b.jpg"], "label": ["défaut", "ok"], "sha1": ["ab", "cd"]})
    for items in (catalog.scan(elpv_small).items, catalog.scan(mislabelled[0]).items.iloc[3:17], named, named.iloc[:0]):
        assert bytes(audit._rows_bytes(items[["path", "label", "sha1"]])) == plain(items)


@pytest.mark.slow
def test_the_label_check_ranks_the_misfiled_photos_first_in_its_csv(mislabelled, tmp_path):
    root, wrong = mislabelled
    result = run_cli("audit", str(root), "--csv", str(tmp_path / "audit.csv"))
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_csv(tmp_path / "audit.csv", dtype=str)
    assert list(table.columns[:4]) == ["file", "given", "suggested", "score"]
    assert len(table) == 39 and set(table["flagged"]) <= {"true", "false"}
    assert set(table["file"].head(3)) == wrong, table.head(5)
    assert (table["flagged"].head(3) == "true").all()
    first = table.iloc[0]
    assert first["suggested"] != first["given"] and first["suggested"] in {"cells", "photos"}
    scores = table["score"].astype(float)
    assert scores.head(3).min() > scores.iloc[3:].max()  # most likely mislabelled first
    assert "look labelled wrong" in result.stdout


def test_the_owners_corrections_are_kept_in_graft_and_the_split_respects_them(mislabelled):
    root, wrong = mislabelled
    cell_in_photos, other_cell_in_photos = sorted(w for w in wrong if w.startswith("photos/"))
    before = catalog.scan(root)
    sha = dict(zip(before.items["path"], before.items["sha1"]))
    notes.save_corrections(root, {
        cell_in_photos: {"action": "relabel", "label": "cells", "sha1": sha[cell_in_photos]},
        other_cell_in_photos: {"action": "exclude", "sha1": sha[other_cell_in_photos]}})
    try:
        assert (root / ".graft" / "corrections.json").is_file()
        assert (root / cell_in_photos).is_file() and (root / other_cell_in_photos).is_file()  # nothing moved
        index = catalog.scan(root)
        labels = dict(zip(index.items["path"], index.items["label"]))
        assert labels[cell_in_photos] == "cells" and other_cell_in_photos not in labels
        skipped = index.skipped.set_index("path")
        assert skipped.loc[other_cell_in_photos, "reason"] == "left out by the owner"
        manifest = catalog.split(index, min_per_class=2).manifest
        assert other_cell_in_photos not in set(manifest["path"])
        assert manifest.set_index("path").loc[cell_in_photos, "label"] == "cells"
        assert catalog.signature(root) != () and index.counts()["cells"] == 20
    finally:
        notes.save_corrections(root, {cell_in_photos: None, other_cell_in_photos: None})
    assert len(catalog.scan(root).items) == 39


def test_the_dataset_page_shows_the_gallery_and_keeps_the_owners_choice(mislabelled, tmp_path):
    root, wrong = mislabelled
    at = open_page("pages/dataset.py", str(root), str(tmp_path / "runs"))
    check = [b for b in at.button if b.key == "run_audit"]
    if check:  # the CLI test may have left the audit in the cache
        check[0].click().run()
    assert not at.exception, at.exception
    assert any("look labelled wrong" in m.value for m in at.markdown)
    assert sum("filed as" in m.value for m in at.markdown) >= 3
    radios = [r for r in at.radio if r.key and r.key.startswith("audit_")]
    radios[0].set_value("exclude")
    next(b for b in at.button if "Save these decisions" in str(b.label)).click().run()
    assert not at.exception, at.exception
    try:
        kept = notes.load_corrections(root)
        assert len(kept) == 1 and next(iter(kept.values()))["action"] == "exclude" and next(iter(kept)) in wrong
        assert any("Decisions kept for this dataset (1)" in e.label for e in at.expander)
    finally:
        notes.save_corrections(root, {p: None for p in notes.load_corrections(root)})


# ---------------------------------------------------------------------- part 3: the learning curve
@pytest.mark.slow
def test_the_learning_curve_from_the_cli_and_on_results(trained_run, elpv_small):
    runs, run_id, _ = trained_run
    result = run_cli("learning-curve", run_id, "--runs", str(runs))
    assert result.returncode == 0, result.stderr[-2000:]
    curve = learning_curve.load(runs / run_id)
    sizes = [p["train_images"] for p in curve["points"]]
    assert [p["fraction"] for p in curve["points"]] == [0.1, 0.25, 0.5, 1.0] and sizes == sorted(sizes)
    assert sizes[-1] == int((RunDir(runs / run_id).manifest().manifest["split"] == "train").sum())
    assert set(curve["points"][0]["recall"]) == set(RunDir(runs / run_id).card().labels)
    assert all(0.0 <= p["accuracy"] <= 1.0 for p in curve["points"])
    assert curve["sentence"] in result.stdout and "training photos" in result.stdout
    for p in curve["points"]:  # the CLI's table row: training photos, share, accuracy
        assert f"{p['train_images']} {p['fraction']:.0%} {p['accuracy']:.3f}" in " ".join(result.stdout.split())
    state, _, _ = _state(trained_run)
    at = open_page("pages/results.py", str(elpv_small), str(runs), results_section="More photos?", **state)
    assert not at.exception, at.exception
    assert any(md(curve["sentence"]) in m.value for m in at.markdown)
    drawn = next(f for f in chart_data(at) if "training photos" in f.columns)  # the learning curve's points
    overall = drawn[drawn["line"] == "all classes (accuracy)"].sort_values("training photos")
    assert overall["training photos"].tolist() == sizes
    assert overall["value"].tolist() == pytest.approx([p["accuracy"] for p in curve["points"]])
    for label in curve["points"][0]["recall"]:
        line = drawn[drawn["line"] == label].sort_values("training photos")
        assert line["value"].tolist() == pytest.approx([p["recall"][label] for p in curve["points"]])
    html = report.build(runs / run_id)
    assert "Would more photos help?" in html and "looks most like" in html  # the report carries both


def test_the_learning_curve_sentence_tells_rising_levelled_and_hard_classes_apart():
    def point(n, **recall):
        return {"train_images": n, "accuracy": 0.0, "recall": recall}

    points = [point(50, a=0.60, b=0.95, c=0.10), point(100, a=0.75, b=0.955, c=0.11)]
    text = more_photos_sentence(points, ["a", "b", "c"], {"a": "scratch"})
    assert text.startswith("More photos of scratch would help most: the share of its test photos found rose 15 points")
    assert "b has levelled off" in text and "c stays hard (11% of its test photos found)" in text
    flat = more_photos_sentence([point(50, a=0.9, b=0.9), point(100, a=0.9, b=0.91)], ["a", "b"])
    assert flat.startswith("More photos of the same kind would help little")


# ---------------------------------------------------------------------- another folder
@pytest.mark.slow
def test_scoring_another_folder_says_how_many_photos_look_unfamiliar(trained_run, tmp_path):
    runs, run_id, _ = trained_run
    folder = tmp_path / "other_line"
    (folder / "defect_000").mkdir(parents=True)
    for cell in sorted((elpv() / "defect_000").glob("*.png"))[-6:]:
        shutil.copy(cell, folder / "defect_000" / cell.name)
    for i, crop in enumerate(photo_crops(3)):
        crop.save(folder / "defect_000" / f"photo_{i}.png")
    result = metrics.check_folder(runs / run_id, folder)
    assert result["n"] == 9 and result["unfamiliar"] >= 3 and result["unfamiliar_share"] == result["unfamiliar"] / 9
    answers = Predictor.from_run(runs / run_id).predict(sorted((folder / "defect_000").iterdir()))
    assert result["unfamiliar"] == sum(r["unfamiliar"] for r in answers)  # the run's detector, photo by photo
    assert all(r["unfamiliar"] for r, f in zip(answers, sorted((folder / "defect_000").iterdir()))
               if f.name.startswith("photo_"))  # the three photo crops among them
    assert words.unfamiliar_sentence(result).startswith(f"{result['unfamiliar']} of 9 photos")
