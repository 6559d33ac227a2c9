"""The scan at scale: checked in processes (large folders) it gives the same index as in threads."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from core.data import catalog
from tests.helpers import run_cli


@pytest.mark.slow
def test_scan_in_processes_equals_scan_in_threads(elpv_small, tmp_path, monkeypatch):
    root = tmp_path / "photos"
    shutil.copytree(elpv_small, root)
    (root / "defect_000" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "defect_000" / "notes.txt").write_text("not a photo")
    monkeypatch.setenv("GRAFT_THREADS", "2")
    threads = catalog.scan(root, use_cache=False)
    monkeypatch.setattr(catalog, "PROCESS_FILES", 1)  # every folder, however small, goes to processes
    monkeypatch.setattr(catalog, "CHUNK_FILES", 37)  # several chunks, the last one short
    processes = catalog.scan(root, use_cache=False)
    assert len(processes.items) == 160 and len(processes.skipped) == 2
    pd.testing.assert_frame_equal(processes.items, threads.items)
    pd.testing.assert_frame_equal(processes.skipped, threads.skipped)


def _awkward_folder(root, layout: str):
    """Photos in several classes (one with a sub-folder) and everything a listing must name or leave out."""
    import os

    from PIL import Image

    tops = [root / s for s in ("train", "val", "test")] if layout == "splits" else [root]
    for top in tops:
        for k, label in enumerate(("cracked", "fine", "ünïcode class")):
            (top / label / "more").mkdir(parents=True)
            for i in range(3 + k):
                Image.new("RGB", (8 + i, 8), (40 * k, i, 9)).save(top / label / f"p{i}.png")
            Image.new("L", (9, 9)).save(top / label / "more" / "deep.png")
        (top / "cracked" / ".DS_Store").write_text("hidden")
        (top / "loose.png").write_bytes(b"not in a class folder")
        os.symlink(top / "fine", top / "cracked" / "loop")
        os.symlink(top / "missing.png", top / "fine" / "dangling.png")
        os.mkfifo(top / "fine" / "pipe.png")
    if layout == "splits":
        (root / "extra").mkdir()
        (root / "readme.txt").write_text("a file at the top")
    return root


@pytest.mark.parametrize("layout", ["folders", "splits"])
def test_listing_the_classes_in_processes_equals_listing_them_in_one(tmp_path, monkeypatch, layout):
    from core.data import walk

    root = _awkward_folder(tmp_path / "photos", layout)
    one, two = walk.walk(root, layout, workers=1), walk.walk(root, layout, workers=2)
    assert one == two
    reasons = {reason for _, reason, _ in one.problems}
    assert reasons >= {"not in a class folder", "link to a folder", "broken link", "not a regular file"}
    assert len(one.paths) == (3 if layout == "splits" else 1) * (3 + 4 + 5 + 3)
    assert "ünïcode class/more/deep.png" in [p.split("/", 1)[-1] if layout == "splits" else p for p in one.paths]
    serial = catalog.scan(root, use_cache=False)
    monkeypatch.setattr(walk, "PROCESS_FILES", 1)  # any folder scanned before is listed in processes
    monkeypatch.setenv("GRAFT_THREADS", "2")
    catalog.scan(root)
    parallel = catalog.scan(root)
    pd.testing.assert_frame_equal(parallel.items, serial.items)
    pd.testing.assert_frame_equal(parallel.skipped, serial.skipped)


def test_a_plain_script_lists_and_decodes_in_processes_without_a_main_guard(tmp_path):
    """Spawned workers must not run their parent's `__main__` (a page's script in the dashboard, a user's script
    here): every worker starts with a bare one."""
    import subprocess
    import sys

    root = _awkward_folder(tmp_path / "photos", "folders")
    script = tmp_path / "no_guard.py"
    script.write_text("from core.data import catalog, walk\n"
                      "import core.data.catalog as c\n"
                      "c.PROCESS_FILES = 1\n"
                      f"listing = walk.walk(catalog.Path({str(root)!r}), 'folders', workers=2)\n"
                      f"index = catalog.scan({str(root)!r}, decode=True)\n"
                      "print('listed', len(listing.paths), 'decoded', len(index.items))\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "GRAFT_THREADS": "2", "GRAFT_HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["listed", "15", "decoded", "15"] and "bootstrapping" not in done.stderr


def _with_a_truncated_photo(elpv_small, tmp_path) -> tuple:
    root = tmp_path / "photos"
    shutil.copytree(elpv_small, root)
    victim = sorted((root / "defect_000").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return root, victim.relative_to(root).as_posix()


def test_a_large_first_scan_reads_headers_and_decodes_when_asked(elpv_small, tmp_path, monkeypatch):
    """Above DECODE_FILES new files the scan reads each file's header and content hash only: a truncated photo
    passes it, undecoded; `decode=True` then decodes what it left and gives the index a full scan gives."""
    from core.data import health

    root, truncated = _with_a_truncated_photo(elpv_small, tmp_path)
    full = catalog.scan(root, use_cache=False)
    assert full.undecoded == 0 and truncated in set(full.skipped["path"])
    assert full.skipped.set_index("path").loc[truncated, "reason"] == "truncated"

    monkeypatch.setattr(catalog, "DECODE_FILES", 10)
    quick = catalog.scan(root)
    assert len(quick.items) == len(full.items) + 1 and quick.undecoded == len(quick.items)
    assert truncated in set(quick.items["path"]) and quick.items["dhash"].isna().all()
    same = quick.items.set_index("path").loc[full.items["path"], ["sha1", "width", "height", "mode"]]
    pd.testing.assert_frame_equal(same.reset_index(drop=True), full.items[["sha1", "width", "height", "mode"]])
    report = health.check(quick)
    assert report.undecoded == len(quick.items) and report.near_duplicates.empty
    assert report.summary()[health.UNDECODED] == len(quick.items)

    heard = []
    decoded = catalog.scan(root, decode=True, on_progress=lambda done, total: heard.append((done, total)))
    assert heard[-1] == (len(quick.items), len(quick.items))  # only the undecoded photos were read again
    assert decoded.undecoded == 0
    pd.testing.assert_frame_equal(decoded.items, full.items)
    pd.testing.assert_frame_equal(decoded.skipped, full.skipped)
    heard.clear()
    pd.testing.assert_frame_equal(catalog.scan(root, on_progress=lambda *a: heard.append(a)).items, full.items)
    assert heard == []  # a rescan of an unchanged folder reads nothing


def test_a_scan_stopped_midway_keeps_what_it_checked(elpv_small, tmp_path, monkeypatch):
    """A long scan saves its index every SAVE_FILES files: stopped after the first block, the next scan reads
    only the files it had not reached, and the index is the whole folder's."""
    monkeypatch.setattr(catalog, "SAVE_FILES", 50)
    root = tmp_path / "photos"
    shutil.copytree(elpv_small, root)  # a folder no other test has scanned

    class Stopped(Exception):
        pass

    def stop(done, total):
        if done > 50:  # in the second block, the first one saved
            raise Stopped

    with pytest.raises(Stopped):
        catalog.scan(root, on_progress=stop)
    heard = []
    index = catalog.scan(root, on_progress=lambda done, total: heard.append((done, total)))
    assert heard[-1] == (110, 110) and len(index.items) == 160
    pd.testing.assert_frame_equal(index.items, catalog.scan(root, use_cache=False).items)


