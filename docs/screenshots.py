"""Regenerate the README's screenshots into docs/img/ (small PNGs).

    python docs/screenshots.py        # in the project's virtualenv; a few minutes on two cores

It copies a small subset of the ELPV sample (fetched when missing), trains one short run through the
command line, starts the dashboard on a free localhost port with its own Graft cache, then drives
Debian's Chromium through Playwright: Home, Dataset, Train (a second short run started from the
page), Results, Predict (a photo dropped on it, Grad-CAM on), Runs and Present. Each page is shot at a
1440×900 viewport and saved scaled down as docs/img/PAGE.png (Present on its second step); docs/img/hero.png is Predict's answer
alone. Apart from fetching the sample when it is missing, it writes only into a temporary folder
(removed at the end) and docs/img/. Playwright drives the system's Chromium (`apt-get install
chromium`); it never downloads a browser.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img"
VIEWPORT = {"width": 1440, "height": 900}
SAVED_WIDTH = 720  # pixels; the README shows them smaller still


def subset(source: Path, dest: Path, per_class: int) -> Path:
    """The first `per_class` photos (by name) of each class folder of `source`, copied into `dest`, with the
    sample's notes (`.graft/`: the classes' display names)."""
    if (source / ".graft").is_dir():
        shutil.copytree(source / ".graft", dest / ".graft", dirs_exist_ok=True)
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        (dest / folder.name).mkdir(parents=True, exist_ok=True)
        for photo in sorted(folder.glob("*.png"))[:per_class]:
            shutil.copy2(photo, dest / folder.name / photo.name)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def save_small(raw: Path, name: str) -> Path:
    """The viewport shot scaled to SAVED_WIDTH and reduced to 256 colours: a few tens of KB."""
    from PIL import Image

    image = Image.open(raw).convert("RGB")
    height = round(image.height * SAVED_WIDTH / image.width)
    small = image.resize((SAVED_WIDTH, height), Image.LANCZOS).quantize(256, method=Image.Quantize.MEDIANCUT)
    out = OUT / f"{name}.png"
    small.save(out, optimize=True)
    print(f"{out.relative_to(ROOT)}: {out.stat().st_size // 1024} KB", flush=True)
    return out


class Browser:
    """A Chromium page on the dashboard, with the waits every shot needs."""

    def __init__(self, page, work: Path):
        self.page, self.work = page, work

    def settle(self, timeout_s: float = 120) -> None:
        """Wait until Streamlit has no script running, then a moment for images and charts to draw."""
        self.page.wait_for_timeout(1000)
        self.page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                                    timeout=timeout_s * 1000)
        self.page.wait_for_timeout(1500)

    def go(self, name: str) -> None:
        self.page.locator("[data-testid='stSidebar'] a[data-testid='stPageLink-NavLink']", has_text=name).first.click()
        self.page.get_by_role("heading", name=name, exact=True).first.wait_for(timeout=120_000)
        self.settle()

    def shot(self, name: str, clip: dict | None = None) -> Path:
        self.page.mouse.move(VIEWPORT["width"] - 5, VIEWPORT["height"] - 5)  # no hover toolbars in the shot
        self.page.wait_for_timeout(300)
        raw = self.work / f"{name}-raw.png"
        self.page.screenshot(path=str(raw), clip=clip)
        return save_small(raw, name)

    def to_top(self, locator) -> None:
        """Scroll the page so that `locator` sits at the top of the viewport."""
        locator.evaluate("e => e.scrollIntoView({block: 'start'})")
        self.settle()


def tour(base: str, data: Path, runs: Path, work: Path, epochs: int) -> None:
    from playwright.sync_api import sync_playwright

    from core.runs.store import RunStore

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("Chromium is missing: apt-get install chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(120_000)
        b = Browser(page, work)
        page.goto(base)
        page.get_by_role("heading", name="Graft").first.wait_for()
        page.get_by_text("Latest runs").first.wait_for()
        b.settle()
        b.shot("home")

        b.go("Dataset")
        page.get_by_text("Data health").first.wait_for()
        b.settle()
        b.shot("dataset")

        b.go("Train")
        field = page.get_by_role("spinbutton", name="Epochs")
        field.fill(str(epochs))
        field.press("Tab")
        before = len(RunStore(runs).list())
        page.get_by_role("button", name="Start training").click()
        deadline = time.monotonic() + 600
        while not finished(runs, before):
            if time.monotonic() > deadline:
                sys.exit("the training started from the Train page did not finish in 10 minutes")
            time.sleep(1)
        page.get_by_role("button", name="Stop training").wait_for(state="detached")
        page.get_by_text("Finished: right on").wait_for()
        b.settle()
        b.to_top(page.get_by_role("button", name="Start training"))
        b.shot("train")

        page.get_by_role("link", name="See the results").click()
        page.get_by_role("heading", name="Results", exact=True).first.wait_for()
        b.settle(timeout_s=300)
        b.shot("results")

        b.go("Predict")
        photo = sorted((data / "defect_100").glob("*.png"))[-1]
        page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(photo))
        page.locator("[data-testid='stVegaLiteChart']").first.wait_for()
        b.settle()
        page.get_by_text("Grad-CAM", exact=True).first.click()
        page.get_by_text("why '").first.wait_for()
        b.settle()
        b.shot("predict")
        heading = page.get_by_role("heading", name="Images").first
        b.to_top(heading)
        main = page.locator("[data-testid='stMainBlockContainer']").first.bounding_box()
        top = heading.bounding_box()["y"]
        why = page.get_by_text("why '").first.bounding_box()
        b.shot("hero", clip={"x": main["x"] + 40, "y": max(top - 10, 0), "width": main["width"] - 80,
                             "height": why["y"] + why["height"] + 20 - max(top - 10, 0)})

        b.go("Runs")
        b.shot("runs")

        b.go("Present")
        page.get_by_role("button", name="Next").click()  # "How good is it?", in a room's type
        b.settle()
        b.shot("present")
        browser.close()


def finished(runs: Path, before: int) -> bool:
    """Whether a run started after the first `before` ones has ended."""
    from core.runs.store import RunStore

    table = RunStore(runs).list()
    return len(table) > before and table["status"].iloc[0] not in ("queued", "running")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", help="the ELPV sample folder (default: the Graft cache's, fetched when missing)")
    parser.add_argument("--per-class", type=int, default=30, help="photos copied from each class (default 30)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the first run, trained by the command line "
                        "(default 2)")
    parser.add_argument("--page-epochs", type=int, default=6, help="epochs of the run started from the Train page, "
                        "so its curves have a few points (default 6; under a second each)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (runs, server log) and say where")
    args = parser.parse_args()

    if args.sample:
        sample = Path(args.sample).expanduser()
    else:
        from core.data import samples

        sample = samples.fetch("elpv", progress=False)
    work = Path(tempfile.mkdtemp(prefix="graft-screenshots-"))
    data, runs = subset(sample, work / "solar_cells", args.per_class), work / "runs"
    env = {**os.environ, "GRAFT_HOME": str(work / "home"), "GRAFT_RUNS": str(runs), "GRAFT_SAMPLE": str(data),
           "GRAFT_DATA_ROOTS": str(work), "GRAFT_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    for key in ("GRAFT_VIEW_KEY", "GRAFT_OWNER_KEY"):  # a local dashboard: whoever opens it is the owner
        env.pop(key, None)
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    print(f"training a first run on {data} ...", flush=True)
    trained = subprocess.run([sys.executable, "-m", "core", "train", str(data), "--freeze", "head",
                              "--epochs", str(args.epochs), "--name", "first look", "--runs", str(runs)],
                             cwd=ROOT, env=env, capture_output=True, text=True)
    if trained.returncode != 0:
        sys.exit(f"training failed:\n{trained.stderr[-3000:]}")
    print(trained.stdout.strip().splitlines()[-1], flush=True)

    port = free_port()
    log = open(work / "server.log", "wb")
    server = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--server.headless", "true",
                               "--server.address", "127.0.0.1", "--server.port", str(port)],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not listening(port):
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the dashboard did not start; see {work / 'server.log'}")
            time.sleep(0.5)
        tour(f"http://127.0.0.1:{port}", data, runs, work, args.page_epochs)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"done in {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
