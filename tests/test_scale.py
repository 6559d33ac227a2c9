"""The scan at scale: checked in processes (large folders) it gives the same index as in threads."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from core.data import catalog


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
