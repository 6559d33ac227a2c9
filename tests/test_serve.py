"""`graft serve`: the real server in a subprocess on a free loopback port, over a real trained run.
Its verdicts equal `graft predict`'s; every bad body is a 4xx naming the file and the reason; the key,
the loopback rule, a full queue and a damaged model folder are answered as documented."""
from __future__ import annotations

import csv
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from helpers import ROOT, free_port, house_drawing, run_cli, wait_for

KEY = "serve-test-key-0123456789"


def multipart(files: list[tuple[str, bytes]], field: str = "file") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, data in files:
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
                  "Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


class Client:
    def __init__(self, port: int, key: str | None = None):
        self.port, self.key = port, key

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
             key: str | None = "default") -> tuple[int, dict, dict]:
        headers = dict(headers or {})
        key = self.key if key == "default" else key
        if key:
            headers.setdefault("X-API-Key", key)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}, {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()

    def predict(self, files: list[tuple[str, bytes]], query: str = "", **kw) -> tuple[int, dict]:
        body, ctype = multipart(files)
        status, data, _ = self.call("POST", "/predict" + query, body, {"Content-Type": ctype}, **kw)
        return status, data

    def raw(self, data: bytes, name: str = "body") -> tuple[int, dict]:
        status, answer, _ = self.call("POST", f"/predict?filename={name}", data,
                                      {"Content-Type": "application/octet-stream"})
        return status, answer


@contextmanager
def serving(ref, *args: str, log: Path, env: dict | None = None):
    """`graft serve REF ARGS` on a free loopback port until its /health answers; stopped afterwards."""
    port = free_port()
    out = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "core", "serve", str(ref), "--port", str(port), *args],
                            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def up() -> bool:
        if proc.poll() is not None:
            return True
        try:
            return Client(port).call("GET", "/health")[0] == 200
        except OSError:
            return False

    try:
        assert wait_for(up, 120) and proc.poll() is None, log.read_text()[-3000:]
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


@pytest.fixture(scope="module")
def run_with_rule(trained_run, tmp_path_factory) -> Path:
    """A copy of the trained run with a pass/inspect rule (so verdicts carry `decision`)."""
    from core.evaluate.decision import Decision
    from core.runs.folder import RunDir

    runs, run_id, _ = trained_run
    copy = tmp_path_factory.mktemp("served") / run_id
    shutil.copytree(runs / run_id, copy)
    run = RunDir(copy)
    run.write_decision(Decision(inspect=["defect_067", "defect_100"], threshold=0.4, labels=run.card().labels))
    return copy


@pytest.fixture(scope="module")
def photos(elpv_small, tmp_path_factory) -> list[Path]:
    """Two real cells a class and a generated house drawing (nothing like a cell)."""
    chosen = [p for d in sorted(elpv_small.iterdir()) for p in sorted(d.glob("*.png"))[:2]]
    house = tmp_path_factory.mktemp("house") / "house.png"
    house_drawing().save(house)
    return chosen + [house]


