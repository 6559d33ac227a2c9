"""Does the dashboard stay responsive while a training runs? (issue 16)

    python bench/responsive.py [--per-class N] [--seconds S] [--viewers 1 3] [--dwell 0 3]
                               [--client ws|chromium]

Starts the real dashboard (`serve.py` on a free localhost port), trains through the same path the
Train page uses (`core.jobs.start`: a detached worker at lower priority) on the ELPV sample, and
meanwhile opens N concurrent viewers that load Home, Results and Train in a loop. Prints, per
number of viewers and dwell time, the median and 95th-percentile draw time of each page with no
training and during the training, and the training's wall time alone and with the viewers.
Targets on 2 cores: p95 ≤ 2 s with 3 viewers during training; training slowed ≤ 15 %.

Viewers (`--client`):
- `ws` (default): WebSocket clients speaking Streamlit's own protocol, as the browser does: a
  page switch is the browser's `rerun_script` message with the page's hash; the page counts as
  drawn when the server has sent the whole page (`script_finished`), the page's own words are in
  it (Home: "Latest runs"; Results: "Confusion matrix"; Train: "Start training") and every image
  it refers to has been downloaded. While a viewer dwells on a page, it sends the fragment reruns
  a browser sends (the Train page's live view) at the interval the server asked for. This
  measures the server; the browsers of a room run on the viewers' own machines, not on the
  training machine.
- `chromium`: Debian Chromium with N browser contexts driven by Playwright, timed from the click on
  the sidebar link to the page's words on screen. On a 2-core machine the browsers' own rendering
  competes with the server and the training, so this measures the browsers as well.

`--dwell`: seconds a viewer looks at each page before the next click (0: back to back, the
stress case; a person reading a page takes a few seconds).

The training is a frozen-backbone run without the feature cache (`--no-cache`: the backbone runs
on every image every epoch), so it keeps the CPUs busy for the whole measurement.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PAGES = {"Home": ("", "text=Latest runs"), "Results": ("results", "text=Confusion matrix"),
         "Train": ("train", "button:has-text('Start training')")}
WORDS = {"Home": b"Latest runs", "Results": b"Confusion matrix", "Train": b"Start training"}
MEDIA = re.compile(rb"/media/[0-9a-f]+\.[a-z0-9]+")
TRAIN_POLL = "Train, live view (each poll)"
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


class StreamlitClient:
    """One browser session over Streamlit's WebSocket protocol: page runs and fragment reruns."""

    def __init__(self, ws, base: str):
        self.ws, self.base = ws, base
        self.pages: dict[str, str] = {}  # url path → page script hash
        self.auto_rerun: tuple[float, str] | None = None  # (interval s, fragment id) of the page shown

    async def rerun(self, path: str | None = None, fragment: str = "") -> tuple[int, bytes]:
        """Ask for a page run (or a fragment rerun); → (the script_finished status, every byte received)."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        msg = BackMsg()
        msg.rerun_script.SetInParent()
        if path is not None:
            msg.rerun_script.page_name = path
            msg.rerun_script.page_script_hash = self.pages.get(path, "")
        if fragment:
            msg.rerun_script.fragment_id, msg.rerun_script.is_auto_rerun = fragment, True
        if not fragment:
            self.auto_rerun = None
        await self.ws.send(msg.SerializeToString())
        received = bytearray()
        while True:
            raw = await self.ws.recv()
            received += raw
            forward = ForwardMsg()
            forward.ParseFromString(raw)
            kind = forward.WhichOneof("type")
            if kind == "navigation":
                self.pages = {p.url_pathname: p.page_script_hash for p in forward.navigation.app_pages}
            elif kind == "auto_rerun":
                self.auto_rerun = (forward.auto_rerun.interval, forward.auto_rerun.fragment_id)
            elif kind == "script_finished":
                return forward.script_finished, bytes(received)

    async def draw(self, name: str) -> float:
        """Switch to a page as its sidebar link does; seconds until it is all there (images included)."""
        started = time.perf_counter()
        status, received = await self.rerun(PAGES[name][0])
        if status != 0 or WORDS[name] not in received:
            raise RuntimeError(f"{name} did not draw (status {status})")
        urls = sorted(set(MEDIA.findall(received)))
        await asyncio.gather(*(asyncio.to_thread(fetch, self.base + url.decode()) for url in urls))
        return time.perf_counter() - started

    async def dwell(self, seconds: float, polls: list[float]) -> None:
        """Look at the page for `seconds`, sending the fragment reruns its live parts ask for."""
        until = time.monotonic() + seconds
        while self.auto_rerun and time.monotonic() + self.auto_rerun[0] < until:
            await asyncio.sleep(self.auto_rerun[0])
            started = time.perf_counter()
            await self.rerun(fragment=self.auto_rerun[1])
            polls.append(time.perf_counter() - started)
        await asyncio.sleep(max(0.0, until - time.monotonic()))


def fetch(url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()


async def ws_viewer(base: str, until, times: dict[str, list[float]], dwell: float) -> None:
    """One viewer over WebSocket: open the dashboard, then Home, Results, Train, … until `until()`."""
    import websockets

    async with websockets.connect(base.replace("http", "ws") + "/_stcore/stream", subprotocols=["streamlit"],
                                  max_size=None, open_timeout=60) as ws:
        client = StreamlitClient(ws, base)
        await asyncio.wait_for(client.rerun(), 60)
        while not until():
            for name in PAGES:
                if until():
                    break
                try:
                    times[name].append(await asyncio.wait_for(client.draw(name), 60))
                except (asyncio.TimeoutError, RuntimeError):  # a page that never drew within a minute counts as 60 s
                    times[name].append(60.0)
                await client.dwell(dwell, times[TRAIN_POLL])


async def viewer(browser, base: str, until, times: dict[str, list[float]], dwell: float) -> None:
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
                await asyncio.sleep(dwell)
    finally:
        await context.close()


async def view(base: str, n: int, until, client: str = "ws", dwell: float = 0.0) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in [*PAGES, TRAIN_POLL]}
    if client == "ws":
        await asyncio.gather(*(ws_viewer(base, until, times, dwell) for _ in range(n)))
        return times
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                          args=CHROMIUM_ARGS)
        try:
            await asyncio.gather(*(viewer(browser, base, until, times, dwell) for _ in range(n)))
        finally:
            await browser.close()
    return times


def train(config, runs: Path) -> float:
    """Start a training the way the Train page does; wait for it; its wall time in seconds."""
    from core.runs.store import RunStore
    from core.train import jobs

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
    parser.add_argument("--dwell", type=float, nargs="+", default=[0.0, 3.0],
                        help="seconds a viewer looks at each page before the next click")
    parser.add_argument("--client", choices=["ws", "chromium"], default="ws")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the bench training (about 12 s each on "
                                                                     "240 images here)")
    args = parser.parse_args()

    from core.data import samples
    from core.train.config import TrainConfig
    from core.train.session import fit

    work = Path(tempfile.mkdtemp(prefix="graft-responsive-"))
    data = samples.fetch("elpv", progress=False)
    if args.per_class:
        for cls in sorted(p for p in data.iterdir() if p.is_dir()):
            (work / "data" / cls.name).mkdir(parents=True)
            for f in sorted(cls.glob("*.png"))[:args.per_class]:
                shutil.copy2(f, work / "data" / cls.name / f.name)
        data = work / "data"
    runs = work / "runs"
    print(f"data: {data} ({sum(1 for _ in data.rglob('*.png'))} images); runs: {runs}; viewers: {args.client}",
          flush=True)
    fit(TrainConfig(data=str(data), name="shown on Results"), runs, progress=False)  # what Results shows
    config = TrainConfig(data=str(data), cache=False, epochs=args.epochs, name="bench training")

    port = free_port()
    env = {**os.environ, "GRAFT_SAMPLE": str(data), "GRAFT_RUNS": str(runs),
           "GRAFT_DATA_ROOTS": os.pathsep.join([str(work), str(data)])}
    server = start_server(port, env)
    base = f"http://127.0.0.1:{port}"
    rows, alone = [], []
    try:
        asyncio.run(view(base, 1, lambda t=time.monotonic() + 10: time.monotonic() > t, args.client))  # warm-up
        alone.append(train(config, runs))
        print(f"training alone: {alone[-1]:.1f} s", flush=True)
        for dwell in args.dwell:
            for n in args.viewers:
                deadline = time.monotonic() + args.seconds
                idle = asyncio.run(view(base, n, lambda: time.monotonic() > deadline, args.client, dwell))
                rows.append((n, dwell, "no training", idle, None))
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(1) as pool:
                    job = pool.submit(train, config, runs)
                    busy = asyncio.run(view(base, n, job.done, args.client, dwell))
                    wall = job.result()
                rows.append((n, dwell, "during training", busy, wall))
                print(f"{n} viewers, dwell {dwell:g} s: training {wall:.1f} s", flush=True)
        alone.append(train(config, runs))
        print(f"training alone again: {alone[-1]:.1f} s", flush=True)
    finally:
        server.terminate()
        server.wait()

    base_wall = statistics.mean(alone)
    print(f"\ndraw time in seconds, median / p95 (n = pages drawn); viewers: {args.client}; {os.cpu_count()} cores; "
          f"training alone {' and '.join(f'{a:.1f}' for a in alone)} s")
    print(f"| viewers | dwell s | when | {' | '.join(PAGES)} | all pages | {TRAIN_POLL} | training wall s (× alone) |")
    print("|---:|---:|---|" + "---|" * (len(PAGES) + 3))
    for n, dwell, when, times, wall in rows:
        every = [t for p in PAGES for t in times[p]]
        slowdown = f"{wall:.1f} ({wall / base_wall:.2f}×)" if wall else ""
        print(f"| {n} | {dwell:g} | {when} | {' | '.join(stats(times[p]) for p in PAGES)} | {stats(every)} | "
              f"{stats(times[TRAIN_POLL])} | {slowdown} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
