"""The inbox (likely mislabels, test mistakes, kept uploads), the owner's decisions as data beside the
dataset, retraining with them, and what changed between the two runs. Real photos: ELPV cells and
crops of scikit-learn's two sample photos (a temple, a flower), with photos planted in the wrong
folder; real pretrained weights."""
from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from core.data import catalog, notes
from core.evaluate.compare import compare
from core.runs.folder import RunDir
from core.trust import inbox

from helpers import ROOT, elpv, make_subset, open_page, run_cli

PER_CLASS = 24


def _crops(photo: Image.Image, n: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [photo.crop((x, y, x + 240, y + 240)) for x, y in zip(rng.integers(0, 390, n), rng.integers(0, 180, n))]


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Three classes a person tells apart (solar cells, temple crops, flower crops), 24 each, and 6 photos
    planted in a wrong folder. Returns (folder, {planted file: its true class})."""
    root = tmp_path_factory.mktemp("planted")
    temple, flower = (Image.fromarray(a) for a in load_sample_images().images)
    cells = sorted((elpv() / "defect_000").glob("*.png"))[:PER_CLASS + 2]
    pictures = {"temple": _crops(temple, PER_CLASS + 2, 1), "flower": _crops(flower, PER_CLASS + 2, 2)}
    for name in ("cells", "temple", "flower"):
        (root / name).mkdir()
    for cell in cells[:PER_CLASS]:
        shutil.copy2(cell, root / "cells" / cell.name)
    for name, images in pictures.items():
        for i, image in enumerate(images[:PER_CLASS]):
            image.save(root / name / f"{name}_{i:02d}.png")
    wrong = {}
    for cell in cells[PER_CLASS:]:
        shutil.copy2(cell, root / "temple" / cell.name)
        wrong[f"temple/{cell.name}"] = "cells"
    for i, image in enumerate(pictures["temple"][PER_CLASS:], start=PER_CLASS):
        image.save(root / "flower" / f"temple_{i:02d}.png")
        wrong[f"flower/temple_{i:02d}.png"] = "temple"
    for i, image in enumerate(pictures["flower"][PER_CLASS:], start=PER_CLASS):
        image.save(root / "cells" / f"flower_{i:02d}.png")
        wrong[f"cells/flower_{i:02d}.png"] = "flower"
    return root, wrong


def photo_hashes(root: Path) -> dict[str, str]:
    """Every file of the dataset (the .graft folder aside) by its content."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".graft" not in p.parts}


def train(root: Path, runs: Path, name: str) -> str:
    result = run_cli("train", str(root), "--epochs", "3", "--runs", str(runs), "--name", name)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1].split()[0].split("=", 1)[1]


