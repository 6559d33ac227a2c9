"""Results page, report, Grad-CAM, Predict page and export — on a real trained run."""
from __future__ import annotations

import ast
import html.parser
import io
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from core.base.storage import read_json
from core.data.images import load_rgb
from core.deploy.predict import Predictor, extract_zip
from core.evaluate.metrics import evaluate_run
from core.present.words import chance
from core.runs.folder import RunDir
from core.trust.explain import gradcam
from pages.common import escape_markdown as md

from helpers import chart_data, open_page, open_section, run_cli
from helpers import run_state as _state


def test_results_page_numbers_equal_core_evaluate(trained_run, elpv_small):
    state, runs, run_id = _state(trained_run)
    expected = evaluate_run(runs / run_id)
    at = open_page("pages/results.py", str(elpv_small), str(runs), **state)
    assert not at.exception, at.exception
    shown = {m.label: m.value for m in at.metric}
    assert shown["Accuracy"] == f"{expected['accuracy']:.0%}"  # one format for accuracies: whole percents
    assert shown["Balanced accuracy"] == f"{expected['balanced_accuracy']:.0%}"
    assert shown["Always one class"] == f"{expected['baseline']['accuracy']:.0%}"
    assert shown["Test images"] == str(expected["n"])
    headline = " ".join(m.value for m in at.markdown)
    assert f"Right on {expected['correct']} of {expected['n']} test images" in headline
    assert f"always says {expected['baseline']['class']}" in headline
    assert np.array(expected["confusion_matrix"]).sum() == expected["n"]
    cells = next(f for f in chart_data(at) if {"true", "predicted", "count"} <= set(f.columns))  # the heatmap
    drawn = cells.pivot(index="true", columns="predicted", values="count").loc[expected["labels"], expected["labels"]]
    assert drawn.to_numpy().tolist() == expected["confusion_matrix"]
    per_class = next(df.value for df in at.dataframe if "training images" in df.value.columns)
    for column, scale in (("precision", 100), ("accuracy", 100), ("f1", 1)):  # shares shown in percent
        assert per_class[column].tolist() == pytest.approx([p[column] * scale for p in expected["per_class"]])
    assert "recall" not in per_class.columns  # the same figure as accuracy, shown once
    assert per_class["images"].tolist() == [p["support"] for p in expected["per_class"]]
    assert per_class["right"].tolist() == [p["correct"] for p in expected["per_class"]]
    manifest = pd.read_csv(runs / run_id / "manifest.csv")
    counts = manifest[manifest["split"] == "train"]["label"].value_counts().to_dict()
    assert dict(zip(per_class["class"], per_class["training images"])) == counts
    preds = pd.read_csv(runs / run_id / "predictions.csv")
    wrong = set(preds.loc[~preds["correct"], "path"])
    assert "mistake_pick" not in {s.key for s in at.selectbox}  # the Mistakes tab is computed when opened
    open_section(at, "Mistakes")
    assert not at.exception, at.exception
    picker = at.selectbox(key="mistake_pick")
    assert set(picker.options) == wrong
    assert wrong  # a real run on ELPV makes mistakes to show


@pytest.mark.slow
def test_report_is_self_contained_html_with_the_headline(trained_run, tmp_path):
    _, runs, run_id = _state(trained_run)
    result = run_cli("report", run_id, str(tmp_path / "r.html"), "--runs", str(runs))
    assert result.returncode == 0, result.stderr[-2000:]
    text = (tmp_path / "r.html").read_text()
    html.parser.HTMLParser().feed(text)  # parses
    assert text.startswith("<!doctype html>") and text.rstrip().endswith("</html>")
    metrics = read_json(runs / run_id / "metrics.json")
    assert f"{metrics['accuracy']:.0%}" in text
    assert f"Right on {metrics['correct']} of {metrics['n']} test images" in text  # the headline in plain words
    assert "<svg" in text and "data:image/jpeg;base64," in text
    # the per-class table in the Results page's words and whole percents, not 0.906 under 'support'
    first = metrics["per_class"][0]
    row = f"<td>{first['class']}</td><td>{first['support']}</td><td>{first['correct']}</td><td>{first['accuracy']:.0%}</td>"
    assert row in text and "<th>training images</th>" in text and "<th>support</th>" not in text
    assert "Lite0 ·" in text  # the model as people name it, not efficientnet_lite0
    for needle in ('src="http', "src='http", '<script src', '<link rel="stylesheet" href="http'):
        assert needle not in text


