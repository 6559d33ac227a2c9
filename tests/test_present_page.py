"""Presenting a run: the Present page's shared step (the owner moves it, a viewer only follows it),
and in Chromium at 1440x900 the Results page on one screen plus tabs, and the Present page stepped
through with Next and the arrow keys. One dashboard for the browser tests of this module."""
from __future__ import annotations

import json
import os

import pytest
from streamlit.testing.v1 import AppTest

from core.base import access, settings
from core.present import presenter

from helpers import ROOT, chromium, dashboard, run_state

VIEW, OWNER = "view-key-for-the-tests-0123456789", "owner-key-for-the-tests-9876543210"


def _present(key: str | None, **state) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    if key:
        at.query_params[access.KEY_PARAM] = key
    for name, value in state.items():
        at.session_state[name] = value
    at.run()
    at.switch_page("pages/present.py").run()
    assert not at.exception, at.exception
    return at


def _heading(at: AppTest) -> str:
    return [h.value for h in at.main.header][-1]


def test_the_step_store_round_trips_and_refuses_nonsense(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAFT_HOME", str(tmp_path / "home"))
    assert presenter.read_step() is None
    saved = presenter.save_step("run-1", 3)
    assert presenter.read_step() == saved and saved["step"] == 3 and saved["run"] == "run-1"
    with pytest.raises(ValueError):
        presenter.save_step("run-1", -1)
    presenter.step_file().write_text('{"run": "run-1", "step": "three"}')  # damaged: nobody moves
    assert presenter.read_step() is None
    assert not list(presenter.step_file().parent.glob("*.tmp*"))  # written atomically, nothing left over


def test_the_owner_moves_the_shared_step_and_a_viewer_cannot(trained_run, elpv_small, tmp_path, monkeypatch):
    monkeypatch.setenv(access.VIEW_KEY_ENV, VIEW)
    monkeypatch.setenv(access.OWNER_KEY_ENV, OWNER)
    monkeypatch.setenv("GRAFT_HOME", str(tmp_path / "home"))
    runs, run_id, _ = trained_run
    settings.save(dataset=str(elpv_small), runs=str(runs))
    owner = _present(OWNER, runs_dir=str(runs), **run_state(trained_run)[0])
    assert _heading(owner) == "The data"
    owner.button(key="present_next").click().run()
    assert not owner.exception, owner.exception
    assert _heading(owner) == "How good is it?"
    assert len(owner.metric) == 3 and all(m.help for m in owner.metric)  # every figure has its sentence
    assert presenter.read_step()["step"] == 1 and presenter.read_step()["run"] == run_id

    viewer = _present(VIEW)
    assert "present_follow" in [t.key for t in viewer.toggle]
    for _ in range(3):  # the viewer's own session starts at the first step
        viewer.button(key="present_next").click().run()
        assert not viewer.exception, viewer.exception
    assert _heading(viewer) == "What to decide"  # the viewer's own page moved…
    assert presenter.read_step()["step"] == 1  # …the room's step did not

    viewer.toggle(key="present_follow").set_value(True).run()  # follow: back to the presenter's step
    assert not viewer.exception, viewer.exception
    assert _heading(viewer) == "How good is it?"
    owner.button(key="present_next").click().run()  # the presenter moves on: the follower's next run follows
    viewer.run()
    assert _heading(viewer) == "Where it fails" and presenter.read_step()["step"] == 2


# ------------------------------------------------------------------ in Chromium
@pytest.fixture(scope="module")
def browser_server(trained_run, elpv_small, tmp_path_factory):
    """The real dashboard over the trained run (local, owner), for this module's browser tests."""
    home = tmp_path_factory.mktemp("present_home")
    runs, run_id, _ = trained_run
    env = {**os.environ, "GRAFT_HOME": str(home), "GRAFT_RUNS": str(runs), "GRAFT_SAMPLE": str(elpv_small),
           "GRAFT_THREADS": "1"}
    env.pop(access.VIEW_KEY_ENV, None)
    env.pop(access.OWNER_KEY_ENV, None)
    with dashboard(env) as (port, _):
        yield f"http://127.0.0.1:{port}", home, run_id


def _settle(page) -> None:
    page.wait_for_timeout(800)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stSkeleton\"]')", timeout=60_000)


def _no_exception(page, where: str) -> None:
    boxes = page.locator("[data-testid='stException']")
    assert boxes.count() == 0, f"{where}: {boxes.all_inner_texts()}"


def _height(page) -> int:
    return page.evaluate("Math.max(document.documentElement.scrollHeight, "
                         "document.querySelector('[data-testid=stMain]').scrollHeight)")


@pytest.fixture(scope="module")
def desktop(browser_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


@pytest.mark.browser
@pytest.mark.slow
def test_results_answers_on_one_screen_and_the_rest_sits_in_tabs(browser_server, desktop):
    base, _, _ = browser_server
    page = desktop
    page.goto(f"{base}/results")
    page.get_by_role("heading", name="Results", exact=True).first.wait_for()
    _settle(page)
    _no_exception(page, "Results")
    fold = page.evaluate("innerHeight")
    for what in ("[data-testid='stMetric']", "[data-testid='stVegaLiteChart']"):  # tiles, matrix and bars
        boxes = [page.locator(what).nth(i).bounding_box() for i in range(page.locator(what).count())]
        assert len(boxes) >= (4 if "Metric" in what else 2), what
        assert all(b["y"] + b["height"] <= fold for b in boxes), (what, boxes)  # on the first screen, no scroll
    headline = page.get_by_text("Right on").first.bounding_box()
    assert headline["y"] + headline["height"] <= fold
    tabs = page.get_by_role("tab").all_inner_texts()
    assert len(tabs) >= 4 and {"Mistakes", "Pass or inspect", "Training", "Report"} <= set(tabs), tabs
    heights = {}
    for label in tabs:
        page.get_by_role("tab", name=label, exact=True).click()
        _settle(page)
        _no_exception(page, label)
        heights[label] = _height(page)
    assert max(heights.values()) <= 2200, heights
    page.goto(f"{base}/results?section=training")  # a section can be linked
    page.get_by_role("heading", name="Results", exact=True).first.wait_for()
    _settle(page)
    assert page.get_by_role("tab", name="Training", exact=True).get_attribute("aria-selected") == "true"


@pytest.mark.browser
@pytest.mark.slow
def test_the_present_page_steps_with_next_and_the_arrow_keys(browser_server, desktop):
    base, home, run_id = browser_server
    page = desktop
    page.goto(f"{base}/present")
    page.get_by_role("heading", name="Present", exact=True).first.wait_for()
    _settle(page)
    seen = []
    for step in range(5):
        _no_exception(page, f"step {step + 1}")
        seen.append(page.locator(".st-key-present h2").first.inner_text())
        if step < 4:
            page.get_by_role("button", name="Next").click()
            _settle(page)
    assert seen == ["The data", "How good is it?", "Where it fails", "What to decide", "Try a photo"]
    assert page.get_by_role("button", name="Next").is_disabled()  # the last step
    page.locator("body").press("ArrowLeft")
    _settle(page)
    assert page.locator(".st-key-present h2").first.inner_text() == "What to decide"
    saved = json.loads((home / presenter.STEP_FILE).read_text())  # the server's own Graft home
    assert (saved["run"], saved["step"]) == (run_id, 3)  # the owner's step, saved for the room
