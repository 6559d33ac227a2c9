"""Bad input from a stranger: folders the scan must survive, uploads over the pixel budget, and
command-line arguments that must end as one `error:` line. Real files made here; no mocks."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.data import catalog
from core.data.images import MAX_PIXELS, WORK_PIXELS, ImageError, open_image

from helpers import ROOT, elpv, make_subset, open_page, run_cli


@pytest.fixture
def awkward(tmp_path) -> Path:
    """A dataset with every kind of thing that is not a class folder of images."""
    root = make_subset(tmp_path / "awkward", 6, classes=("defect_000", "defect_100"))
    shutil.copy2(next((elpv() / "defect_000").glob("*.png")), root / "stray.png")  # outside a class folder
    (root / "loop").mkdir()
    (root / "loop" / "again").symlink_to(root / "loop")  # a link that loops
    (root / "shortcut").symlink_to(root / "defect_000")  # a link to a class folder
    os.mkfifo(root / "defect_000" / "pipe.png")  # a special file with an image name
    (root / "defect_100" / "gone.png").symlink_to(root / "nowhere.png")  # a broken link
    (root / ".graft").mkdir()  # what the product keeps about the dataset: never a class
    (root / ".graft" / "names.json").write_text("{}")
    return root


def test_the_scan_names_every_thing_it_skips_and_keeps_the_rest(awkward):
    index = catalog.scan(awkward, use_cache=False)
    reasons = dict(zip(index.skipped["path"], index.skipped["reason"]))
    assert reasons == {"stray.png": "not in a class folder", "loop/again": "link to a folder",
                       "shortcut": "link to a folder", "defect_000/pipe.png": "not a regular file",
                       "defect_100/gone.png": "broken link"}
    assert sorted(index.classes) == ["defect_000", "defect_100"]  # no ".graft", no "loop"
    assert len(index.items) == 12
    split = catalog.split(index, min_per_class=3)
    assert len(split.manifest) == 12


def test_a_folder_with_unreadable_parts_is_scanned_not_crashed():
    index = catalog.scan("/proc/1", use_cache=False)  # permission errors and special files, as on `/`
    assert {"unreadable", "not an image"} & set(index.skipped["reason"])


def test_the_cli_and_the_pages_survive_the_awkward_folder(awkward, tmp_path):
    result = run_cli("scan", str(awkward))
    assert result.returncode == 0, result.stderr
    assert "skipped stray.png: not in a class folder" in result.stdout
    assert "skipped loop/again: link to a folder" in result.stdout
    images = {name: len([f for f in (awkward / name).glob("*.png") if f.is_file()])  # no pipe, no broken link
              for name in ("defect_000", "defect_100")}
    skipped = sum(line.startswith("skipped ") for line in result.stdout.splitlines())
    for page in ("pages/home.py", "pages/dataset.py", "pages/train.py"):
        state = {"min_per_class": 3} if page == "pages/dataset.py" else {}  # whatever an earlier test saved
        at = open_page(page, str(awkward), str(tmp_path / "runs"), **state)
        assert not at.exception, (page, at.exception)
        if page == "pages/home.py":  # the readable photos of the class folders, and every thing skipped
            figures = {m.label: m.value for m in at.metric}
            assert (figures["Classes"], figures["Images"], figures["Skipped files"]) == (
                str(len(images)), str(sum(images.values())), str(skipped))
        if page == "pages/dataset.py":
            counts = next(df.value for df in at.dataframe if "total" in df.value.columns)
            assert counts["total"].to_dict() == images  # the class folders' own photos, nothing else


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=st.lists(st.tuples(st.sampled_from(["", "a", "b", "a/deep", ".hidden", "train/a", "val/b"]),
                                 st.sampled_from(["x.png", "y.jpg", "z.txt", "w.png", "empty.png"])),
                       min_size=1, max_size=12, unique=True))
def test_every_file_is_either_an_image_or_a_named_skip(tmp_path_factory, layout):
    root = tmp_path_factory.mktemp("prop")
    for folder, name in layout:
        (root / folder).mkdir(parents=True, exist_ok=True)
        path = root / folder / name
        if name == "empty.png":
            path.write_bytes(b"")
        elif name.endswith(".txt"):
            path.write_text("notes")
        else:
            Image.new("RGB", (16, 16), (len(folder) * 20, 80, 160)).save(path, "PNG" if name.endswith(".png") else "JPEG")
    index = catalog.scan(root, use_cache=False)
    visible = {f"{d}/{n}".lstrip("/") for d, n in layout if not d.startswith(".")}
    seen = set(index.items["path"]) | set(index.skipped["path"])
    for path in visible:  # the file itself, or a folder above it, is named
        assert path in seen or any(path.startswith(folder + "/") for folder in seen), (path, seen)
    assert not set(index.items["path"]) & set(index.skipped["path"])
    split = catalog.split(index, min_per_class=1)
    assert sorted(split.manifest["path"]) == sorted(index.items["path"])


def test_jpeg_sizes_are_recorded_as_stored_not_at_the_draft_scale(tmp_path):
    folder = tmp_path / "photos" / "big"
    folder.mkdir(parents=True)
    Image.new("RGB", (4000, 3000), (90, 120, 30)).save(folder / "a.jpg", quality=80)
    Image.new("RGB", (300, 300), (90, 120, 30)).save(folder / "b.jpg", quality=80)
    items = catalog.scan(tmp_path / "photos", use_cache=False).items.set_index("path")
    assert (items.loc["big/a.jpg", "width"], items.loc["big/a.jpg", "height"]) == (4000, 3000)
    assert (items.loc["big/b.jpg", "width"], items.loc["big/b.jpg", "height"]) == (300, 300)


def _png(size: tuple[int, int], mode: str = "1") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, 1).save(out, "PNG")
    return out.getvalue()


def test_images_over_the_pixel_budget_are_refused_or_reduced():
    with pytest.raises(ImageError, match="too large") as refused:
        open_image(_png((9000, 9000)))
    assert "81 megapixels" in str(refused.value)
    photo = io.BytesIO()
    Image.new("RGB", (6000, 4000), (10, 200, 30)).save(photo, "JPEG")
    loaded = open_image(photo.getvalue())
    assert loaded.original_size == (6000, 4000) and "reduced" in loaded.conversions
    assert loaded.image.width * loaded.image.height <= WORK_PIXELS
    wide = open_image(_png((7000, 7000), "L"))
    assert wide.image.width * wide.image.height <= WORK_PIXELS and wide.original_size == (7000, 7000)
    assert 7000 * 7000 <= MAX_PIXELS


PEAK = """
import io, resource, sys
from PIL import Image
from core.data.images import ImageError, fit, open_image
def png(size, mode):
    out = io.BytesIO(); Image.new(mode, size, 1).save(out, "PNG"); return out.getvalue()
