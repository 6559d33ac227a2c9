"""What a shared dashboard's server gives a browser session that holds no key: the locked page and
nothing else. `serve.py` installs it when the view or owner key is set; served on this machine only
(no keys), it installs nothing.

Streamlit's server knows nothing of Graft's keys; the pages do (`pages.common.role`). A page run that
finds a valid key registers its session id here (`seen`), and the id is forgotten when Streamlit shuts
the session down. Around Streamlit's own handlers (no file of Streamlit's is changed):

- **Uploads** (`/_stcore/upload_file/<session>/<file>`): a session that is not registered gets 403
  as soon as the request's headers arrive, before any of its body is read (the rest of the body is
  read and dropped by the HTTP server, never stored). A keyed session's upload must state its
  Content-Length and fit both bounds: bytes a session holds at once (`GRAFT_UPLOAD_SESSION_MB`,
  default 400) and bytes all sessions hold at once (`GRAFT_UPLOAD_TOTAL_MB`, default 1,200), uploads
  in flight included; beyond them, 413 (this session) or 429 (the server) with a JSON message. The
  bytes are Streamlit's own upload store's, so a file deleted or a session ended frees its share.
- **WebSocket messages**: a session without a key has its `rerun_script` (the locked page), its
  `app_heartbeat` and `stop_script` handled and every other message dropped (`clear_cache`,
  `file_urls_request`, `load_git_info`, `set_run_on_save`, `backend_operation_request`), and a
  rerun request larger than 64 KB is dropped too. `clear_cache` empties every server-wide cache,
  so it is the owner's only.
- **`/_stcore/metrics`** (the names and sizes of the server's caches and uploads) is refused.
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading

import streamlit as st

from core.base import access

KEYLESS_MESSAGES = frozenset({"rerun_script", "app_heartbeat", "stop_script"})
KEYLESS_MESSAGE_BYTES = 64 * 1024
UPLOAD_PATH = re.compile(r"(?:^|/)_stcore/upload_file/([^/]+)/[^/]+/?$")
METRICS_PATH = re.compile(r"(?:^|/)_stcore/metrics/?$")
MB = 1024 * 1024

_lock = threading.Lock()
_keyed: dict[str, str] = {}  # session id → 'owner' or 'viewer'
_installed = False
_fills = 0


def seen(role: str | None) -> None:
    """Called by every page run once the session's role is known: a keyed session's id is registered."""
    if role is None or not _installed:
        return
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None:
        return
    with _lock:
        if _keyed.get(ctx.session_id) != access.OWNER:  # a viewer who signs in as owner stays owner
            _keyed[ctx.session_id] = role
    cache_fill()


def role_of(session_id: str) -> str | None:
    with _lock:
        return _keyed.get(session_id)


def forget(session_id: str) -> None:
    with _lock:
        _keyed.pop(session_id, None)


@st.cache_resource(show_spinner=False)
def cache_fill() -> int:
    """How many times the server-wide caches have been filled since the start (1 until someone
    clears them); each fill is logged, so an operator (and the tests) can see caches being cleared."""
    global _fills
    _fills += 1
    print(f"graft: server caches filled (fill {_fills})", file=sys.stderr, flush=True)
    return _fills


def allowed(role: str | None, msg_type: str | None, size: int) -> bool:
    """Whether a session with `role` may have a BackMsg of `msg_type` and `size` bytes handled."""
    if msg_type == "clear_cache":
        return role == access.OWNER
    if role is None:
        return msg_type in KEYLESS_MESSAGES and size <= KEYLESS_MESSAGE_BYTES
    return True


def budgets() -> tuple[int, int]:
    """(bytes one session may hold in uploads at once, bytes all sessions may hold at once)."""
    def mb(name: str, default: int) -> int:
        try:
            return max(0, int(float(os.environ.get(name, default)) * MB))
        except ValueError:
            return default * MB
    return mb("GRAFT_UPLOAD_SESSION_MB", 400), mb("GRAFT_UPLOAD_TOTAL_MB", 1200)


class UploadGuard:
    """ASGI middleware in front of Streamlit's app: uploads for keyed sessions only, within bounds."""

    def __init__(self, app, upload_mgr):
        self.app, self.uploads = app, upload_mgr
        self.per_session, self.total = budgets()
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()

    def _held(self, session_id: str) -> tuple[int, int]:
        """(bytes this session's uploads hold, bytes all uploads hold), in flight included."""
        storage = getattr(self.uploads, "file_storage", {})
        with getattr(self.uploads, "_lock", threading.Lock()):
            mine = sum(len(f.data) for f in storage.get(session_id, {}).values())
            everyone = sum(len(f.data) for files in storage.values() for f in files.values())
        return mine + self._in_flight.get(session_id, 0), everyone + sum(self._in_flight.values())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if METRICS_PATH.search(path):
            return await _refuse(send, 403, "not served on a shared dashboard")
        found = UPLOAD_PATH.search(path)
        if not found or scope.get("method") == "OPTIONS":
            return await self.app(scope, receive, send)
        session_id = found.group(1)
        if role_of(session_id) is None:
            return await _refuse(send, 403, "uploads need the link's key", close=True)
        if scope.get("method") != "PUT":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        try:
            size = int(headers.get(b"content-length", b""))
        except ValueError:
            return await _refuse(send, 411, "an upload must state its length (Content-Length)", close=True)
        refusal = None
        with self._lock:  # decided without awaiting: the lock is never held across the event loop
            mine, everyone = self._held(session_id)
            if mine + size > self.per_session:
                refusal = 413, (f"this session holds {mine // MB} MB of uploads; at most "
                                f"{self.per_session // MB} MB at once: remove a file first")
            elif everyone + size > self.total:
                refusal = 429, "the server holds as many uploads as it may: try again when others have finished"
            else:
                self._in_flight[session_id] = self._in_flight.get(session_id, 0) + size
        if refusal:
            return await _refuse(send, *refusal)
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                left = self._in_flight.get(session_id, 0) - size
                if left > 0:
                    self._in_flight[session_id] = left
                else:
                    self._in_flight.pop(session_id, None)


async def _refuse(send, status: int, message: str, close: bool = False) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # nothing more is read from this connection
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install() -> bool:
    """Put the guard around Streamlit's handlers in this process when the dashboard is shared
    (a key set); True when it did. Call before the server starts."""
    global _installed
    if _installed or access.sharing_keys() is None:
        return _installed
    from streamlit.runtime.app_session import AppSession
    from streamlit.web.server.starlette import starlette_server

    handle, shutdown, make_app = AppSession.handle_backmsg, AppSession.shutdown, starlette_server.create_starlette_app

    def guarded_handle(self, msg):
        if allowed(role_of(self.id), msg.WhichOneof("type"), msg.ByteSize()):
            handle(self, msg)

    def guarded_shutdown(self):
        forget(self.id)
        shutdown(self)

    def guarded_app(runtime):
        return UploadGuard(make_app(runtime), runtime.uploaded_file_mgr)

    AppSession.handle_backmsg, AppSession.shutdown = guarded_handle, guarded_shutdown
    starlette_server.create_starlette_app = guarded_app
    _installed = True
    return True