@pytest.fixture(scope="module")
def expected(run_with_rule, photos, tmp_path_factory) -> dict[str, dict]:
    """What `graft predict --csv` says of the photos, by file name."""
    out = tmp_path_factory.mktemp("predict") / "p.csv"
    result = run_cli("predict", str(run_with_rule), *map(str, photos), "--top-k", "4", "--csv", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    with open(out) as f:
        return {Path(row["file"]).name: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def server(run_with_rule, tmp_path_factory):
    """The run served on loopback with a key and small limits."""
    log = tmp_path_factory.mktemp("serve_log") / "serve.log"
    with serving(run_with_rule, "--max-image-mb", "1", "--max-files", "12", log=log,
                 env={"GRAFT_SERVE_KEY": KEY}) as port:
        yield Client(port, KEY)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def assert_same(verdict: dict, row: dict) -> None:
    assert verdict["label"] == row["label"]
    assert verdict["prob"] == pytest.approx(float(row["prob"]), abs=1e-4)
    assert verdict["uncertain"] == (row["uncertain"] == "true")
    assert verdict["unfamiliar"] == (row["unfamiliar"] == "true")
    assert verdict["decision"] == row["decision"]
    assert verdict["p_inspect"] == pytest.approx(float(row["p_inspect"]), abs=1e-4)
    assert [t["label"] for t in verdict["top"]] == [row[f"top{i}"] for i in range(1, len(verdict["top"]) + 1)]


@pytest.mark.slow
def test_verdicts_equal_graft_predict(server, run_with_rule, photos, expected):
    status, answer = server.predict([(p.name, p.read_bytes()) for p in photos], "?top_k=4")
    assert status == 200, answer
    assert answer["model"] == run_with_rule.name and len(answer["model_sha256"]) == 64
    assert [r["file"] for r in answer["results"]] == [p.name for p in photos]
    names = server.call("GET", "/model")[1]["display_names"]  # the dataset's, else the folder names
    for verdict in answer["results"]:
        assert_same(verdict, expected[verdict["file"]])
        assert verdict["name"] == names[verdict["label"]] == verdict["top"][0]["name"]
        assert sum(t["prob"] for t in verdict["top"]) == pytest.approx(1.0, abs=1e-4)
    assert answer["results"][-1]["unfamiliar"] is True  # the house drawing
    assert {v["decision"] for v in answer["results"]} <= {"pass", "inspect"}
    one = photos[0]  # one photo as the raw body, default top-3
    status, single = server.raw(one.read_bytes(), one.name)
    assert status == 200 and len(single["results"][0]["top"]) == 3
    assert_same(single["results"][0], expected[one.name])


@pytest.mark.slow
def test_health_and_model_card(server, run_with_rule):
    status, health, _ = server.call("GET", "/health", key=None)  # open, for probes
    assert status == 200 and health["status"] == "ok" and health["model"] == run_with_rule.name
    assert set(health["mean_ms"]) == {"read", "decode", "queue_and_model", "answer", "model_a_batch"}
    assert all(ms >= 0 for ms in health["mean_ms"].values())
    status, card, _ = server.call("GET", "/model")
    assert status == 200
    assert card["labels"] == ["defect_000", "defect_033", "defect_067", "defect_100"]
    assert card["preprocessing"]["input_size"] == 224 and card["engine"] == "pytorch"
    lo, hi = card["test"]["interval"]
    assert 0 <= lo <= card["test"]["accuracy"] <= hi <= 1 and card["test"]["n"] > 0
    assert card["decision"]["inspect"] == ["defect_067", "defect_100"] and card["decision"]["threshold"] == 0.4
    assert card["limits"]["files"] == 12 and card["limits"]["image_bytes"] == 1024 * 1024
    status, schema, _ = server.call("GET", "/openapi.json", key=None)  # served from here, no internet
    assert status == 200 and "/predict" in schema["paths"]


@pytest.mark.slow
def test_a_key_is_needed_when_one_is_set(server, photos):
    files = [(photos[0].name, photos[0].read_bytes())]
    assert server.predict(files, key=None)[0] == 401
    status, answer = server.predict(files, key="wrong-key-0123456789")
    assert status == 401 and "API key" in answer["error"]
    assert server.call("GET", "/model", key=None)[0] == 401
    body, ctype = multipart(files)
    status, _, _ = server.call("POST", "/predict", body, {"Content-Type": ctype, "Authorization": f"Bearer {KEY}"},
                               key=None)
    assert status == 200
    assert server.predict(files)[0] == 200  # X-API-Key


@pytest.mark.slow
def test_every_bad_body_is_a_4xx_naming_the_file_and_the_reason(server, photos):
    good = photos[0].read_bytes()
    bad = {
        "empty.png": (b"", 422, "zero bytes"),
        "notes.txt": (b"this is not a photo\n" * 20, 415, "not an image"),
        "cut.png": (good[: len(good) // 3], 422, None),  # truncated or unreadable, as the loader names it
        "big.png": (good + os.urandom(1024 * 1024), 413, "too large"),  # over 1 MB a photo
        "wide.png": (png_bytes(Image.new("1", (9000, 9000))), 413, "too large"),  # 81 MP: over the pixel budget
        "bomb.png": (png_bytes(Image.new("1", (15000, 15000))), 413, "too large"),  # decompression bomb
    }
    for name, (data, status, reason) in bad.items():
        for got, answer in (server.predict([(name, data)]), server.raw(data, name)):
            assert got == status, (name, answer)
            assert answer["file"] == name and name in answer["error"]
            assert answer["reason"] in ((reason,) if reason else ("truncated", "unreadable"))
    assert len(bad["wide.png"][0]) < 100_000  # tiny on disk, huge once decoded
    # a bad photo among good ones: the good ones are scored, the bad one named
    status, answer = server.predict([("a.png", good), ("notes.txt", b"text"), ("b.png", good)])
    assert status == 200
    assert [r.get("error") for r in answer["results"]] == [None, "not an image", None]
    # the request as a whole
    status, answer = server.predict([(f"{i}.png", good) for i in range(13)])
    assert status == 413 and answer["reason"] == "too many files"
    status, answer, _ = server.call("POST", "/predict", b"--x\r\n", {"Content-Type": "multipart/form-data"})
    assert status == 400 and answer["reason"] == "not a multipart body"
    status, answer = server.predict([("a.png", good)], "?top_k=zero")
    assert status == 422 and "top_k" in answer["error"]
    # nothing died
    assert server.call("GET", "/health")[0] == 200
    assert server.predict([("a.png", good)])[0] == 200


@pytest.mark.slow
def test_a_full_queue_is_answered_at_once(run_with_rule, photos, tmp_path):
    data = photos[0].read_bytes()
    with serving(run_with_rule, "--queue", "2", "--max-batch", "2", log=tmp_path / "serve.log") as port:
        client, start = Client(port), threading.Barrier(24)
        answers: list = []

        def fire():
            start.wait()
            body, ctype = multipart([("a.png", data)])
            answers.append(client.call("POST", "/predict", body, {"Content-Type": ctype}))

        threads = [threading.Thread(target=fire) for _ in range(24)]
        began = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert time.monotonic() - began < 60 and len(answers) == 24
        statuses = [status for status, _, _ in answers]
        assert set(statuses) <= {200, 503} and statuses.count(200) >= 2 and statuses.count(503) >= 1
        busy = next(a for a in answers if a[0] == 503)
        assert "busy" in busy[1]["error"] and busy[2].get("retry-after") == "1"
        assert client.call("GET", "/health")[0] == 200


@pytest.mark.slow
def test_an_onnx_export_is_served_like_graft_predict(run_with_rule, photos, expected, tmp_path):
    """ONNX Runtime behind the same endpoint; the export's parity check keeps it within 1e-4 of PyTorch."""
    export = tmp_path / "export"
    result = run_cli("export", str(run_with_rule), str(export), "--format", "onnx")
    assert result.returncode == 0, result.stderr[-2000:]
    with serving(export, log=tmp_path / "serve.log") as port:
        client = Client(port)
        status, answer = client.predict([(p.name, p.read_bytes()) for p in photos], "?top_k=4")
        assert status == 200
        for verdict in answer["results"]:
            assert_same(verdict, expected[verdict["file"]])
        assert client.call("GET", "/model")[1]["engine"] == "onnxruntime"


def test_another_host_without_a_key_refuses_to_start(tmp_path):
    result = run_cli("serve", str(tmp_path / "no-run"), "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert "API key" in result.stderr and "Traceback" not in result.stderr


def test_the_key_rules():
    from core.base.errors import BadInput
    from core.deploy.serve import KEY_ENV, is_loopback, key_matches, resolve_key

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20")
    assert resolve_key(None, "127.0.0.1", {}) is None
    assert resolve_key(None, "0.0.0.0", {KEY_ENV: KEY}) == KEY
    with pytest.raises(BadInput, match="API key"):
        resolve_key(None, "0.0.0.0", {})
    with pytest.raises(BadInput, match="shorter than"):
        resolve_key("short", "127.0.0.1", {})
    assert key_matches(KEY, KEY) and not key_matches(KEY[:-1], KEY) and not key_matches("", KEY)
    assert not key_matches("ключ-0123456789abcdef", KEY)  # non-ASCII: refused, not a TypeError


def test_a_port_in_use_refuses_to_start(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_cli("serve", str(tmp_path / "no-run"), "--port", str(taken.getsockname()[1]))
    assert result.returncode == 3 and "already in use" in result.stderr


@pytest.mark.slow
def test_a_damaged_model_folder_refuses_to_start_with_the_reason(trained_run, tmp_path):
    runs, run_id, _ = trained_run
    torn = tmp_path / "torn"
    shutil.copytree(runs / run_id, torn)
    (torn / "best.pt").write_bytes(b"not a checkpoint")
    export = tmp_path / "export"
    export.mkdir()
    card = json.loads((torn / "model.json").read_text())
    (export / "model.json").write_text(json.dumps({"format": "graft-export", "labels": card["labels"],
                                                   "preprocessing": card["preprocessing"],
                                                   "files": {"onnx": "model.onnx"}}))
    (export / "model.onnx").write_bytes(b"\x08\x07garbage")
    for ref, words in ((torn, "not a usable checkpoint"), (export, "cannot be served")):
        result = run_cli("serve", str(ref), "--port", str(free_port()))
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0]


def test_the_predict_page_shows_the_lines_that_serve_the_current_run(trained_run, elpv_small):
    from helpers import open_page, run_state

    state, runs, run_id = run_state(trained_run)
    at = open_page("pages/predict.py", str(elpv_small), str(runs), **state)
    assert not at.exception, at.exception
    code = next(c.value for c in at.code if "graft serve" in c.value)
    assert code.splitlines() == [f"graft serve {runs / run_id} --port 8080",
                                 "curl -F file=@photo.jpg http://127.0.0.1:8080/predict"]


def test_the_serve_lines_quote_a_folder_name_for_the_shell():
    import shlex

    from core.present.words import serve_commands

    hostile = "/data/runs/a b;rm -rf ~ $(x)"
    first = serve_commands(hostile).splitlines()[0]
    assert shlex.split(first) == ["graft", "serve", hostile, "--port", "8080"]
