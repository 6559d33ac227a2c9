"""`graft serve` under load: latency, throughput and memory at several concurrencies, against the
batched throughput of the same model in one process.

    python bench/serve_load.py [RUN] [--engine onnx|int8|run] [--requests 300] [--levels 1 8 32]
    python bench/serve_load.py RUN --requests 10000 --levels 32     # the 10,000-request run

Without RUN, trains a small run first (frozen Lite0, 40 ELPV photos a class, 3 epochs). By default
the run is exported to ONNX (what a line would get; `--engine int8` quantizes it, `--engine run`
serves the run's PyTorch model) and the export is served by the real server (`python -m core serve`)
on a free loopback port. Threads, each on its own keep-alive connection, post one real 300x300 photo
a request (multipart); a failed request is counted and the client reconnects and goes on. For each
concurrency it prints p50/p95/p99 latency, throughput, errors and the server's mean batch size; the
server's own split of a request's time (read, decode, queue + model, answer) at concurrency 1; and
its memory (RSS) after a warm-up at the highest concurrency and at the end, and the growth between.
The reference is the same model in this process (decode, preprocess, forward in batches of 32,
through the same `decode` + `verdicts` and the same ONNX Runtime session options), measured before
and after the load in the same run, so the ratio says how close serving comes to batched scoring.
Loopback only; bounded in requests and time.
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
    """bench/predict_latency.py's small run, 3 epochs (run as a script, bench/ is on the path)."""
    from predict_latency import small_run as latency_run

    return latency_run(work, epochs=3)


