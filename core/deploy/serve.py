"""`graft serve`: a run's or an export's model behind HTTP (FastAPI on uvicorn), for a line that
posts photos and reads verdicts back.

- `POST /predict`: images as multipart fields named `file` (or one image as the raw body) → one
  verdict a photo: top-k classes with display names and probabilities, `label`, `uncertain`,
  `unfamiliar`, the pass/inspect `decision` when the run has a rule, and the model's id.
- `GET /health`, `GET /model` (the card), `GET /docs` (FastAPI's OpenAPI page).

One scoring thread owns the model (`Batcher`): photos that arrive together are scored as one batch
(a window of a few milliseconds, at most `max_batch` photos), so many clients at once get close to
the batched throughput. Photos are decoded beside it by a few threads, through the project's image
loader (pixel budget, decompression bombs, a named reason for each refusal).

Safe by default: bound to 127.0.0.1; any other address only with an API key (`X-API-Key` or
`Authorization: Bearer`, compared in constant time). Bytes a photo and a request, files a request
and photos waiting are bounded; a photo that cannot be used is a 4xx naming the file and the reason,
a full queue a 503 at once.

`decode` and `verdicts` are pure (bytes in, photo out; photos in, verdicts out), so another serving
stack (Ray Serve replicas, a batch job) can reuse them without the HTTP part.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from core.base import runtime
from core.base.errors import BadInput

KEY_ENV = "GRAFT_SERVE_KEY"
MIN_KEY_LENGTH = 16
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080
MB = 1024 * 1024


from core.deploy.scoring import Batcher, Limits, Refused, ServedModel, decode, load_model, verdicts  # noqa: F401 (re-exported)

# ------------------------------------------------------------------ the address and the key


def is_loopback(host: str) -> bool:
    """Whether `host` reaches this machine only (127.0.0.0/8, ::1, localhost)."""
    text = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(text, None)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def resolve_key(given: str | None, host: str, environ: dict | None = None) -> str | None:
    """The API key (`--api-key`, else $GRAFT_SERVE_KEY), or None; refuses a host other than this
    machine's loopback without one, and a key too short to guess."""
    env = os.environ if environ is None else environ
    key = (given or env.get(KEY_ENV, "")).strip() or None
    if key is None and not is_loopback(host):
        raise BadInput(f"serving on {host} lets other machines in: give an API key (--api-key KEY or "
                       f"{KEY_ENV}=KEY), or keep the default --host 127.0.0.1")
    if key is not None and len(key) < MIN_KEY_LENGTH:
        raise BadInput(f"the API key is shorter than {MIN_KEY_LENGTH} characters; make one with "
                       "python -c \"import secrets; print(secrets.token_urlsafe(24))\"")
    return key


def key_matches(given: str | None, key: str) -> bool:
    return bool(given) and hmac.compare_digest(given.strip().encode(), key.encode())


# ------------------------------------------------------------------ the HTTP app


PREDICT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


async def _bounded(stream, limit: int, what: str):
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise Refused(413, what, "too large", f"over {limit} bytes, the limit")
        yield chunk


async def read_photos(request, limits: Limits, filename: str) -> list[tuple[str, bytes | Refused]]:
    """(file name, bytes or the reason it was refused) for each photo of a request; `Refused` for the
    whole request (too large, too many files, not multipart, no photo)."""
    ctype = request.headers.get("content-type", "")
    length = request.headers.get("content-length", "")
    multipart = ctype.startswith("multipart/form-data")
    cap = limits.request_bytes if multipart else limits.image_bytes
    if length.isdigit() and int(length) > cap:  # before reading the body
        raise Refused(413, "request" if multipart else filename, "too large",
                      f"{int(length)} bytes; the limit is {cap} a {'request' if multipart else 'photo'}")
    if not multipart:
        body = bytearray()
        async for chunk in _bounded(request.stream(), cap, filename):
            body += chunk
        return [(filename, bytes(body))]
    parser = MultiPartParser(request.headers, _bounded(request.stream(), cap, "request"),
                             max_files=limits.files, max_fields=limits.files)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        many = "Too many files" in err.message
        raise Refused(413 if many else 400, "request", "too many files" if many else "not a multipart body",
                      f"at most {limits.files} a request" if many else err.message) from None
    photos: list[tuple[str, bytes | Refused]] = []
    try:
        for upload in form.getlist("file"):
            if isinstance(upload, str):
                photos.append(("file", Refused(400, "file", "not a file", "a text field named 'file'")))
                continue
            name = upload.filename or "file"
            if upload.size is not None and upload.size > limits.image_bytes:
                photos.append((name, Refused(413, name, "too large",
                                             f"{upload.size} bytes; the limit is {limits.image_bytes} a photo")))
                continue
            photos.append((name, await upload.read()))
    finally:
        await form.close()
    if not photos:
        raise Refused(400, "request", "no photo",
                      "send photos as multipart fields named 'file', or one photo as the request body")
    return photos


