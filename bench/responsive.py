"""Does the dashboard stay responsive while a training runs? (issue 16)

    python bench/responsive.py [--per-class N] [--seconds S] [--viewers 1 3]

Starts the real dashboard (`streamlit run app.py` on a free localhost port), trains through the
same path the Train page uses (`core.jobs.start`: a detached worker at lower priority) on the ELPV
sample, and meanwhile opens N concurrent viewers (one Debian Chromium, N browser contexts, driven
by Playwright) that load Home, Results and Train in a loop. A page counts as drawn when its
page-specific content is on screen (Home: "Latest runs"; Results: the confusion matrix; Train: the
Start button), timed from the click on its sidebar link. Prints, per number of viewers, the median and 95th-percentile draw time of each
page with no training and during the training, and the training's wall time alone and with the
viewers. Targets on 2 cores: p95 ≤ 2 s with 3 viewers during training; training slowed ≤ 15 %.

The training is a frozen-backbone run without the feature cache (`--no-cache`: the backbone runs
on every image every epoch), so it keeps the CPUs busy for the whole measurement.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAGES = {"Home": ("", "text=Latest runs"), "Results": ("results", "text=Confusion matrix"),
         "Train": ("train", "button:has-text('Start training')")}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, env: dict) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--server.headless",
                               "true", "--server.address", "127.0.0.1", "--server.port", str(port),
                               "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("the dashboard did not start")


async def viewer(browser, base: str, until, times: dict[str, list[float]]) -> None:
    """Open the dashboard once, then move through Home, Results and Train with the sidebar's links
    (as a person does) until `until()` is true; record each page's draw time."""
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await context.new_page()
    try:
        await page.goto(base, timeout=60_000)
        await page.locator(PAGES["Home"][1]).first.wait_for(state="visible", timeout=60_000)
        while not until():
            for name, (path, marker) in PAGES.items():
                if until():
                    break
                started = time.perf_counter()
                try:
                    await page.locator("[data-testid='stSidebar'] a[data-testid='stPageLink-NavLink']").filter(has_text=name).first.click()
                    await page.locator(marker).first.wait_for(state="visible", timeout=60_000)
                    times[name].append(time.perf_counter() - started)
                except Exception:  # a page that never drew within a minute counts as 60 s
                    times[name].append(60.0)
    finally:
        await context.close()


async def view(base: str, n: int, until) -> dict[str, list[float]]:
    from playwright.async_api import async_playwright

    times: dict[str, list[float]] = {name: [] for name in PAGES}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                          args=CHROMIUM_ARGS)
        try:
            await asyncio.gather(*(viewer(browser, base, until, times) for _ in range(n)))
        finally:
            await browser.close()
    return times


def train(config, runs: Path) -> float:
    """Start a training the way the Train page does; wait for it; its wall time in seconds."""
    from core import jobs
    from core.runs import RunStore

    run_id = jobs.start(config, runs)
    store = RunStore.open(runs)
    while store.get(run_id)["status"] in ("queued", "running") or jobs.active(runs):
        time.sleep(0.5)
    run = store.get(run_id)
    if run["status"] != "completed":
        raise RuntimeError(f"the bench training ended {run['status']}: {run['error']}")
    return run["ended"] - run["started"]


def stats(values: list[float]) -> str:
    if not values:
        return "—"
    p95 = sorted(values)[max(0, int(round(0.95 * len(values))) - 1)]
    return f"{statistics.median(values):.2f} / {p95:.2f} (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=0, help="images per class from ELPV (0: all 2,624)")
    parser.add_argument("--seconds", type=float, default=30, help="viewing time without training, per N")
    parser.add_argument("--viewers", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()

    from core import samples
    from core.train import TrainConfig, fit

    work = Path(tempfile.mkdtemp(prefix="graft-responsive-"))
    data = samples.fetch("elpv", progress=False)
    if args.per_class:
        for cls in sorted(p for p in data.iterdir() if p.is_dir()):
            (work / "data" / cls.name).mkdir(parents=True)
            for f in sorted(cls.glob("*.png"))[:args.per_class]:
                shutil.copy2(f, work / "data" / cls.name / f.name)
        data = work / "data"
    runs = work / "runs"
    print(f"data: {data} ({sum(1 for _ in data.rglob('*.png'))} images); runs: {runs}", flush=True)
    fit(TrainConfig(data=str(data), name="shown on Results"), runs, progress=False)  # what Results shows
    config = TrainConfig(data=str(data), cache=False, epochs=args.epochs, name="bench training")

    port = free_port()
    env = {**os.environ, "GRAFT_SAMPLE": str(data), "GRAFT_RUNS": str(runs), "PYTHONPATH": str(ROOT)}
    server = start_server(port, env)
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(view(base, 1, lambda t=time.monotonic() + 10: time.monotonic() > t))  # warm-up
        rows = []
        for n in args.viewers:
            deadline = time.monotonic() + args.seconds
            idle = asyncio.run(view(base, n, lambda: time.monotonic() > deadline))
            rows.append((n, "no training", idle, None))
        alone = train(config, runs)
        print(f"training alone: {alone:.1f} s", flush=True)
        for n in args.viewers:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(1) as pool:
                job = pool.submit(train, config, runs)
                busy = asyncio.run(view(base, n, job.done))
                wall = job.result()
            rows.append((n, "during training", busy, wall))
    finally:
        server.terminate()
        server.wait()

    print(f"\ndraw time in seconds, median / p95 (a page is drawn when its content is visible); "
          f"{os.cpu_count()} cores")
    print(f"| viewers | when | {' | '.join(PAGES)} | all pages | training wall s (× alone {alone:.1f} s) |")
    print("|---:|---|" + "---|" * (len(PAGES) + 2))
    for n, when, times, wall in rows:
        every = [t for v in times.values() for t in v]
        slowdown = f"{wall:.1f} ({wall / alone:.2f}×)" if wall else ""
        print(f"| {n} | {when} | {' | '.join(stats(times[p]) for p in PAGES)} | {stats(every)} | {slowdown} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