uploads = [png((9000, 9000), "1")] * 6 + [png((7900, 7900), "L")] * 6
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kept = []
for data in uploads:
    try:
        kept.append(fit(open_image(data).image))
    except ImageError:
        pass
print(len(kept), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_large_uploads_keep_the_peak_memory_bounded():
    """Six 81 MP uploads are refused before decoding; six 62 MP ones are decoded one at a time and
    kept as 1024-pixel previews: the peak rises by less than 600 MB (one decode), not 6 × 190 MB."""
    result = subprocess.run([sys.executable, "-c", PEAK.format(root=str(ROOT))], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    kept, rise_mb = map(int, result.stdout.split())
    assert kept == 6 and rise_mb < 600, result.stdout


def test_the_predict_page_refuses_an_oversized_upload_by_name(trained_run, elpv_small):
    from helpers import run_state as _state

    state, runs, _ = _state(trained_run)
    at = open_page("pages/predict.py", str(elpv_small), str(runs), **state)
    at.file_uploader(key="upload_images").set_value([("huge.png", _png((9000, 9000)), "image/png")]).run()
    assert not at.exception, at.exception
    assert any("huge.png: too large" in e.value.replace("\\", "") for e in at.error)  # markdown-escaped


@pytest.mark.parametrize("args, message", [
    (["train", "{data}", "--label-smoothing", "7"], "label-smoothing must be between"),
    (["train", "{data}", "--epochs", "0"], "epochs must be between"),
    (["train", "{tmp}/missing"], "not a folder"),
    (["predict", "{run}", "{tmp}/notes.txt"], "no input was an image"),
    (["predict", "{run}", "{image}", "--csv", "/etc/passwd/p.csv"], "cannot create the folder"),
    (["report", "{run}", "/etc/passwd/r.html"], "cannot create the folder"),
    (["export", "{run}", "/etc/passwd"], "is a file, not a folder"),
])
def test_bad_arguments_end_as_one_error_line_and_leave_no_run(args, message, trained_run, elpv_small, tmp_path):
    runs, run_id, _ = trained_run
    (tmp_path / "notes.txt").write_text("not an image")
    image = next(elpv_small.rglob("*.png"))
    fill = dict(data=str(elpv_small), tmp=str(tmp_path), run=str(runs / run_id), image=str(image))
    new_runs = tmp_path / "new_runs"
    result = run_cli(*[a.format(**fill) for a in args], *(["--runs", str(new_runs)] if args[0] == "train" else []))
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert not new_runs.exists() or not [p for p in new_runs.iterdir() if p.is_dir()]  # no failed run left


@pytest.mark.parametrize("damage", [{"labels": ["only_one"]}, {"input_size": 20000}, {"num_classes": 9}, "a list"])
def test_a_damaged_model_card_is_refused_with_its_reason(damage, trained_run, tmp_path):
    runs, run_id, _ = trained_run
    copy = tmp_path / run_id
    shutil.copytree(runs / run_id, copy)
    card_file = copy / "model.json"
    card = json.loads(card_file.read_text())
    if damage == "a list":
        card = ["a", "list"]
    elif "input_size" in damage:
        card["preprocessing"]["input_size"] = damage["input_size"]
    else:
        card.update(damage)
    card_file.write_text(json.dumps(card))
    result = run_cli("predict", str(copy), str(next(elpv().rglob("*.png"))))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "model.json" in result.stderr