def test_gradcam_on_a_real_lite0_run(trained_run, elpv_small):
    _, runs, run_id = _state(trained_run)
    model, card = RunDir(runs / run_id).load_model()
    image = load_rgb(sorted(elpv_small.rglob("*.png"))[0]).resize((320, 280))
    heat, target, probs = gradcam(model, image, card.preprocessing)
    assert heat.shape == (280, 320)
    assert heat.min() >= 0 and heat.max() <= 1 and heat.std() > 0.01
    assert 0 <= target < len(card.labels) and abs(probs.sum() - 1) < 1e-5
    expected = Predictor.from_run(runs / run_id).probabilities([image])[0].numpy()  # the run's own answer
    assert np.abs(probs - expected).max() < 1e-4 and target == int(expected.argmax())


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_predict_page_shows_the_predictors_answer_and_refuses_bad_files(trained_run, elpv_small):
    state, runs, run_id = _state(trained_run)
    good = sorted(elpv_small.rglob("*.png"))[0]
    china = Image.fromarray(load_sample_images().images[0])
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")
    truncated = good.read_bytes()[:2000]
    at = open_page("pages/predict.py", str(elpv_small), str(runs), **{**state, "threshold": 0.0})
    at.file_uploader(key="upload_images").set_value([
        ("cell.png", good.read_bytes(), "image/png"), ("china.png", _png(china), "image/png"),
        ("empty.png", b"", "image/png"), ("notes.png", b"just text", "image/png"),
        ("bomb.png", bomb.getvalue(), "image/png"), ("cut.png", truncated, "image/png")]).run()
    assert not at.exception, at.exception
    errors = " ".join(e.value for e in at.error)
    assert "empty.png: zero bytes" in errors and "notes.png: not an image" in errors and "bomb.png: too large" in errors
    assert "cut.png: truncated" in errors
    predictor = Predictor.from_run(runs / run_id)
    texts = " ".join(m.value for m in at.markdown)
    bars = [f for f in chart_data(at) if list(f.columns) == ["class", "probability"]]
    assert len(bars) == 2  # one top-k chart per good image, none for the bad ones
    for (name, image), shown in zip((("cell.png", load_rgb(good)), ("china.png", china)), bars):
        expected = predictor.predict([image], top_k=3)[0]
        if expected["unfamiliar"]:  # a photo of a Chinese palace is nothing like a solar cell
            assert f"**{md(name)}**: unfamiliar — this does not look like the training photos" in texts
        else:
            assert f"**{md(name)}**: {md(expected['label'])} ({md(chance(expected['confidence']))})" in texts
        assert shown["class"].tolist() == [c for c, _ in expected["top"]]
        assert shown["probability"].tolist() == pytest.approx([p for _, p in expected["top"]], abs=1e-5)
    assert predictor.predict([china])[0]["unfamiliar"] and not predictor.predict([good])[0]["unfamiliar"]
    at.slider(key="threshold").set_value(1.0).run()
    assert "uncertain — looks like the training photos, but between classes" in " ".join(m.value for m in at.markdown)


def test_batch_zip_through_the_page_refuses_zip_slip_and_predicts_the_rest(trained_run, elpv_small, tmp_path,
                                                                         monkeypatch):
    state, runs, run_id = _state(trained_run)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # pick up the new TMPDIR
    goods = sorted(elpv_small.rglob("*.png"))[:3]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for f in goods:
            zf.writestr(f"cells/{f.name}", f.read_bytes())
        zf.writestr("../../escaped.png", goods[0].read_bytes())
    at = open_page("pages/predict.py", str(elpv_small), str(runs), **state)
    at.file_uploader(key="upload_zip").set_value(("batch.zip", archive.getvalue(), "application/zip")).run()
    assert not at.exception, at.exception
    assert any("../../escaped.png" in w.value and "zip-slip" in w.value for w in at.warning)
    table = next(df.value for df in at.dataframe if "verdict" in df.value.columns)
    expected = Predictor.from_run(runs / run_id).predict(goods)
    assert table["file"].tolist() == [f.name for f in goods]
    assert table["predicted"].tolist() == [r["label"] for r in expected]
    # shown as whole percents rounded down, so a 0.9999 never reads as a certain 100 %
    assert table["confidence"].tolist() == pytest.approx([np.floor(r["confidence"] * 100) for r in expected])
    assert not list(tmp_path.rglob("escaped.png"))


