"""The dataset map: a 2-D projection (UMAP) of a real run's cached features, drawn by `graft map --png`
and on the Dataset page with hover thumbnails; a box selection shows the photos in it. The test run
draws it once through the CLI (one UMAP compile); the page reads the places the run keeps."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.evaluate.dataset_map import MAP_FILE, MARKS, dataset_map, stratified_sample
from core.present.map_chart import map_frame, selected
from core.runs.folder import RunDir

from helpers import chart_data, open_page, run_cli


def test_a_large_dataset_is_sampled_by_class_keeping_every_marked_photo():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"label": rng.choice(["a", "b", "c"], size=12_000, p=[0.7, 0.2, 0.1])})
    marked = rng.random(12_000) < 0.02
    rows = stratified_sample(frame, marked, limit=5000)
    assert 4900 <= len(rows) <= 5100 and len(set(rows)) == len(rows)
    assert set(np.flatnonzero(marked)) <= set(rows)  # every marked photo is drawn
    drawn = frame.iloc[rows]["label"].value_counts(normalize=True)
    assert drawn["a"] == pytest.approx(0.7, abs=0.03) and drawn["c"] == pytest.approx(0.1, abs=0.03)
    assert len(stratified_sample(frame.head(300), marked[:300], limit=5000)) == 300  # small: every photo


@pytest.fixture(scope="module")
def drawn(trained_run, tmp_path_factory):
    """`graft map RUN --png` on the shared trained run: (runs, run id, png path, CLI result)."""
    runs, run_id, _ = trained_run
    png = tmp_path_factory.mktemp("map") / "map.png"
    result = run_cli("map", run_id, "--runs", str(runs), "--png", str(png))
    return runs, run_id, png, result


@pytest.mark.slow
def test_graft_map_writes_the_png_and_keeps_the_places_in_the_run(drawn):
    runs, run_id, png, result = drawn
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 800 and image.height > 600
        colours = np.asarray(image.convert("RGB").resize((200, 150))).reshape(-1, 3)
        assert len(np.unique(colours, axis=0)) > 20  # dots, not a blank frame
    run = RunDir(runs / run_id)
    places = pd.read_csv(run.file(MAP_FILE))
    manifest = run.manifest().manifest
    assert set(places["path"]) == set(manifest["path"]) and np.isfinite(places[["x", "y"]].to_numpy()).all()
    assert places[["x", "y"]].std().min() > 0  # spread on the plane
    stamp = run.file(MAP_FILE).stat().st_mtime_ns
    found = dataset_map(run)  # computed once per run: read back, not recomputed
    assert run.file(MAP_FILE).stat().st_mtime_ns == stamp and found.total == len(manifest) and not found.sampled
    wrong = run.predictions().query("correct == False")["path"]
    marks = found.points.set_index("path")["mark"]
    assert (marks[wrong] == MARKS[1]).all() and (marks == MARKS[1]).sum() == len(wrong)
    assert f"{len(manifest)} of {len(manifest)} photos drawn (UMAP)" in result.stdout


@pytest.mark.slow
def test_the_dataset_page_draws_the_map_with_thumbnails_and_a_box_selects_photos(drawn, elpv_small):
    runs, run_id, _, result = drawn
    assert result.returncode == 0, result.stderr[-2000:]
    at = open_page("pages/dataset.py", str(elpv_small), str(runs), current_run=run_id)
    assert not at.exception, at.exception
    points = next(f for f in chart_data(at) if {"x", "y", "image"} <= set(f.columns))
    assert len(points) == len(RunDir(runs / run_id).manifest().manifest)
    assert points["image"].str.startswith("data:image/jpeg;base64,").all()
    assert set(points["mark"]) >= {MARKS[0]} and any("Drag a box" in c.value for c in at.caption)
    frame = map_frame(dataset_map(runs / run_id), {})
    x0, x1 = frame["x"].quantile([0.0, 0.3])
    box = {"box": {"x": [x1, x0], "y": [frame["y"].min(), frame["y"].max()]}}  # as Vega-Lite reports a drag
    inside = selected(frame, box)
    assert len(inside) == (frame["x"] <= x1).sum() and len(inside) > 0
    assert selected(frame, {"box": {}}).empty


@pytest.mark.slow
@pytest.mark.browser
def test_the_map_in_chromium_shows_a_thumbnail_on_hover_and_a_gallery_for_a_box(drawn, elpv_small, tmp_path):
    import io
    import json
    import os
    import time

    from playwright.sync_api import sync_playwright

    from helpers import chromium, dashboard

    runs, run_id, _, result = drawn
    assert result.returncode == 0, result.stderr[-2000:]
    home = tmp_path / "home"
    home.mkdir()
    (home / "settings.json").write_text(json.dumps({"dataset": str(elpv_small), "runs": str(runs)}))
    env = {**os.environ, "GRAFT_HOME": str(home), "GRAFT_RUNS": str(runs)}
    env.pop("GRAFT_SAMPLE", None)
    with dashboard(env, tmp_path / "dashboard.log") as (port, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/dataset")
        page.get_by_role("heading", name="Map").first.wait_for(timeout=180_000)
        chart = page.locator("[data-testid='stVegaLiteChart']").last
        chart.wait_for(timeout=120_000)
        for _ in range(20):  # the page may still grow above the chart: scroll until it stays in view
            chart.evaluate("e => e.scrollIntoView({block: 'center'})")
            time.sleep(1)
            box = chart.bounding_box()
            if 0 <= box["y"] and box["y"] + box["height"] <= 900:
                break
        pixels = np.asarray(Image.open(io.BytesIO(chart.screenshot())).convert("RGB")).astype(int)
        coloured = pixels.max(axis=2) - pixels.min(axis=2) > 60  # the dots (the legend sits on the right)
        ys, xs = np.nonzero(coloured[:, : int(pixels.shape[1] * 0.75)])
        assert len(xs), "no dot drawn"
        tip, shown = page.locator("#vg-tooltip-element"), None
        scale = box["width"] / pixels.shape[1]
        for i in np.random.default_rng(0).choice(len(xs), size=min(40, len(xs)), replace=False):
            page.mouse.move(box["x"] + xs[i] * scale, box["y"] + ys[i] * scale)
            page.wait_for_timeout(150)
            if tip.count() and tip.is_visible() and tip.locator("img").count():
                shown = tip.inner_html()
                break
        assert shown and 'src="data:image/jpeg;base64,' in shown and "filed as" in shown
        page.mouse.move(box["x"] + 5, box["y"] + 5)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.95, steps=10)
        page.mouse.up()
        page.get_by_text("photos selected").first.wait_for(timeout=60_000)
        time.sleep(2)
        assert page.locator("[data-testid='stImage']").count() > 0
        assert page.get_by_text("encountered an error").count() == 0
        browser.close()
