"""A shared server gives a session without a key the locked page and nothing else: the real server
(`serve.py` with both keys set, on a free localhost port) driven over Streamlit's own WebSocket
protocol, as a browser does, and with raw HTTP uploads, as a hostile client does."""
from __future__ import annotations

import asyncio
import json
import os
import re
import select
import socket
import urllib.error
import urllib.request
import uuid

import pytest

from core.base import access

from helpers import dashboard

pytestmark = pytest.mark.slow

VIEW, OWNER = "view-key-for-the-keyless-tests-0123", "owner-key-for-the-keyless-tests-9876"
MB = 1024 * 1024
FILLS = re.compile(r"graft: server caches filled \(fill (\d+)\)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(port, process, log file) of a shared dashboard with small upload bounds (8 MB a session,
    12 MB in all) over empty temporary folders."""
    tmp = tmp_path_factory.mktemp("keyless")
    (tmp / "data").mkdir()
    log = tmp / "server.log"
    env = {**os.environ, access.VIEW_KEY_ENV: VIEW, access.OWNER_KEY_ENV: OWNER, "GRAFT_HOME": str(tmp / "home"),
           "GRAFT_SAMPLE": str(tmp / "data"), "GRAFT_RUNS": str(tmp / "runs"), access.ROOTS_ENV: str(tmp),
           "GRAFT_UPLOAD_SESSION_MB": "8", "GRAFT_UPLOAD_TOTAL_MB": "12"}
    with dashboard(env, log) as (port, process):
        yield port, process, log


def _xsrf(port: int) -> str:
    """The XSRF cookie Streamlit hands every visitor (a browser sends it back with each upload)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=10) as r:
        return re.search(r"_streamlit_xsrf=([^;]+)", r.headers["Set-Cookie"]).group(1).strip('"')


class Browser:
    """One browser tab over Streamlit's WebSocket protocol."""

    def __init__(self, ws):
        self.ws, self.session_id = ws, ""

    async def rerun(self, query: str = "") -> bytes:
        """A page run as the browser asks for it; every byte the server sent until it finished."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        msg = BackMsg()
        msg.rerun_script.query_string = query
        await self.ws.send(msg.SerializeToString())
        received = bytearray()
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), 120)
            received += raw
            forward = ForwardMsg()
            forward.ParseFromString(raw)
            kind = forward.WhichOneof("type")
            if kind == "new_session":
                self.session_id = forward.new_session.initialize.session_id
            elif kind == "script_finished":
                return bytes(received)

    async def clear_cache(self) -> None:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg()
        msg.clear_cache = True
        await self.ws.send(msg.SerializeToString())


async def _session(port: int, stack, query: str = "") -> Browser:
    import websockets

    ws = await stack.enter_async_context(websockets.connect(
        f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"], max_size=None, open_timeout=60))
    tab = Browser(ws)
    await tab.rerun(query)
    assert tab.session_id
    return tab


def put(port: int, session_id: str, size: int, xsrf: str, refused: bool = False,
        file_id: str = "") -> tuple[int, dict]:
    """PUT a `size`-byte file for `session_id` as the browser's uploader does (multipart, XSRF
    header). `refused`: the client expects an answer before its body is read, and keeps sending
    the body after it anyway, as a hostile client does. → (status, JSON body or {})."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    request = (f"PUT /_stcore/upload_file/{session_id}/{file_id or uuid.uuid4()} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
               f"Content-Length: {len(head) + size + len(tail)}\r\nX-Xsrftoken: {xsrf}\r\n"
               f"Cookie: _streamlit_xsrf={xsrf}\r\n\r\n").encode()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        if refused and select.select([sock], [], [], 30)[0]:
            answer = _read_answer(sock)
        try:
            sock.sendall(head)
            chunk, left = bytes(MB), size
            while left > 0:
                sock.sendall(chunk[:min(left, MB)])
                left -= MB
            sock.sendall(tail)
        except OSError:  # the server closed the connection: nothing more of the body is read
            assert answer, "the connection closed without an answer"
        if not answer:
            answer = _read_answer(sock)
    status = int(answer.split(b" ", 2)[1])
    body = answer.split(b"\r\n\r\n", 1)[1]
    return status, json.loads(body) if body.startswith(b"{") else {}


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            return data
        data += more
    head, body = data.split(b"\r\n\r\n", 1)
    length = int((re.search(rb"(?i)content-length: *(\d+)", head) or [0, b"0"])[1])
    while len(body) < length:
        more = sock.recv(65536)
        if not more:
            break
        body += more
    return head + b"\r\n\r\n" + body


