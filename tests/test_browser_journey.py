"""The presenter's journey in a real browser: Playwright driving Debian's Chromium against the real
server (`serve.py` on a free localhost port), on a small real ELPV subset.

Choose the dataset, look at it, train a short run and watch the live chart gain points, the page
ready again and leading to Results, the headline, the report downloaded, an image dropped on
Predict (its label equal to `python -m core predict`), a second run stopped from the browser, both
compared on Runs. Fails on any exception box, any console error from the app and any request to a
host other than the server. Screenshots of each step go to tests/artifacts/journey/ (git-ignored).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

from core.runs.store import RunStore

from helpers import ROOT, chromium, dashboard, make_subset, run_cli, wait_for

SHOTS = ROOT / "tests" / "artifacts" / "journey"

pytestmark = pytest.mark.browser


@pytest.fixture
def server(tmp_path):
    data = make_subset(tmp_path / "solar_cells", 12)
    env = {**os.environ, "GRAFT_HOME": str(tmp_path / "home"), "GRAFT_RUNS": str(tmp_path / "runs"),
           "GRAFT_DATA_ROOTS": str(tmp_path)}
    env.pop("GRAFT_SAMPLE", None)
    with dashboard(env) as (port, _):
        yield f"http://127.0.0.1:{port}", data, tmp_path / "runs"


class Journey:
    """The browser page, with the checks every step makes."""

    def __init__(self, page, base: str):
        self.page, self.base = page, base
        self.console_errors: list[str] = []
        self.foreign: list[str] = []
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        page.on("request", self._request)
        SHOTS.mkdir(parents=True, exist_ok=True)

    def _request(self, request) -> None:
        url = urlparse(request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname != "127.0.0.1":
            self.foreign.append(request.url)

    def settle(self, timeout: float = 60) -> None:
        """Wait until Streamlit is idle (no running script)."""
        self.page.wait_for_timeout(1000)
        self.page.wait_for_function(
            "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout * 1000)

    def check(self, step: str) -> None:
        self.page.screenshot(path=str(SHOTS / f"{step}.png"), full_page=True)
        assert self.page.locator("[data-testid='stException']").count() == 0, f"{step}: an exception box"
        assert not self.console_errors, f"{step}: console errors {self.console_errors}"
        assert not self.foreign, f"{step}: requests off the machine {self.foreign}"

    def go(self, name: str) -> None:
        self.page.locator("[data-testid='stSidebar'] a[data-testid='stPageLink-NavLink']", has_text=name).first.click()
        self.page.get_by_role("heading", name=name, exact=True).first.wait_for(timeout=60_000)
        self.settle()

    def text(self) -> str:
        return self.page.inner_text("[data-testid='stMain']")


def test_the_presenters_journey_in_chromium(server):
    from playwright.sync_api import sync_playwright

    base, data, runs = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True)
        page = browser.new_page(viewport={"width": 1440, "height": 900}, accept_downloads=True)
        page.set_default_timeout(60_000)
        journey = Journey(page, base)
        page.goto(base)
        page.get_by_role("heading", name="Graft").first.wait_for()
        # 1. choose the dataset
        folder = page.get_by_role("textbox", name="Dataset folder")
        folder.fill(str(data))
        folder.press("Enter")
        page.get_by_text("Classes").first.wait_for()
        journey.settle()
        journey.check("01-home")
        # 2. the dataset
        journey.go("Dataset")
        assert "Samples" in journey.text() and "Data health" in journey.text()
        journey.check("02-dataset")
        # 3. train a short run and watch it
        journey.go("Train")
        epochs = page.get_by_role("spinbutton", name="Epochs")
        epochs.fill("4")
        epochs.press("Tab")
        page.get_by_role("button", name="Start training").click()
        store = RunStore(runs)
        assert wait_for(lambda: len(store.list()) == 1, timeout=30)
        first = store.list()["id"].iloc[0]
        assert wait_for(lambda: len(store.epochs(first)) >= 1, timeout=180), "no epoch came"
        page.locator("[data-testid='stVegaLiteChart']").first.wait_for(timeout=30_000)  # the live curves
        page.get_by_text("Finished: right on").wait_for(timeout=180_000)
        assert len(store.epochs(first)) >= 2  # the chart gained points, epoch by epoch
        page.get_by_role("button", name="Start training").wait_for()
        assert page.get_by_role("button", name="Start training").is_enabled()  # ready again by itself
        journey.settle()
        journey.check("03-train-finished")
        # 4. results: the headline, then the report
        page.get_by_role("link", name="See the results").click()
        page.get_by_role("heading", name="Results", exact=True).first.wait_for()
        page.get_by_text(re.compile(r"^Right on \d+ of \d+ test images")).first.wait_for()
        journey.settle()
        assert "A model that always says" in journey.text()
        journey.check("04-results")
        page.get_by_role("tab", name="Report", exact=True).click()  # each section in its own tab
        journey.settle()
        page.get_by_role("button", name="Build the HTML report").click()
        with page.expect_download() as download:
            page.get_by_role("button", name="Download report.html").click()
        report = Path(download.value.path()).read_text()
        metrics = store.run_dir(first).metrics()  # the headline is the run's own metrics file
        assert f"Right on {metrics['correct']} of {metrics['n']} test images ({metrics['accuracy']:.0%};" in report
        assert "<svg" in report
        # 5. drag and drop an image on Predict; the label equals the CLI's
        journey.go("Predict")
        image = sorted((data / "defect_100").glob("*.png"))[0]
        page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(image))
        page.get_by_text(image.name).first.wait_for()
        page.locator("[data-testid='stVegaLiteChart']").first.wait_for()
        journey.settle()
        cli = run_cli("predict", str(runs / first), str(image), env={"GRAFT_HOME": str(runs.parent / "home")})
        assert cli.returncode == 0, cli.stderr
        label = cli.stdout.strip().splitlines()[-1].split()[1]
        assert f"{image.name}: {label}" in journey.text().replace("\\", "")
        journey.check("05-predict")
        # 6. a second, slower run, stopped from the browser
        journey.go("Train")
        page.get_by_role("spinbutton", name="Epochs").fill("300")
        page.get_by_role("spinbutton", name="Epochs").press("Tab")
        page.get_by_role("combobox", name="What trains").click()
        page.get_by_role("option", name="the last stages too").click()  # minutes, not seconds
        page.get_by_role("button", name="Start training").click()
        page.get_by_role("button", name="Stop training").click()
        try:
            page.get_by_text("Stopped on request").wait_for(timeout=120_000)
        except Exception:
            page.screenshot(path=str(SHOTS / "06-failed.png"), full_page=True)
            print(store.list()[["id", "status", "error"]].to_string())
            raise
        second = [r for r in store.list()["id"] if r != first][0]
        assert store.get(second)["status"] == "stopped"
        journey.settle()
        journey.check("06-stopped")
        # 7. both on Runs
        journey.go("Runs")
        assert "Compare" in journey.text()
        page.get_by_text("Is the difference real?").wait_for()
        journey.check("07-runs")
        browser.close()