def create_app(served: ServedModel, limits: Limits = Limits(), key: str | None = None):
    """The FastAPI app over one loaded model."""
    batch_size, trim = limits.max_batch, _trimmer()

    def score(images: list) -> list:
        try:
            return verdicts(served.predictor, images, served.names, batch_size=batch_size)
        finally:
            trim()

    batcher = Batcher(score, limits.max_batch, limits.window_ms / 1000.0, limits.queue)
    decoders = ThreadPoolExecutor(max_workers=max(1, runtime.cpu_count()), thread_name_prefix="graft-decode")

    @asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()
        decoders.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="Graft", version=str(served.card.get("version") or ""), lifespan=lifespan,
                  description=f"The model of run {served.id} ({served.card.get('backbone')}, "
                              f"{len(served.labels)} classes): POST photos to /predict.")
    app.state.batcher, app.state.served, app.state.limits = batcher, served, limits
    spent = {"requests": 0, "read": 0.0, "decode": 0.0, "scored": 0.0, "answer": 0.0}  # seconds, summed

    header_key = APIKeyHeader(name="X-API-Key", auto_error=False)
    bearer = HTTPBearer(auto_error=False)

    def authorised(given: str | None = Security(header_key),
                   credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        candidate = given or (credentials.credentials if credentials else None)
        if not key_matches(candidate, key):
            raise HTTPException(401, "a valid API key is needed (header X-API-Key or Authorization: Bearer)",
                                headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(authorised)] if key else []

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in exc.errors())
        return JSONResponse({"error": f"invalid request ({problems})"}, 422)

    def busy() -> JSONResponse:
        return JSONResponse({"error": f"busy: {batcher.pending} photos are waiting (at most {limits.queue}); "
                                      "try again in a moment"}, 503, headers={"Retry-After": "1"})

    @app.get("/health")
    def health():
        """200 while the model is loaded and its scoring thread runs (503 otherwise)."""
        ok = batcher.alive
        n = max(spent["requests"], 1)
        return JSONResponse({"status": "ok" if ok else "scorer stopped", "model": served.id,
                             "waiting": batcher.pending, "queue": limits.queue, "batches": batcher.batches,
                             "scored": batcher.scored, "requests": spent["requests"],
                             "mean_ms": {"read": 1000 * spent["read"] / n, "decode": 1000 * spent["decode"] / n,
                                         "queue_and_model": 1000 * spent["scored"] / n,
                                         "answer": 1000 * spent["answer"] / n,
                                         "model_a_batch": 1000 * batcher.score_seconds / max(batcher.batches, 1)}},
                            200 if ok else 503)

    @app.get("/model", dependencies=guarded)
    def model():
        """The model card: classes and display names, preprocessing, test accuracy with its 95 %
        interval, the uncertainty threshold, the pass/inspect rule, and this server's limits."""
        return {**served.card, "limits": asdict(limits)}

    @app.post("/predict", dependencies=guarded, openapi_extra={"requestBody": PREDICT_BODY})
    async def predict(request: Request, top_k: int = Query(3, ge=1, le=1000, description="classes a photo"),
                      filename: str = Query("body", max_length=200,
                                            description="the name a raw-body photo is reported under")):
        """Photos as multipart fields named `file` (or one photo as the body) → one verdict each."""
        if not batcher.admit(1):
            return busy()
        held, began = 1, time.perf_counter()
        try:
            try:
                photos = await read_photos(request, limits, filename)
            except Refused as err:
                return _refusal(err, [err.entry()], served.id)
            if len(photos) > 1:
                if not batcher.admit(len(photos) - 1):
                    return busy()
                held = len(photos)
            loop, read = asyncio.get_running_loop(), time.perf_counter()
            decoded = await asyncio.gather(*(
                loop.run_in_executor(decoders, _decode_or_refusal, data, name, limits.image_bytes)
                if not isinstance(data, Refused) else _already(data) for name, data in photos))
            images = [d for d in decoded if not isinstance(d, Refused)]
            ready = time.perf_counter()
            scored = iter(await asyncio.wrap_future(batcher.submit(images)) if images else [])
            done = time.perf_counter()
            results = []
            for (name, _), item in zip(photos, decoded):
                if isinstance(item, Refused):
                    results.append(item.entry())
                else:
                    verdict = next(scored)
                    results.append({"file": name, **verdict, "top": verdict.get("top", [])[:top_k]})
            if not images:
                return _refusal(next(d for d in decoded if isinstance(d, Refused)), results, served.id)
            answer = JSONResponse({"model": served.id, "model_sha256": served.sha256, "results": results})
            for part, seconds in (("read", read - began), ("decode", ready - read), ("scored", done - ready),
                                  ("answer", time.perf_counter() - done)):
                spent[part] += seconds
            spent["requests"] += 1
            return answer
        finally:
            batcher.release(held)

    return app


