"""Safe to share: the owner and viewer keys, typed folders confined to the allowed roots, and
user-supplied names escaped (the report opened in Chromium with hostile class names)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.base import access, settings
from core.base.errors import BadInput
from core.runs.folder import RunDir
from core.runs.store import RunStore

from helpers import ROOT, chart_data, chromium, elpv, run_cli

VIEW, OWNER = "view-key-for-the-tests-0123456789", "owner-key-for-the-tests-9876543210"
PAGES = ["pages/home.py", "pages/dataset.py", "pages/train.py", "pages/results.py", "pages/predict.py",
         "pages/runs.py", "pages/present.py", "pages/inbox.py"]
OWNER_INPUTS = {"dataset_input", "runs_input", "batch_folder", "rename_to", "tr_name"}
OWNER_BUTTONS = {"Start training", "Stop training", "Delete", "Rename", "Export this model", "Try 5 views per image",
                 "Retrain from the inbox", "Apply these decisions", "Measure INT8 first", "Keep it for the inbox", "Check the labels (adds the likely mislabels)",
                 "Use the sample dataset (ELPV solar cells)"}


@pytest.fixture
def shared(monkeypatch, tmp_path, elpv_small, trained_run):
    """A shared server whose owner chose the ELPV subset and the trained run's folder."""
    monkeypatch.setenv(access.VIEW_KEY_ENV, VIEW)
    monkeypatch.setenv(access.OWNER_KEY_ENV, OWNER)
    monkeypatch.setenv("GRAFT_HOME", str(tmp_path / "home"))  # this test's own settings file
    runs, _, _ = trained_run
    settings.save(dataset=str(elpv_small), runs=str(runs))
    return runs


