"""The dashboard through Streamlit's AppTest: real folders, real images."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from helpers import make_split_layout, make_subset, open_page

PAGES = ["pages/home.py", "pages/dataset.py", "pages/train.py", "pages/results.py", "pages/predict.py",
         "pages/runs.py", "pages/present.py", "pages/inbox.py"]


TITLES = dict(zip(PAGES, ["Graft", "Dataset", "Train", "Results", "Predict", "Runs", "Present", "Inbox"]))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_real_data(page, elpv_small, tmp_path):
    at = open_page(page, str(elpv_small), str(tmp_path / "runs"))
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == [TITLES[page]]  # the page asked for, drawn
    if page in ("pages/results.py", "pages/predict.py", "pages/present.py"):  # an empty runs folder: said, not a blank page
        assert any("No trained run yet" in i.value for i in at.info)
    if page in ("pages/home.py", "pages/dataset.py"):
        images = next(m.value for m in at.metric if m.label in ("Images", "Images used"))
        assert images == str(len(list(elpv_small.rglob("*.png"))))  # the photos on disk


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_every_page_handles_a_bad_folder_with_a_message(page, kind, tmp_path):
    folder = tmp_path / kind
    if kind == "empty":
        folder.mkdir()
    at = open_page(page, str(folder), str(tmp_path / "runs"))
    assert not at.exception, at.exception
    if page in ("pages/home.py", "pages/dataset.py"):
        shown = " ".join(m.value for m in [*at.error, *at.warning, *at.info])
        assert str(folder) in shown or "No usable images" in shown


def _counts_table(at: AppTest):
    return next(df.value for df in at.dataframe if "total" in df.value.columns)


def test_class_counts_equal_the_files_on_disk(elpv_small, tmp_path):
    at = open_page("pages/dataset.py", str(elpv_small), str(tmp_path / "runs"))
    table = _counts_table(at)
    on_disk = {d.name: len(list(d.glob("*.png"))) for d in elpv_small.iterdir()}
    assert table["total"].to_dict() == on_disk
    assert at.metric[1].value == str(sum(on_disk.values()))


def test_min_per_class_changes_the_dropped_classes(tmp_path, monkeypatch):
    root = make_subset(tmp_path / "ds", 12)
    monkeypatch.setenv("GRAFT_HOME", str(tmp_path / "home"))  # the minimum the page saves stays in this test
    for f in sorted((root / "defect_067").glob("*.png"))[6:]:
        f.unlink()  # defect_067 now has 6 images
    at = open_page("pages/dataset.py", str(root), str(tmp_path / "runs"), min_per_class=5)
    assert not any("Dropped classes" in w.value for w in at.warning)
    at.number_input(key="min_per_class").set_value(8).run()
    dropped = [w.value for w in at.warning if "Dropped classes" in w.value]
    assert dropped and "defect_067" in dropped[0] and "defect_000" not in dropped[0]
    assert "defect_067" not in _counts_table(at).index


def test_a_duplicate_across_train_and_test_is_reported_as_leakage(tmp_path):
    root = make_split_layout(tmp_path / "ds", 10, 6, 2)
    planted = sorted((root / "train" / "defect_100").glob("*.png"))[0]
    shutil.copy2(planted, root / "test" / "defect_100" / "planted_copy.png")
    at = open_page("pages/dataset.py", str(root), str(tmp_path / "runs"))
    assert any("more than one split" in e.value for e in at.error)
    leak = next(df.value for df in at.dataframe if "kind" in df.value.columns)
    assert set(leak["path"]) == {f"train/defect_100/{planted.name}", "test/defect_100/planted_copy.png"}
    assert set(leak["split"]) == {"train", "test"}


def test_sample_browser_shows_thumbnails_not_full_images(elpv_small, tmp_path):
    at = open_page("pages/dataset.py", str(elpv_small), str(tmp_path / "runs"), browse_class="defect_100")
    assert not at.exception
    files = sorted((elpv_small / "defect_100").glob("*.png"))[:24]  # the class's first page
    gallery = next(i for i in at.get("image") if i.proto.imgs and " · " in i.proto.imgs[0].caption)
    expected = []
    for f in files:
        with Image.open(f) as image:
            expected.append(f"{f.name} · {image.width}×{image.height} · {f.stat().st_size / 1024:.0f} KB")
    assert [im.caption for im in gallery.proto.imgs] == expected  # those files, as they are on disk
    thumbs = Path(os.environ["GRAFT_HOME"]) / "thumbs" / "160"
    for f in files:
        sha1 = hashlib.sha1(f.read_bytes()).hexdigest()
        thumb = thumbs / sha1[:2] / f"{sha1}.jpg"
        with Image.open(thumb) as image:
            assert max(image.size) == 160  # shrunk from 300 pixels
        assert thumb.stat().st_size < 20_000


def test_the_min_per_class_chosen_on_the_dataset_page_reaches_the_train_page(tmp_path, monkeypatch):
    root = make_subset(tmp_path / "ds", 12)
    monkeypatch.setenv("GRAFT_HOME", str(tmp_path / "home"))  # the minimum the page saves stays in this test
    for f in sorted((root / "defect_067").glob("*.png"))[6:]:
        f.unlink()
    at = open_page("pages/dataset.py", str(root), str(tmp_path / "runs"))
    at.number_input(key="min_per_class").set_value(8).run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    assert any("3 classes" in c.value and "min 8 per class" in c.value for c in at.caption)


def test_an_exception_in_a_page_is_visible_to_the_tests():
    """The served app redacts errors (.streamlit/config.toml); the test suite must not be blinded."""
    at = AppTest.from_string("raise ValueError('boom')").run()
    assert [e.message for e in at.exception] == ["boom"]


@pytest.mark.slow
def test_the_sample_button_and_a_recent_folder_change_the_dataset_and_the_folder_box(elpv_small, tmp_path):
    """Both set the folder box's text from a callback: after the box is drawn, Streamlit refuses it."""
    from core.base.storage import cache_home

    from helpers import elpv

    sample = cache_home() / "samples" / "elpv"  # the tests' cache: the real sample, linked, not fetched again
    linked = not sample.exists()
    if linked:
        sample.parent.mkdir(parents=True, exist_ok=True)
        sample.symlink_to(elpv(), target_is_directory=True)
    try:
        at = open_page("pages/home.py", str(tmp_path), str(tmp_path / "runs"))
        at.text_input(key="dataset_input").set_value(str(elpv_small)).run()
        mine = str(elpv_small.resolve())
        assert not at.exception and at.session_state["dataset"] == mine, at.exception
        at.button(key="use_sample").click().run()
        assert not at.exception, at.exception
        assert at.session_state["dataset"] == str(elpv().resolve()) == at.text_input(key="dataset_input").value
        at.selectbox(key="recent_pick").set_value(mine).run()
        assert not at.exception, at.exception
        assert at.session_state["dataset"] == mine == at.text_input(key="dataset_input").value
        at.run()  # and it stays: the box no longer holds the folder before
        assert at.session_state["dataset"] == mine and at.selectbox(key="recent_pick").value == "—"
    finally:
        if linked:
            sample.unlink()