def photos_of(run: Path, count: int = 64) -> list[tuple[str, bytes]]:
    from core.runs.folder import RunDir

    data = RunDir(run).card().data_root
    files = sorted(data.rglob("*.png"))
    files = files[:: max(1, len(files) // count)][:count]
    return [(f.name, f.read_bytes()) for f in files]


def served_folder(run: Path, engine: str, work: Path) -> Path:
    """What the server is given: the run itself, or its ONNX export (fp32 or INT8) made here."""
    if engine == "run":
        return run
    from core.deploy.export import export

    card = export(run, work / f"export-{engine}", "onnx", int8=engine == "int8")
    if engine == "int8":
        from core.present.words import int8_sentence

        print(int8_sentence(card["int8"]))
    return work / f"export-{engine}"


def reference(model: Path, photos: list[tuple[str, bytes]], rounds: int = 2) -> float:
    """Photos a second through decode + verdicts in batches of 32, in this process (best of `rounds`),
    with the model loaded as the server loads it (`core.deploy.scoring.load_model`)."""
    from core.deploy.scoring import decode, load_model, verdicts

    served = load_model(model)
    verdicts(served.predictor, [decode(photos[0][1])])  # warm-up
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(0, len(photos), 32):
            verdicts(served.predictor, [decode(data, name) for name, data in photos[i:i + 32]], batch_size=32)
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


def drive(port: int, photos: list[tuple[str, bytes]], concurrency: int, requests: int, seconds: float,
          label: str = "") -> dict:
    """`requests` single-photo requests from `concurrency` threads (or until `seconds` pass), with a
    progress line on stderr every few seconds; errors are counted, never fatal."""
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
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        next(t for t in threads if t.is_alive()).join(5)
        if label:
            done, failed = len(latencies), sum(errors.values())
            rate = done / max(time.perf_counter() - start, 1e-9)
            left = (requests - done - failed) / rate if rate else float("nan")
            print(f"\r  {label}: {done + failed}/{requests} requests, {failed} errors, {rate:.1f}/s, "
                  f"about {left:.0f} s left   ", end="", file=sys.stderr, flush=True)
    if label:
        print(file=sys.stderr)
    wall = time.perf_counter() - start
    after = get(port, "/health")
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")  # noqa: E731
    batches = after["batches"] - before["batches"]
    served = after["requests"] - before["requests"]
    split = {key: (after["mean_ms"][key] * after["requests"] - before["mean_ms"][key] * before["requests"])
             / max(served, 1) for key in ("read", "decode", "queue_and_model", "answer")}
    return {"concurrency": concurrency, "ok": len(latencies), "errors": errors, "p50": pick(0.50),
            "p95": pick(0.95), "p99": pick(0.99), "throughput": len(latencies) / wall, "split": split,
            "model_ms_a_batch": after["mean_ms"]["model_a_batch"],
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


def start_server(model: Path, port: int, queue: int, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "w")
    server = subprocess.Popen([sys.executable, "-m", "core", "serve", str(model), "--port", str(port),
                               "--queue", str(queue)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ})
    log.close()
    deadline = time.monotonic() + 120
    while True:
        try:
            if get(port, "/health")["status"] == "ok":
                return server
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise SystemExit("the server did not start:\n" + log_path.read_text()[-2000:])
        time.sleep(0.2)


def load(model: Path, photos: list, args, log_path: Path) -> dict:
    """One engine: the in-process reference, the server under each concurrency, its memory."""
    batched = reference(model, photos)
    port = free_port()
    server = start_server(model, port, max(128, 2 * max(args.levels)), log_path)
    try:
        idle_rss, _ = memory(server.pid)
        drive(port, photos, 1, 10, 60)
        drive(port, photos, max(args.levels), args.warmup, 600, "warm-up")  # every batch size seen once
        warm_rss, _ = memory(server.pid)
        rows = [drive(port, photos, level, args.requests, args.seconds, f"concurrency {level}")
                for level in args.levels]
        end_rss, end_peak = memory(server.pid)
        card = get(port, "/model")
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    batched = max(batched, reference(model, photos))  # again with the server stopped: the better of the two
    return {"engine": card["engine"] + (" int8" if card.get("quantization") else ""), "reference": batched,
            "rows": rows, "idle": idle_rss, "warm": warm_rss, "end": end_rss, "peak": end_peak}


def report(result: dict) -> None:
    batched = result["reference"]
    print(f"\n{result['engine']}: in-process reference (decode + verdicts, batches of 32, best before/after) "
          f"{batched:.1f} photos/s")
    print(f"{'conc':>4} {'ok':>6} {'errors':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'photos/s':>9} "
          f"{'vs ref':>7} {'batch':>6}")
    for r in result["rows"]:
        errors = sum(r["errors"].values())
        print(f"{r['concurrency']:>4} {r['ok']:>6} {errors:>7} {r['p50']:>8.1f} {r['p95']:>8.1f} {r['p99']:>8.1f} "
              f"{r['throughput']:>9.1f} {r['throughput'] / batched:>7.2f} {r['mean_batch']:>6.1f}"
              + (f"  {r['errors']}" if errors else ""))
    first = result["rows"][0]
    split = ", ".join(f"{key.replace('_', ' ')} {ms:.1f}" for key, ms in first["split"].items())
    print(f"  the server's mean ms a request at concurrency {first['concurrency']}: {split} "
          f"(the rest of the latency is HTTP and the client)")
    total = sum(r["ok"] + sum(r["errors"].values()) for r in result["rows"])
    print(f"  memory: idle {result['idle']:.0f} MB, after warm-up {result['warm']:.0f} MB, at the end "
          f"{result['end']:.0f} MB: {result['end'] - result['warm']:+.0f} MB over the {total} requests "
          f"(peak {result['peak']:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", help="a run folder (default: train a small one)")
    parser.add_argument("--engine", choices=("onnx", "int8", "run"), nargs="+", default=["onnx"],
                        help="serve the run's ONNX export (default), its INT8 export, and/or the run (PyTorch); "
                             "several are measured one after the other in the same run")
    parser.add_argument("--requests", type=int, default=300, help="requests a concurrency level")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--warmup", type=int, default=200, help="requests at the highest level before memory is read")
    parser.add_argument("--seconds", type=float, default=3600.0, help="time limit a level")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="graft-serve-bench-"))
    try:
        run = Path(args.run) if args.run else small_run(work)
        photos = photos_of(run)
        results = [load(served_folder(run, engine, work), photos, args, work / f"serve-{engine}.log")
                   for engine in args.engine]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"run {run.name}; {len(photos)} real photos (300x300); {os.cpu_count()} CPUs; "
          f"GRAFT_THREADS={os.environ.get('GRAFT_THREADS', '-')}; load average {os.getloadavg()[0]:.1f} at the end")
    for result in results:
        report(result)


if __name__ == "__main__":
    main()