def visit(page: str, key: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    if key is not None:
        at.query_params[access.KEY_PARAM] = key
    at.run()
    if page != "pages/home.py":
        at.switch_page(page)
        at.run()
    return at


def controls(at: AppTest) -> tuple[set, set]:
    """(keys of the text inputs, labels of the buttons) the page drew, sidebar included."""
    inputs = {t.key for t in at.text_input}
    buttons = {b.label for b in at.button} | {b.label for b in at.get("form_submit_button")}
    return inputs, buttons


@pytest.mark.parametrize("key", [None, "", "wrong", VIEW[:-1], VIEW + "x"])
def test_without_a_valid_key_the_network_gets_nothing_but_the_ask_page(shared, key):
    at = visit("pages/home.py", key)
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Graft"]
    assert "Ask the presenter for the link" in " ".join(i.value for i in at.info)
    assert not at.dataframe and not at.metric and not at.sidebar.text_input
    assert [t.key for t in at.text_input] == ["gate_key"]
    with pytest.raises(Exception):  # the pages are not even registered for this session
        at.switch_page("pages/results.py").run()


@pytest.mark.parametrize("page", PAGES)
def test_a_viewer_sees_the_page_but_no_control_that_changes_state_or_reaches_a_path(shared, page):
    at = visit(page, VIEW)
    assert not at.exception, at.exception
    inputs, buttons = controls(at)
    assert not inputs & OWNER_INPUTS, inputs
    assert not buttons & OWNER_BUTTONS, buttons
    assert at.query_params[access.KEY_PARAM] == VIEW  # the link keeps working after a reload
    assert "You are viewing" in " ".join(c.value for c in at.sidebar.caption)
    if page == "pages/results.py":  # the results themselves are there: the run's own figures and curves
        at.session_state["results_section"] = "Training"  # the curves' tab (a tab is computed when opened)
        at.run()
        assert not at.exception, at.exception
        run_id = at.selectbox(key="results_run").value
        metrics = RunDir(shared / run_id).metrics()
        assert {m.label: m.value for m in at.metric}["Accuracy"] == f"{metrics['accuracy']:.0%}"
        epochs = RunStore(shared).epochs(run_id)
        plotted = pd.concat([f for f in chart_data(at) if {"metric", "split", "epoch"} <= set(f.columns)])
        points = plotted[(plotted["metric"] == "accuracy") & (plotted["split"] == "val")].sort_values("epoch")
        assert points["epoch"].tolist() == epochs["epoch"].tolist()
        assert points["value"].tolist() == pytest.approx(epochs["val_acc"].tolist())
    if page == "pages/predict.py":
        assert [u for u in at.get("file_uploader")]  # drag and drop stays open to viewers


def test_the_owner_key_unlocks_the_controls_and_leaves_the_address_bar(shared):
    at = visit("pages/runs.py", OWNER)
    assert not at.exception, at.exception
    inputs, buttons = controls(at)
    assert {"dataset_input", "runs_input", "rename_to"} <= inputs and "Delete" in buttons
    assert access.KEY_PARAM not in at.query_params  # never on the projector


def test_a_viewer_can_become_owner_only_with_the_owner_key(shared):
    at = visit("pages/home.py", VIEW)
    at.sidebar.text_input(key="owner_key_input").input(VIEW).run()
    assert "dataset_input" not in controls(at)[0]
    at.sidebar.text_input(key="owner_key_input").input(OWNER).run()
    assert "dataset_input" in controls(at)[0]


def test_what_a_viewer_changes_stays_in_the_viewers_session(shared):
    before = settings.load()
    at = visit("pages/dataset.py", VIEW)
    at.number_input(key="min_per_class").set_value(before["min_per_class"] + 7).run()
    assert not at.exception, at.exception
    assert settings.load() == before


def test_typed_folders_outside_the_roots_are_refused(tmp_path, elpv_small):
    link = tmp_path / "innocent"
    link.symlink_to("/etc")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["dataset"] = str(elpv_small)
    at.run()
    for typed in ("/etc", str(link), str(tmp_path / ".." / ".." / ".." / "etc"), "~root"):
        at.sidebar.text_input(key="dataset_input").input(typed).run()
        assert not at.exception, at.exception
        assert "outside the folders this dashboard may open" in " ".join(e.value for e in at.error), typed
        assert at.session_state["dataset"] == str(elpv_small)
    at.sidebar.text_input(key="runs_input").input("/var/graft-runs").run()
    assert "outside the folders" in " ".join(e.value for e in at.error)
    assert not Path("/var/graft-runs").exists()


def test_a_typed_folder_is_quoted_literally_in_the_message(tmp_path, elpv_small):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state["dataset"] = str(elpv_small)
    at.run()
    for typed in ("/etc/`![x](http://example.invalid/p.png)`", str(elpv_small / "[click](http://example.invalid)")):
        at.sidebar.text_input(key="dataset_input").input(typed).run()
        assert not at.exception, at.exception
        shown = " ".join(e.value for e in at.error)
        assert "\\[" in shown and "](http" not in shown.replace("\\](http", ""), shown  # no link, no image


def test_a_dataset_chosen_before_the_roots_existed_is_refused_on_every_page(tmp_path):
    for page in PAGES[:3]:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.session_state["dataset"] = "/usr/share"
        at.run()
        at.switch_page(page).run()
        assert not at.exception, at.exception
        assert any("outside the folders" in e.value for e in at.error)


def test_confine_follows_links_and_dots(tmp_path):
    inside = tmp_path / "data"
    inside.mkdir()
    (inside / "to_etc").symlink_to("/etc")
    roots = [tmp_path.resolve()]
    assert access.confine(str(inside), roots) == inside.resolve()
    assert access.confine(str(inside / "new_folder"), roots) == (inside / "new_folder").resolve()
    for escape in (inside / "to_etc", inside / ".." / "..", "/"):
        with pytest.raises(BadInput, match="outside"):
            access.confine(str(escape), roots)
    with pytest.raises(BadInput):
        access.confine("  ", roots)
    default = access.allowed_roots({})
    assert Path.home().resolve() in default


def test_keys_compare_whole_and_never_print(monkeypatch):
    keys = access.Keys(view=VIEW, owner=OWNER)
    assert access.role_for(OWNER, keys) == access.OWNER and access.role_for(VIEW, keys) == access.VIEWER
    for wrong in (None, "", OWNER[:-1], OWNER + " x", VIEW.upper()):
        assert access.role_for(wrong, keys) is None
    assert access.role_for(None, None) == access.OWNER  # not shared: this machine only
    assert VIEW not in repr(keys) and OWNER not in repr(keys)
    assert access.sharing_keys({}) is None
    only_owner = access.sharing_keys({access.OWNER_KEY_ENV: OWNER})
    assert only_owner.owner == OWNER and only_owner.view not in ("", OWNER)
    fresh = access.new_keys()
    assert len({fresh.view, fresh.owner}) == 2 and len(fresh.view) >= 20


def test_share_prints_a_view_link_and_an_owner_link():
    result = run_cli("share", "--dry-run", "--port", "8599",
                     env={access.VIEW_KEY_ENV: VIEW, access.OWNER_KEY_ENV: OWNER})
    assert result.returncode == 0, result.stderr
    assert f":8599/?key={VIEW}" in result.stdout and f":8599/?key={OWNER}" in result.stdout
    assert "--server.address 0.0.0.0" in result.stdout
    assert "--browser.serverAddress" in result.stdout  # Streamlit would otherwise ask the internet for the address


HOSTILE = ["<img src=x onerror=alert(1)>", "\"><svg onload=alert(2)>"]


@pytest.mark.browser
def test_the_report_with_hostile_class_names_runs_no_script_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    data = tmp_path / "hostile"
    for name, source in zip(HOSTILE, ("defect_000", "defect_100")):
        (data / name).mkdir(parents=True)
        for f in sorted((elpv() / source).glob("*.png"))[:12]:
            shutil.copy2(f, data / name / f.name)
    runs = tmp_path / "runs"
    trained = run_cli("train", str(data), "--epochs", "2", "--runs", str(runs), "--name", "<b>bold</b> run")
    assert trained.returncode == 0, trained.stderr[-2000:]
    run_id = trained.stdout.strip().splitlines()[-1].split()[0].split("=", 1)[1]
    out = tmp_path / "report.html"
    assert run_cli("report", run_id, str(out), "--runs", str(runs)).returncode == 0
    text = out.read_text()
    assert "<img src=x" not in text and "<svg onload" not in text and "<b>bold</b>" not in text
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True)
        page = browser.new_page()
        dialogs, errors = [], []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri())
        page.wait_for_timeout(500)
        body = page.inner_text("body")
        browser.close()
    assert dialogs == [] and errors == []
    assert HOSTILE[0] in body and "<b>bold</b> run" in body  # shown as text, literally