@pytest.mark.slow
def test_planted_mislabels_top_the_inbox_and_the_next_run_learns_from_the_decisions(planted, tmp_path):
    root, wrong = planted
    runs = tmp_path / "runs"
    before_id = train(root, runs, "before")
    listed = run_cli("inbox", str(root), "--runs", str(runs), "--csv", str(tmp_path / "inbox.csv"))
    assert listed.returncode == 0, listed.stderr[-2000:]
    table = pd.read_csv(tmp_path / "inbox.csv", dtype=str, keep_default_na=False)
    assert list(table.columns[:4]) == ["file", "source", "label", "suggested"]
    top = table.head(len(wrong) + 2)
    found = set(top["file"]) & set(wrong)
    assert len(found) >= len(wrong) - 1, table.head(10)  # most of them, near the top
    assert all(top.set_index("file").loc[f, "suggested"] == wrong[f] for f in found)
    assert "likely mislabel" in " ".join(table["source"]) and before_id in listed.stdout

    hashes = photo_hashes(root)
    a_cell = f"cells/{sorted((root / 'cells').glob('cell*.png'))[0].name}"
    decisions = tmp_path / "decisions.csv"
    rows = [{"file": f, "decision": "relabel", "label": wrong[f]} for f in sorted(wrong)[:-1]]
    rows += [{"file": sorted(wrong)[-1], "decision": "exclude", "label": ""},
             {"file": "cells/none.png", "decision": "keep", "label": ""},
             {"file": a_cell, "decision": "paint", "label": ""},
             {"file": sorted(wrong)[0], "decision": "relabel", "label": ""}]
    pd.DataFrame(rows).to_csv(decisions, index=False)
    decided = run_cli("inbox", str(root), "--decide", str(decisions))
    assert decided.returncode == 1  # three rows refused, each named; the rest kept
    assert "row 7 (cells/none.png): not a photo" in decided.stderr
    assert f"row 8 ({a_cell}): unknown decision 'paint'" in decided.stderr
    assert f"row 9 ({sorted(wrong)[0]}): 'relabel' needs a label" in decided.stderr
    assert "6 decisions kept" in decided.stdout
    assert photo_hashes(root) == hashes  # no photo moved, renamed, rewritten or deleted

    after_id = train(root, runs, "after")
    before, after = (RunDir(runs / r).manifest().manifest.set_index("path") for r in (before_id, after_id))
    for file, label in wrong.items():
        if file == sorted(wrong)[-1]:
            assert file not in after.index  # excluded
        else:
            assert after.loc[file, "label"] == label and before.loc[file, "label"] != label
    untouched = before.index.difference(list(wrong))
    assert (before.loc[untouched, "split"] == after.loc[untouched, "split"]).all()  # no split moved

    result = compare(runs / before_id, runs / after_id)
    a, b = (RunDir(runs / r).predictions().set_index("path") for r in (before_id, after_id))
    common = a.index.intersection(b.index)
    moved = {p for p in common if str(a.loc[p, "correct"]) != str(b.loc[p, "correct"])}
    assert set(result.changed["path"]) == moved and result.common == len(common)
    printed = run_cli("compare", before_id, after_id, "--runs", str(runs))
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert "within noise" in printed.stdout or "better beyond noise" in printed.stdout
    for path in moved:
        assert path in printed.stdout
    assert f"on the {len(common)} photos both scored" in printed.stdout

    # the Inbox page: what changed between the two runs, and one button retrains with the same settings
    at = open_page("pages/inbox.py", str(root), str(runs))
    assert not at.exception, at.exception
    assert any(f"on the {len(common)} photos both scored" in m.value for m in at.markdown)
    next(b for b in at.button if b.key == "inbox_retrain").click().run()
    assert not at.exception, at.exception
    from core.runs.store import RunStore
    from core.train import jobs

    store = RunStore.open(runs)
    new = [r for r in store.list()["id"] if r not in (before_id, after_id)]
    assert len(new) == 1 and store.get(new[0])["name"] == "after · after the inbox"
    jobs.kill(new[0], runs)
    started = {k: v for k, v in store.get(new[0])["config"].items() if k != "name"}
    assert started == {k: v for k, v in store.get(after_id)["config"].items() if k != "name"}
    notes.save_decisions(root, {f: None for f in notes.load_decisions(root)})