async def _already(value):
    return value


def _decode_or_refusal(data: bytes, name: str, max_bytes: int):
    try:
        return decode(data, name, max_bytes)
    except Refused as err:
        return err


def _refusal(err: Refused, results: list[dict], model_id: str):
    return JSONResponse({"error": str(err), "file": err.file, "reason": err.reason, "detail": err.detail,
                         "model": model_id, "results": results}, err.status)


# ------------------------------------------------------------------ the server


@dataclass
class Server:
    """A checked address, a loaded model and its app, ready to `run`."""

    served: ServedModel
    host: str
    port: int
    limits: Limits
    key: str | None

    def banner(self) -> list[str]:
        test = self.served.card.get("test")
        figure = (f", test accuracy {test['accuracy']:.1%} (95 % interval {test['interval'][0]:.0%}–"
                  f"{test['interval'][1]:.0%})" if test else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return [f"serving run {self.served.id} ({self.served.card.get('backbone')}, {len(self.served.labels)} classes"
                f"{figure}; {self.served.engine})",
                f"  http://{host}:{self.port}/predict   (docs: /docs, card: /model, health: /health)",
                f"  batches of up to {self.limits.max_batch} photos ({self.limits.window_ms:g} ms window), "
                f"at most {self.limits.queue} waiting; "
                + ("API key required" if self.key else "no API key (this machine only)"),
                "  Ctrl+C stops."]

    def run(self, log_level: str = "info") -> None:
        import uvicorn

        fewer_malloc_arenas()
        app = create_app(self.served, self.limits, self.key)
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level=log_level, server_header=False,
                                limit_concurrency=max(64, 4 * self.limits.queue), timeout_keep_alive=5)
        uvicorn.Server(config).run()


def fewer_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives threads that allocate at once arenas of their own (up to 8 a core) and seldom hands
    their freed memory back: with decoding threads, uvicorn's pool and the scorer, a server's memory
    crept up under load. A couple of arenas keep it flat (Linux with glibc only; elsewhere nothing)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _trimmer(every: int = 100):
    """A function that, every `every` calls, hands the heap's free memory back to the system (glibc's
    malloc_trim; a few milliseconds), so the server's memory follows what it holds, not its peaks."""
    import ctypes
    import ctypes.util

    try:
        release = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    calls = iter(range(1, 1 << 62))

    def trim() -> None:
        if next(calls) % every == 0:
            release(0)

    return trim


def prepare(ref: str | os.PathLike, runs_root: str | os.PathLike | None = None, host: str = DEFAULT_HOST,
            port: int = DEFAULT_PORT, api_key: str | None = None, limits: Limits = Limits()) -> Server:
    """Check the address and the key first (no model is loaded for a server that cannot start), then
    load and check the model. Each refusal is a GraftError with the reason."""
    from core.base.access import check_listen

    key = resolve_key(api_key, host)
    check_listen(host, port)
    return Server(load_model(ref, runs_root), host, port, limits, key)
