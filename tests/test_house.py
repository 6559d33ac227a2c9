"""House rules of the code: every error a user can act on is a GraftError, the run store builds SQL
from known column names only, and the sentences a stakeholder reads come from the words modules."""
from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
from torch import nn

from core.base.errors import BadInput, GraftError
from core.data.images import ImageError, open_image
from core.runs.store import RUN_COLUMNS, RunStore
from core.trust.explain import NotSupported, last_spatial_module

from helpers import chart_data


# ------------------------------------------------------------------ errors
def test_an_unusable_image_is_a_graft_error_with_its_reason(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(GraftError) as caught:
        open_image(empty)
    assert isinstance(caught.value, ImageError) and isinstance(caught.value, BadInput)
    assert caught.value.reason == "zero bytes" and str(caught.value) == f"{empty}: zero bytes"


class _NoMap(nn.Module):
    """A real model whose backbone has no spatial feature map (what a ViT gives Grad-CAM)."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))

    def forward(self, x):
        return self.backbone(x)


def test_a_model_grad_cam_cannot_explain_is_a_graft_error():
    with pytest.raises(GraftError, match="Grad-CAM needs a convolutional backbone") as caught:
        last_spatial_module(_NoMap(), 8)
    assert isinstance(caught.value, NotSupported)


# ------------------------------------------------------------------ the run store
def test_run_update_sets_known_columns_and_refuses_any_other_name(tmp_path):
    store = RunStore(tmp_path / "runs")
    run_id = store.create({"backbone": "lite0", "freeze": "head", "epochs": 2}, name="first")
    store.update(run_id, status="running", best_val_acc=0.75, config={"epochs": 3})
    run = store.get(run_id)
    assert (run["status"], run["best_val_acc"], run["config"]) == ("running", 0.75, {"epochs": 3})
    hostile = "name = 'x', status"  # a key that would rewrite other columns if pasted into SQL
    with pytest.raises(ValueError, match="not a run column"):
        store.update(run_id, **{hostile: "completed"})
    with pytest.raises(ValueError, match="not a run column: id"):
        store.update(run_id, id="another")
    with pytest.raises(ValueError, match="not a run column: colour"):
        store.update(run_id, name="kept?", colour="red")  # nothing of a refused update is written
    run = store.get(run_id)
    assert (run["name"], run["status"]) == ("first", "running")


def test_the_update_whitelist_is_the_runs_table(tmp_path):
    store = RunStore(tmp_path / "runs")
    with sqlite3.connect(store.db_path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    assert RUN_COLUMNS == columns - {"id"}


# ------------------------------------------------------------------ charts
def _draw_batch_loss(steps: int) -> None:
    import numpy as np
    import pandas as pd
    import streamlit as st

    from core.present import charts
    from pages import common

    losses = pd.DataFrame({"step": np.arange(1, steps + 1), "loss": np.linspace(2.0, 0.2, steps)})
    common.chart(st, charts.batch_loss, losses, key="losses")


def test_a_chart_reaches_the_page_with_every_row_as_a_dataset():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_draw_batch_loss, args=(6000,), default_timeout=60).run()
    assert not at.exception
    (frame,) = chart_data(at)  # the layers share one dataset
    assert list(frame.columns) == ["step", "loss", "smoothed"] and len(frame) == 6000
    expected = pd.Series(np.linspace(2.0, 0.2, 6000)).ewm(alpha=0.1).mean()
    assert np.allclose(frame["smoothed"], expected)


def test_a_chart_spec_is_altairs_own_without_its_theme():
    import altair as alt

    from core.present import charts
    from pages.common import vega_lite_spec

    spec = vega_lite_spec(charts.top_k_bars([("cracked", 0.7), ("intact", 0.3)]))
    assert "config" not in vega_lite_spec(alt.Chart(pd.DataFrame({"a": [1]})).mark_bar().encode(x="a:Q"))
    assert "view" not in spec["config"] and spec["config"]["axis"]["labelFontSize"] >= 14  # its own: projector type
    assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
    (rows,) = spec["datasets"].values()
    assert spec["data"] == {"name": next(iter(spec["datasets"]))}
    assert rows == [{"class": "cracked", "probability": 0.7}, {"class": "intact", "probability": 0.3}]
    styled = vega_lite_spec(charts.top_k_bars([("cracked", 1.0)]).configure_view(stroke=None))
    assert styled["config"]["view"]["stroke"] is None  # a chart's own configuration is kept


# ------------------------------------------------------------------ the model card
def test_the_export_card_comes_from_the_run_card_and_drives_the_standalone_loader(elpv_dir):
    from PIL import Image

    from core.deploy import export_loader
    from core.evaluate.decision import Decision
    from core.models.backbones import preprocessing_for
    from core.models.preprocess import eval_transform
    from core.runs.folder import EXPORT_FORMAT, ModelCard

    prep = preprocessing_for("efficientnet_lite0")
    card = ModelCard("efficientnet_lite0", "linear", "head", ["intact", "cracked"], prep, {"data": str(elpv_dir)},
                     metrics={"accuracy": 0.8}, uncertainty_threshold=0.6)
    rule = Decision(["cracked"], 0.3, labels=card.labels)
    exported = card.to_export("run-1", {"onnx": "model.onnx"}, {"images": 4}, decision=rule.to_dict(),
                              familiarity={"file": "familiar.npy", "threshold": 0.2, "method": "cosine"})
    assert exported["format"] == EXPORT_FORMAT and exported["run"] == "run-1"
    assert (exported["labels"], exported["files"], exported["uncertainty_threshold"]) == (
        ["intact", "cracked"], {"onnx": "model.onnx"}, 0.6)
    assert exported["familiarity"]["file"] == "familiar.npy" and exported["familiarity"]["output"] == "features"
    assert export_loader.decide({"intact": 0.6, "cracked": 0.4}, exported["decision"]) == "inspect"
    image = Image.open(next(elpv_dir.rglob("*.png"))).convert("RGB")
    standalone = export_loader.preprocess(image, exported["preprocessing"])
    assert np.abs(standalone - eval_transform(prep)(image).numpy()).max() <= 1e-4
    assert ModelCard.from_dict(card.to_dict()) == card  # the run's own card reads back as it was written
    assert card.to_export("run-1", {}, {})["familiarity"] is None


# ------------------------------------------------------------------ the words
def test_figures_and_accuracy_read_the_same_everywhere():
    from core.present import words

    assert [words.percent(v) for v in (0.0, 0.416, 1.0)] == ["0%", "42%", "100%"]
    assert words.interval_words(77, 100) == "68%–84%"
    assert words.count_of(12, 40, 0.3) == "12 of 40 (30%)"
    metrics = {"n": 100, "correct": 77, "accuracy": 0.77,
               "baseline": {"class": "intact", "correct": 58, "n": 100, "accuracy": 0.58}}
    assert words.accuracy_sentence(metrics) == ("Right on 77 of 100 test images (77%; 95 % interval 68%–84%). "
                                                "A model that always says intact would be right on 58 of 100 (58%).")
    assert words.accuracy_sentence({"n": 10, "accuracy": 0.5}, "").startswith("Right on 5 of 10 images (50%;")
    assert words.measured_on("validation", False) == ("Measured on the run's held-out validation images, never used in "
                                                      "training (this dataset has no test split).")
    assert words.run_figures(0.81, None) == "validation 81%" and words.run_figures(None, 0.7) == \
        "no validation figure · test 70%"


def test_two_runs_are_compared_in_words_that_say_whether_the_difference_is_noise():
    from core.present import words

    noise = words.difference_sentence("A", "B", {"only_a": 6, "only_b": 4, "p_value": 0.754})
    assert noise == ("A and B differ on 10 images (6 vs 4): within noise (p = 0.75); do not choose between them on "
                     "this figure.")
    real = words.difference_sentence("A", "B", {"only_a": 2, "only_b": 15, "p_value": 0.0023})
    assert real == "B is better beyond noise: right on 15 images the other gets wrong, against 2 (p = 0.002)."


def test_what_the_model_says_about_a_photo_keeps_its_two_warnings_apart():
    from core.evaluate.decision import Decision
    from core.present import words

    names = {"defect_100": "crack"}
    sure = {"label": "defect_100", "confidence": 0.997}
    assert words.verdict(sure, names, 0.6) == "crack (>99%)"
    assert words.verdict({**sure, "confidence": 0.41}, names, 0.6) == (
        "uncertain — looks like the training photos, but between classes (best guess crack, 41%)")
    assert words.verdict({**sure, "unfamiliar": True}, names, 0.6).startswith(
        "unfamiliar — this does not look like the training photos, so no label can be trusted (the closest class "
        "would be crack, >99%)")
    rule = Decision(["defect_100"], 0.3, labels=["defect_000", "defect_100"])
    assert words.decision_rule(rule, names) == ("Pass or inspect: images go to inspection when the chance of crack is "
                                                "at least 30% (set on the Results page).")
    assert words.decision_sentence(rule, {"defect_000": 0.6, "defect_100": 0.4}, names) == \
        "send to inspection (chance of crack: 40%, at or above 30%)"
    assert words.decision_sentence(rule, {"defect_000": 0.8, "defect_100": 0.2}) == \
        "pass (chance of defect_100: 20%, below 30%)"
    assert words.decision_sentence(rule, {"defect_000": 0.0004, "defect_100": 0.9996}) == \
        "send to inspection (chance of defect_100: >99%, at or above 30%)"  # never a rounded, certain 100 %
    assert words.decision_sentence(rule, {"defect_000": 0.9996, "defect_100": 0.0004}).startswith(
        "pass (chance of defect_100: <1%")
    assert words.exported_sentence({"images": 32}, True).endswith("on all 32 validation photos checked.")
    assert words.exported_sentence({"images": 32}, False).startswith("The exported model does not give the same")


def test_a_later_stage_reading_photos_again_says_its_stage_and_the_time_limit():
    import time

    from core.present import words

    progress = {"phase": "features train", "phase_done": 30, "phase_total": 120, "stage": 2, "stages": 3,
                "stage_words": "a richer view", "deadline_wall": time.time() + 600}
    fraction, said = words.describe_progress(progress, {"epochs": 5}, 12.0)
    assert fraction == 0.25
    assert said.startswith("Stage 2 of 3: a richer view · reading the training photos: 30 of 120 · about ")
    assert said.endswith(" min left of the time limit")


def test_a_dataset_is_described_with_the_names_as_the_page_escaped_them():
    from core.present import words
    from pages.common import escape_markdown as md

    assert words.dropped_sentence({md("scr*tch"): 3}, 5) == r"Dropped classes (fewer than 5 images): **scr\*tch** (3)"
    assert words.small_classes_sentence(["a", "b"]) == ("Classes with fewer than 10 images: a, b — results on them "
                                                        "will be noisy.")
    assert words.flagged_sentence(0, 40) == "None of the 40 photos looks labelled wrong."
    assert words.flagged_sentence(3, 40) == "**3 of 40 photos** look labelled wrong."
    assert words.no_images_sentence("x") == "No usable images in x: it needs one sub-folder per class with images in it."
    assert words.no_images_sentence("x", 2).endswith("with images in it (2 files skipped).")
    assert words.not_a_folder("x") == "x is not a folder. Give a folder with one sub-folder per class."
    assert words.not_a_folder("x", hint=False) == "x is not a folder."
    assert words.augmentation_caption("none").endswith("uses the 'none' preset: every view is the same photo, because "
                                                       "a frozen network reads each photo once.")
    assert words.augmentation_caption("light").endswith("uses the 'light' preset.")
    assert words.split_sentence("splits") == "the folder gives its own training, validation and test photos"