def test_zip_slip_writes_nothing_outside(tmp_path, elpv_small):
    archive = io.BytesIO()
    good = sorted(elpv_small.rglob("*.png"))[0].read_bytes()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/cell.png", good)
        zf.writestr("../evil.png", good)
        zf.writestr("/abs/evil2.png", good)
        zf.writestr("readme.txt", "hello")
    dest = tmp_path / "upload"
    extracted, refused = extract_zip(io.BytesIO(archive.getvalue()), dest)
    assert extracted == [dest.resolve() / "ok" / "cell.png"]
    assert {name for name, _ in refused} == {"../evil.png", "/abs/evil2.png", "readme.txt"}
    assert not (tmp_path / "evil.png").exists() and not list(tmp_path.glob("**/evil2.png"))


@pytest.mark.slow
def test_export_parity_and_a_fresh_process_with_only_the_loader(trained_run, elpv_small, tmp_path):
    _, runs, run_id = _state(trained_run)
    out = tmp_path / "export"
    result = run_cli("export", run_id, str(out), "--runs", str(runs))
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    card = read_json(out / "model.json")
    for fmt in ("torchscript", "onnx"):
        assert card["parity"][fmt]["ok"] and card["parity"][fmt]["max_abs_diff"] <= 1e-4
    run_card = RunDir(runs / run_id).card()
    assert card["labels"] == run_card.labels and card["run"] == run_id and card["version"]
    own = read_json(runs / run_id / "model.json")["preprocessing"]  # the run's own, plus the loader's steps
    assert {k: card["preprocessing"][k] for k in own} == own
    val = RunDir(runs / run_id).manifest().manifest.query("split == 'val'")
    assert card["parity"]["images"] == min(32, len(val))  # the validation photos, as the CLI prints
    assert f"on {card['parity']['images']} validation images" in result.stdout
    from core.deploy.export import export_zip

    names = set(zipfile.ZipFile(io.BytesIO(export_zip(out))).namelist())  # the dashboard's download
    assert {"model.onnx", "model.ts", "model.json", "graft_predict.py"} <= names
    assert "familiar.npy" in names and card["familiarity"]["threshold"] > 0  # the unfamiliar-photo detector too
    from helpers import house_drawing

    house_drawing().save(tmp_path / "house.png")
    files = [str(p) for p in sorted(elpv_small.rglob("*.png"))[:12]] + [str(tmp_path / "house.png")]
    tree = ast.parse((out / "graft_predict.py").read_text())
    loader_imports = ({a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
                      | {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module})
    assert "core" not in loader_imports and {"numpy", "PIL"} <= loader_imports  # it needs no Graft to run
    fresh = subprocess.run([sys.executable, "graft_predict.py", ".", *files], cwd=out, capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    standalone = pd.read_csv(io.StringIO(fresh.stdout), sep="\t", dtype=str)
    assert list(standalone.columns[:5]) == ["file", "label", "prob", "uncertain", "unfamiliar"]
    from_run = Predictor.from_run(runs / run_id).predict(files)
    expected = [r["label"] for r in from_run]
    assert standalone["label"].tolist() == expected
    assert standalone["unfamiliar"].tolist() == ["true" if r["unfamiliar"] else "false" for r in from_run]
    assert standalone["unfamiliar"].iloc[-1] == "true"  # the drawing, as the run itself says
    via_cli = run_cli("predict", str(out), *files, "--csv", str(tmp_path / "p.csv"))
    assert via_cli.returncode == 0, via_cli.stderr[-2000:]
    exported = pd.read_csv(tmp_path / "p.csv", dtype={"unfamiliar": str})
    assert exported["label"].tolist() == expected
    assert exported["unfamiliar"].tolist() == standalone["unfamiliar"].tolist()
