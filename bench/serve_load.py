"""`graft serve` under load: latency, throughput and memory at several concurrencies, against the
batched throughput of the same model in one process.

    python bench/serve_load.py [RUN] [--requests 300] [--levels 1 8 32] [--seconds 90]

Without RUN, trains a small run first (frozen Lite0, 40 ELPV photos a class, 3 epochs). Starts the
real server (`python -m core serve RUN`) on a free loopback port, drives it with threads, each on
its own keep-alive connection, posting one real photo a request (multipart), and prints for each
concurrency: p50/p95/p99 latency, throughput, errors, the server's mean batch size and its memory
(RSS and peak, from /proc). The reference is the same work in this process (decode, preprocess,
forward in batches of 32: `core.deploy.scoring.decode` + `verdicts`), measured in the same run, so
the ratio says how close serving comes to batched scoring. Loopback only; bounded in requests and time.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def small_run(work: Path) -> Path:
    from core.data import samples
    from core.train.config import TrainConfig
    from core.train.session import fit

    elpv = samples.fetch("elpv")
    subset = work / "elpv"
    for cls in sorted(p for p in elpv.iterdir() if p.is_dir()):
        (subset / cls.name).mkdir(parents=True)
        for f in sorted(cls.glob("*.png"))[:40]:
            shutil.copy2(f, subset / cls.name / f.name)
    run_id = fit(TrainConfig(data=str(subset), epochs=3), work / "runs", progress=False)
    return work / "runs" / run_id


def photos_of(run: Path, count: int = 64) -> list[tuple[str, bytes]]:
    from core.runs.folder import RunDir

    data = RunDir(run).card().data_root
    files = sorted(data.rglob("*.png"))
    files = files[:: max(1, len(files) // count)][:count]
    return [(f.name, f.read_bytes()) for f in files]


def reference(run: Path, photos: list[tuple[str, bytes]], rounds: int = 2) -> float:
    """Photos a second through decode + verdicts in batches of 32, in this process (best of `rounds`)."""
    from core.base.runtime import configure_threads
    from core.deploy.predict import Predictor
    from core.deploy.scoring import decode, verdicts

    configure_threads()
    predictor = Predictor.from_run(run)
    verdicts(predictor, [decode(photos[0][1])])  # warm-up
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(0, len(photos), 32):
            verdicts(predictor, [decode(data, name) for name, data in photos[i:i + 32]], batch_size=32)
        best = min(best, time.perf_counter() - start)
    return len(photos) / best


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def get(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def drive(port: int, photos: list[tuple[str, bytes]], concurrency: int, requests: int, seconds: float) -> dict:
    """`requests` single-photo requests from `concurrency` threads (or until `seconds` pass)."""
    bodies = [multipart(name, data) for name, data in photos]
    lock, counter = threading.Lock(), iter(range(requests))
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            body, ctype = bodies[i % len(bodies)]
            start = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=body, headers={"Content-Type": ctype})
                response = conn.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as err:
                status = type(err).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            elapsed = time.perf_counter() - start
            with lock:
                if status == "200":
                    latencies.append(elapsed)
                else:
                    errors[status] = errors.get(status, 0) + 1
        conn.close()

    before = get(port, "/health")
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    after = get(port, "/health")
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")  # noqa: E731
    batches = after["batches"] - before["batches"]
    return {"concurrency": concurrency, "ok": len(latencies), "errors": errors, "p50": pick(0.50),
            "p95": pick(0.95), "p99": pick(0.99), "throughput": len(latencies) / wall,
            "mean_batch": (after["scored"] - before["scored"]) / batches if batches else float("nan")}


def memory(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) of a process in MB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", help="a run folder (default: train a small one)")
    parser.add_argument("--requests", type=int, default=300, help="requests a concurrency level")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=90.0, help="time limit a level")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="graft-serve-bench-"))
    run = Path(args.run) if args.run else small_run(work)
    photos = photos_of(run)
    batched = reference(run, photos)
    port = free_port()
    log = open(work / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "core", "serve", str(run), "--port", str(port),
                               "--queue", str(max(128, 2 * max(args.levels)))],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if get(port, "/health")["status"] == "ok":
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start:\n" + (work / "serve.log").read_text()[-2000:])
            time.sleep(0.2)
        idle_rss, _ = memory(server.pid)
        drive(port, photos, 1, 10, 30)  # warm-up
        print(f"run {run.name}; {len(photos)} real photos; {os.cpu_count()} CPUs; server idle RSS {idle_rss:.0f} MB")
        rows = []
        for level in args.levels:
            r = drive(port, photos, level, args.requests, args.seconds)
            rows.append((r, *memory(server.pid)))
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    batched = max(batched, reference(run, photos))  # again with the server stopped: the better of the two
    shutil.rmtree(work, ignore_errors=True)
    print(f"in-process reference (decode + verdicts, batches of 32, best before/after): {batched:.1f} photos/s")
    print(f"{'conc':>4} {'ok':>5} {'errors':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'photos/s':>9} "
          f"{'vs ref':>7} {'batch':>6} {'RSS MB':>7} {'peak MB':>8}")
    for r, rss, peak in rows:
        errors = sum(r["errors"].values())
        print(f"{r['concurrency']:>4} {r['ok']:>5} {errors:>8} {r['p50']:>8.1f} {r['p95']:>8.1f} {r['p99']:>8.1f} "
              f"{r['throughput']:>9.1f} {r['throughput'] / batched:>7.2f} {r['mean_batch']:>6.1f} {rss:>7.0f} "
              f"{peak:>8.0f}" + (f"  {r['errors']}" if errors else ""))


if __name__ == "__main__":
    main()