def delete(port: int, session_id: str, file_id: str, xsrf: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/_stcore/upload_file/{session_id}/{file_id}",
                                     method="DELETE", headers={"X-Xsrftoken": xsrf,
                                                               "Cookie": f"_streamlit_xsrf={xsrf}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


def fills(log) -> list[int]:
    return [int(n) for n in FILLS.findall(log.read_text(errors="replace"))]


def test_a_keyless_session_cannot_upload_and_the_server_keeps_no_byte_of_it(server):
    port, process, _ = server
    xsrf = _xsrf(port)

    async def go():
        from contextlib import AsyncExitStack

        async with AsyncExitStack() as stack:
            stranger = await _session(port, stack)
            page = await stranger.rerun()
            assert b"Ask the presenter for the link" in page  # the locked page, and only it
            assert put(port, stranger.session_id, 4 * MB, xsrf, refused=True)[0] == 403  # warm-up
            before = rss_kb(process.pid)
            answers = [put(port, stranger.session_id, 150 * MB, xsrf, refused=True) for _ in range(5)]
            grown = rss_kb(process.pid) - before
            return answers, grown

    answers, grown = asyncio.run(go())
    assert [status for status, _ in answers] == [403] * 5, answers
    assert all("key" in body["error"] for _, body in answers)
    assert grown < 8 * 1024, f"the server's memory grew by {grown} kB"


def test_a_keyed_session_uploads_within_its_bounds_and_a_deleted_file_frees_its_share(server):
    port, _, _ = server
    xsrf = _xsrf(port)

    async def go():
        from contextlib import AsyncExitStack

        async with AsyncExitStack() as stack:
            viewer = await _session(port, stack, f"key={VIEW}")
            other = await _session(port, stack, f"key={VIEW}")
            mine, theirs = viewer.session_id, other.session_id
            answers = {"first": put(port, mine, 2 * MB, xsrf, file_id="first"),
                       "too_much": put(port, mine, 7 * MB, xsrf, refused=True),  # 2 + 7 > 8 MB a session
                       "second": put(port, mine, 5 * MB, xsrf, file_id="second"),  # 7 MB held
                       "crowded": put(port, theirs, 5 * MB, xsrf, refused=True),  # 7 + 5 (and framing) > 12 MB
                       "fits": put(port, theirs, 4 * MB, xsrf, file_id="fits")}
            answers["deleted"] = delete(port, mine, "second", xsrf)
            answers["after"] = put(port, mine, 5 * MB, xsrf, file_id="after")  # 2 + 5 again
            for sid, file_id in ((mine, "first"), (mine, "after"), (theirs, "fits")):  # leave nothing held
                assert delete(port, sid, file_id, xsrf) == 204
            return answers

    answers = asyncio.run(go())
    assert {name: answers[name][0] for name in ("first", "second", "fits", "after")} == dict.fromkeys(
        ("first", "second", "fits", "after"), 204), answers
    assert answers["too_much"][0] == 413 and "at most 8 MB" in answers["too_much"][1]["error"], answers
    assert answers["crowded"][0] == 429 and "try again" in answers["crowded"][1]["error"], answers
    assert answers["deleted"] == 204


def test_only_the_owner_clears_the_servers_caches(server):
    port, _, log = server

    async def go():
        from contextlib import AsyncExitStack

        async with AsyncExitStack() as stack:
            viewer = await _session(port, stack, f"key={VIEW}")
            filled = fills(log)
            assert filled, "the cache fill is logged"
            stranger = await _session(port, stack)
            await stranger.clear_cache()
            await stranger.rerun()
            await viewer.clear_cache()
            await viewer.rerun()  # a cleared cache would be filled again here
            kept = fills(log)
            owner = await _session(port, stack, f"key={OWNER}")
            await owner.clear_cache()
            await viewer.rerun()
            return filled, kept, fills(log)

    filled, kept, after_owner = asyncio.run(go())
    assert kept == filled  # neither the stranger's nor the viewer's clear_cache emptied it
    assert after_owner == filled + [filled[-1] + 1]  # the owner's did (the observable works)


def test_a_shared_server_does_not_list_its_caches(server):
    port, _, _ = server
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/metrics", timeout=10)
    assert refused.value.code == 403
