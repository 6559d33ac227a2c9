"""The room's phones: every page, as a viewer opens it from the view link, at 390x844 in Chromium is
no wider than the screen (tables and charts scroll inside themselves, columns stack). One dashboard
for the module, over the smallest trained run the fixtures offer."""
from __future__ import annotations

import os

import pytest

from core.base import access

from helpers import chromium, dashboard

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEW, OWNER = "view-key-for-the-tests-0123456789", "owner-key-for-the-tests-9876543210"
PAGES = {"Home": "", "Dataset": "dataset", "Train": "train", "Results": "results", "Predict": "predict",
         "Runs": "runs", "Present": "present", "Inbox": "inbox"}
PHONE = {"width": 390, "height": 844}
# The widest thing on the page: the document and every container Streamlit scrolls the page in.
WIDTH = """() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth,
    ...[...document.querySelectorAll('[data-testid=stAppViewContainer], [data-testid=stMain], '
        + '[data-testid=stMainBlockContainer]')].map(e => e.scrollWidth))"""


@pytest.fixture(scope="module")
def phone(trained_run, elpv_small, tmp_path_factory):
    """A shared dashboard (view and owner keys) over the trained run, and a phone-sized Chromium page."""
    from playwright.sync_api import sync_playwright

    runs, _, _ = trained_run
    env = {**os.environ, "GRAFT_HOME": str(tmp_path_factory.mktemp("phone_home")), "GRAFT_RUNS": str(runs),
           "GRAFT_SAMPLE": str(elpv_small), access.VIEW_KEY_ENV: VIEW, access.OWNER_KEY_ENV: OWNER,
           "GRAFT_THREADS": "1"}
    with dashboard(env) as (port, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True)
        page = browser.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
        page.set_default_timeout(60_000)
        yield page, f"http://127.0.0.1:{port}"
        browser.close()


def _open(page, url: str) -> None:
    page.goto(url)
    page.locator("[data-testid='stMainBlockContainer'] h1").first.wait_for(timeout=120_000)
    page.wait_for_timeout(800)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stSkeleton\"]')", timeout=60_000)


def test_the_width_check_sees_a_page_wider_than_the_phone(phone):
    page, base = phone
    _open(page, f"{base}/?{access.KEY_PARAM}={VIEW}")
    assert page.evaluate(WIDTH) <= PHONE["width"]
    page.evaluate("""() => { const wide = document.createElement('div'); wide.id = 'too-wide';
        wide.style.width = '900px'; wide.style.height = '10px';
        document.querySelector('[data-testid=stMainBlockContainer]').appendChild(wide); }""")
    assert page.evaluate(WIDTH) > PHONE["width"]  # what the test below would catch
    page.evaluate("() => document.getElementById('too-wide').remove()")


@pytest.mark.parametrize("name", list(PAGES))
def test_no_page_is_wider_than_a_phone_in_view_mode(phone, name):
    page, base = phone
    _open(page, f"{base}/{PAGES[name]}?{access.KEY_PARAM}={VIEW}")
    assert page.locator("[data-testid='stException']").count() == 0, page.locator(
        "[data-testid='stException']").all_inner_texts()
    assert f"{access.KEY_PARAM}={VIEW}" in page.url  # a viewer's page (the view key stays in the address)
    assert page.evaluate(WIDTH) <= PHONE["width"], f"{name} is {page.evaluate(WIDTH)} px wide at 390 px"