@pytest.mark.slow
def test_training_after_a_header_only_scan_names_a_photo_that_does_not_decode(elpv_small, tmp_path):
    """A photo a header-only scan let through (truncated) is named and left out when training reads it; the
    run still ends with a model."""
    root, truncated = _with_a_truncated_photo(elpv_small, tmp_path)
    scanned = run_cli("scan", str(root), "--no-decode")
    assert scanned.returncode == 0, scanned.stderr
    assert "160 photos were read for their header" in scanned.stdout and "--decode" in scanned.stdout
    trained = run_cli("train", str(root), "--epochs", "2", "--runs", str(tmp_path / "runs"))
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert f"skipping {root / truncated}: truncated" in trained.stdout  # named by the reading, not the scan
    assert f"skipped {truncated}" not in trained.stdout
    assert "test_acc=" in trained.stdout
    decoded = run_cli("scan", str(root), "--decode")
    assert f"skipped {truncated}: truncated" in decoded.stdout and "read for their header" not in decoded.stdout


def test_the_dataset_page_says_what_a_header_only_scan_left_and_the_owner_decodes_it(elpv_small, tmp_path):
    """After a header-only scan the Dataset page opens on it, says how many photos are not decoded yet, and the
    owner's button decodes them: the truncated photo is then a skipped file and the sentence is gone."""
    from core.data import decoding

    from helpers import open_page, wait_for

    root, truncated = _with_a_truncated_photo(elpv_small, tmp_path)
    catalog.scan(root, decode=False)
    at = open_page("pages/dataset.py", str(root), str(tmp_path / "runs"))
    assert not at.exception, at.exception
    assert any("160 photos were read for their size and content only" in i.value for i in at.info)
    assert not any(s.value.startswith("No problems found:") for s in at.success)  # not before every photo is decoded
    at.button(key="decode_all").click().run()  # starts the decoding in a background process
    assert not at.exception, at.exception
    assert wait_for(lambda: not decoding.status(root).running, 180), decoding.status(root)
    assert decoding.status(root).state == "done" and decoding.status(root).done == 159
    at.run()
    assert not at.exception, at.exception
    assert not any("read for their size and content only" in i.value for i in at.info)
    skipped = next(df.value for df in at.dataframe if "reason" in df.value.columns and "path" in df.value.columns)
    assert skipped.set_index("path").loc[truncated, "reason"] == "truncated"


def test_the_background_decoding_is_started_once_and_a_dead_one_reads_as_failed(tmp_path, monkeypatch):
    """While a decoding process is alive a second start is refused; a state left by a process that died says so,
    and changes the folder's signature (the pages read the index again)."""
    import os
    import time

    from core.base.storage import write_json
    from core.data import decoding
    monkeypatch.setenv("GRAFT_HOME", str(tmp_path / "home"))
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    assert decoding.status(root) is None and decoding.signature(root) == ()
    decoding.state_file(root).parent.mkdir(parents=True)
    write_json(decoding.state_file(root), {"state": "running", "pid": os.getpid(), "done": 5, "total": 9,
                                          "started": time.time()})
    assert decoding.status(root).running and not decoding.start(root)  # this process is alive: not twice
    running = decoding.signature(root)
    dead = _dead_pid()
    write_json(decoding.state_file(root), {"state": "running", "pid": dead, "done": 5, "total": 9,
                                          "started": time.time()})
    job = decoding.status(root)
    assert job.state == "failed" and "ended before it finished" in job.error
    assert decoding.signature(root) != running


def _dead_pid() -> int:
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
