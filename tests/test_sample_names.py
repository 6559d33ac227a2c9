"""The ELPV sample's classes read as names a room understands, not as the experts' probability codes."""
from __future__ import annotations

import shutil

from core.data import notes, samples

from helpers import elpv, make_subset, open_page


def test_the_sample_names_its_classes_and_keeps_names_the_owner_changed(tmp_path):
    names = {label: note["name"] for label, note in notes.load_class_notes(elpv()).items()}
    assert names == {"defect_000": "Working", "defect_033": "Possibly defective",
                     "defect_067": "Probably defective", "defect_100": "Defective"}
    copy = tmp_path / "elpv"
    make_subset(copy, 2)
    (copy / samples.MARKER).write_text("elpv\n")  # a fetched sample, without names yet
    samples.fetch("elpv", copy, progress=False)
    assert notes.load_class_notes(copy)["defect_100"]["name"] == "Defective"
    notes.save_class_notes(copy, {"defect_100": {"name": "Cracked"}})
    samples.fetch("elpv", copy, progress=False)  # a later fetch keeps the owner's names
    assert notes.load_class_notes(copy) == {"defect_100": {"name": "Cracked", "description": ""}}


def test_the_dataset_page_shows_the_sample_in_those_names(tmp_path):
    copy = tmp_path / "elpv"
    make_subset(copy, 6)
    notes.notes_dir(copy).mkdir()  # the sample's names only (not other tests' decisions or checks on the sample)
    shutil.copy2(notes.class_notes_file(elpv()), notes.class_notes_file(copy))
    at = open_page("pages/dataset.py", str(copy), str(tmp_path / "runs"))
    assert not at.exception, at.exception
    shown = [df.value for df in at.dataframe if "display name" in df.value.columns]
    assert shown, [m.value for m in [*at.error, *at.warning, *at.info]]
    glossary = shown[0]
    assert dict(zip(glossary["folder"], glossary["display name"])) == {
        "defect_000": "Working", "defect_033": "Possibly defective", "defect_067": "Probably defective",
        "defect_100": "Defective"}