def test_decisions_are_kept_beside_the_dataset_and_survive_a_restart(tmp_path):
    root = make_subset(tmp_path / "data", 8, ["defect_000", "defect_100"])
    index = catalog.scan(root)
    split_before = catalog.split(index, min_per_class=2).manifest.set_index("path")["split"]
    hashes = photo_hashes(root)
    first, second, third = index.items["path"][:3]
    kept, problems = inbox.decide(root, [{"file": first, "decision": "relabel", "label": "defect_100"},
                                         {"file": second, "decision": "exclude"},
                                         {"file": third, "decision": "keep"},
                                         {"file": first, "decision": "relabel", "label": "no_such_class"}])
    assert kept == 3 and problems == [f"row 4 ({first}): unknown class 'no_such_class' (one of defect_000, defect_100)"]
    record = notes.load_decisions(root)[first]
    assert record["decision"] == "relabel" and record["label"] == "defect_100" and record["old_label"] == "defect_000"
    assert record["sha1"] == index.items.set_index("path").loc[first, "sha1"] and record["when"].endswith("Z")
    # a fresh process (a restart) reads them from the dataset's .graft folder
    code = ("import sys; from core.data import catalog; i = catalog.scan(sys.argv[1]); "
            "print(dict(zip(i.items.path, i.items.label))[sys.argv[2]], sys.argv[3] in set(i.items.path))")
    out = subprocess.run([sys.executable, "-c", code, str(root), first, second], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.stdout.split() == ["defect_100", "False"], out.stderr[-2000:]
    split_after = catalog.split(catalog.scan(root), min_per_class=2).manifest.set_index("path")["split"]
    untouched = split_before.index.difference([first, second])
    assert (split_before[untouched] == split_after[untouched]).all() and split_after[first] == split_before[first]
    assert photo_hashes(root) == hashes
    inbox.decide(root, [{"file": first, "decision": "undo"}])
    assert first not in notes.load_decisions(root) and len(notes.load_decisions(root)) == 2


def test_a_kept_upload_waits_in_the_inbox_until_the_owner_adds_it_to_a_class(tmp_path):
    root = make_subset(tmp_path / "data", 6, ["defect_000", "defect_100"])
    photo = sorted((elpv() / "defect_100").glob("*.png"))[-1]
    buffer = io.BytesIO()
    Image.open(photo).save(buffer, format="PNG")
    with pytest.raises(Exception, match="not_an_image.png"):
        notes.keep_upload(root, "not_an_image.png", b"hello", {})
    rel = notes.keep_upload(root, "line 2/new cell.png", buffer.getvalue(),
                            {"predicted": "defect_000", "confidence": 0.55, "uncertain": True, "unfamiliar": False})
    assert rel.startswith(".graft/inbox/") and (root / rel).is_file()
    assert rel not in set(catalog.scan(root).items["path"])  # in no class yet
    table = inbox.build(root)
    assert table.set_index("file").loc[rel, "source"] == "kept upload"
    assert table.set_index("file").loc[rel, "suggested"] == "defect_000"
    assert inbox.decide(root, [{"file": rel, "decision": "add", "label": "defect_100"}]) == (1, [])
    index = catalog.scan(root)
    assert index.items.set_index("path").loc[rel, "label"] == "defect_100"
    assert rel in set(catalog.split(index, min_per_class=2).manifest["path"])


@pytest.mark.slow
def test_the_inbox_page_lets_the_owner_decide_and_a_viewer_only_look(planted, tmp_path, monkeypatch):
    root, wrong = planted
    from core.trust import audit

    audit.audit(root)  # the label check as the owner's button runs it
    at = open_page("pages/inbox.py", str(root), str(tmp_path / "runs"))
    assert not at.exception, at.exception
    assert any("photos to look at" in m.value for m in at.markdown)
    radios = [r for r in at.radio if r.key and r.key.startswith("inbox_")]
    assert len(radios) >= len(wrong) - 1
    radios[0].set_value("exclude")
    next(b for b in at.button if b.key == "inbox_save").click().run()
    assert not at.exception, at.exception
    kept = notes.load_decisions(root)
    assert len(kept) == 1 and next(iter(kept.values()))["decision"] == "exclude" and next(iter(kept)) in wrong

    monkeypatch.setenv("GRAFT_VIEW_KEY", "view-key-0123456789abcdef")
    from streamlit.testing.v1 import AppTest

    from core.base import settings

    saved = settings.load()
    settings.save(dataset=str(root), runs=str(tmp_path / "runs"))  # a viewer follows the owner's dataset
    try:
        viewer = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        viewer.query_params["key"] = "view-key-0123456789abcdef"
        viewer.run()
        viewer.switch_page("pages/inbox.py").run()
    finally:
        settings.save(dataset=saved["dataset"], runs=saved["runs"])
    assert not viewer.exception, viewer.exception
    assert any("photos to look at" in m.value for m in viewer.markdown)
    assert not [r for r in viewer.radio if r.key and r.key.startswith("inbox_")]  # no decision to make
    assert all(b.disabled for b in viewer.button if b.key == "inbox_save")
    assert not [b for b in viewer.button if b.key in ("inbox_retrain", "inbox_apply_csv")]
    notes.save_decisions(root, {f: None for f in notes.load_decisions(root)})


def test_the_owner_keeps_an_unfamiliar_upload_from_predict_for_the_inbox(trained_run, elpv_small):
    from helpers import house_drawing, run_state

    state, runs, run_id = run_state(trained_run)
    before = notes.load_uploads(elpv_small)
    at = open_page("pages/predict.py", str(elpv_small), str(runs), **state)
    drawing = io.BytesIO()
    house_drawing().save(drawing, "PNG")
    at.file_uploader(key="upload_images").set_value([("house <b>.png", drawing.getvalue(), "image/png")]).run()
    assert not at.exception, at.exception
    at.button(key="keep_0").click().run()
    kept = {k: v for k, v in notes.load_uploads(elpv_small).items() if k not in before}
    try:
        assert not at.exception, at.exception
        (path, verdict), = kept.items()
        assert (elpv_small / path).read_bytes() == drawing.getvalue()  # the photo itself, beside the dataset
        assert verdict["unfamiliar"] and verdict["run"] == run_id and verdict["name"] == "house <b>.png"
        assert any(path in s.value for s in at.success)
        listed = inbox.build(elpv_small)
        assert path in set(listed["file"]) and "upload" in " ".join(listed.loc[listed["file"] == path, "source"])
    finally:
        for path in kept:
            (elpv_small / path).unlink(missing_ok=True)
        notes.write_json(notes.notes_dir(elpv_small) / notes.UPLOADS_FILE, before)
