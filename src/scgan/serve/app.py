"""The HTTP service: ``POST /predict``, ``GET /model``, ``GET /health`` and the page at ``GET /``.

Scoring runs on a fixed pool of worker threads (``Limits.workers``); at most ``Limits.queue`` more
requests wait for one, and any beyond that are turned away at once with 503, so a burst never starts
a thread per request or grows memory without bound. Every refusal is a JSON body
``{"error": "<one sentence>"}`` with a 4xx status (503 when busy or too slow), never a 500 or a dead worker.

The app answers only to the host names it is given (a web page the operator visits cannot reach a loopback server
through DNS rebinding) and refuses requests a page of another origin made. How connections are accepted, timed
and limited is :mod:`scgan.serve.server`'s.
"""
from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import logging
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from scgan.utils.names import printable

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.datastructures import Headers, UploadFile
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect
except ImportError:  # pragma: no cover - depends on the installation
    raise ImportError("scgan serve needs FastAPI and uvicorn; install the serve extra: "
                      "pip install 'scgan[serve]'") from None

log = logging.getLogger(__name__)

FIELD = "file"  # the multipart field that carries images (repeat it for several)
# The host names a server answers to by default, besides the address it is bound to.
LOCAL_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
ANY_HOST = "*"  # in allowed hosts: any Host header (only behind a proxy that checks it)
ANY_IP = "*ip"  # in allowed hosts: any IP address (a server bound to all interfaces; DNS rebinding needs a name)


@dataclass
class Limits:
    """What one server accepts; the defaults suit one CPU model on a workstation."""

    max_upload_bytes: int = 20 * 1024 * 1024  # the whole request body
    max_files: int = 16  # images per request
    max_pixels: int = 40_000_000  # width x height of one image, checked from its header before decoding
    workers: int = 1  # scoring threads (each scores one request's batch at a time)
    queue: int = 8  # requests that may wait for a worker; more get 503 at once
    timeout_s: float = 60.0  # waiting plus scoring, per request; longer gets 503
    max_connections: int = 64  # open connections, idle ones included; a request on one more gets 503
    read_timeout_s: float = 10.0  # a request's head must arrive within it, its body never pause longer
    keep_alive_s: float = 5.0  # an idle connection between requests is closed after it

    def __post_init__(self) -> None:
        counts = {"max_upload_bytes": self.max_upload_bytes, "max_files": self.max_files,
                  "max_pixels": self.max_pixels, "workers": self.workers, "max_connections": self.max_connections}
        for name, value in [*counts.items(), ("queue", self.queue + 1)]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= {0 if name == 'queue' else 1}, got "
                                 f"{getattr(self, name)!r}")
        for name in ("timeout_s", "read_timeout_s", "keep_alive_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}: a server with it "
                                 "would refuse every request")
        if self.max_connections <= self.workers + self.queue:
            raise ValueError(f"max_connections ({self.max_connections}) must exceed workers + queue "
                             f"({self.workers + self.queue}), so that a busy server answers 'busy' rather than "
                             "turning connections away")


class ServeError(Exception):
    """A request refused with ``status`` and a one-sentence ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every refusal's shape: ``{"error": "<one sentence>"}`` with ``status``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes, by its Content-Length or as it streams in."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = (f"the upload is larger than the {self.limit // (1024 * 1024)} MiB this server accepts; send fewer "
                   "or smaller images")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await error_response(413, too_big)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise ServeError(413, too_big)
            return message

        await self.app(scope, counted, send)


def host_name(value: str) -> str:
    """The host of a Host header or of an origin's host[:port]: lower case, without the port, the brackets of an
    IPv6 address, or a trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return (value.rsplit(":", 1)[0] if value.count(":") == 1 else value).rstrip(".")


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """True when a Host header names one of ``allowed`` (which may hold ANY_HOST, or ANY_IP for any IP address)."""
    name = host_name(host)
    if ANY_HOST in allowed or name in {host_name(a) for a in allowed}:
        return True
    if ANY_IP in allowed:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True
    return False


def same_origin(origin: str, host: str | None) -> bool:
    """True when an Origin header is this server's own: http(s) and the request's own Host."""
    parts = urlsplit(origin.strip())
    return host is not None and parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()


class _HostGuard:
    """ASGI middleware: refuse a Host header not in ``allowed`` (400) and a request made by a page of another origin
    (403), before anything else is read."""

    def __init__(self, app, allowed: Sequence[str]) -> None:
        self.app = app
        self.allowed = tuple(allowed)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        host, origin = headers.get("host"), headers.get("origin")
        if host is not None and not host_allowed(host, self.allowed):
            shown = ", ".join(a for a in self.allowed if a not in (ANY_HOST, ANY_IP))
            name = printable(host_name(host))[:100]
            message = (f"this server does not answer to the host name {name!r} (it answers to {shown}); if that "
                       f"name is yours, start it with --allowed-host {name}")
            return await error_response(400, message)(scope, receive, send)
        if origin is not None and not same_origin(origin, host):
            message = (f"a request made by a page of {printable(origin)[:100]!r} is refused: this server answers "
                       "its own page and clients that send no Origin (curl, scripts)")
            return await error_response(403, message)(scope, receive, send)
        await self.app(scope, receive, send)


class _Errors:
    """ASGI middleware, just inside the access log: a client that went away mid-request is one log line and no
    answer; any other unexpected error is one logged traceback and a JSON 500 (Starlette's own handler answers in
    plain text, and its re-raise made uvicorn log the traceback a second time)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:
            log.info("%s %s: the client went away before its request arrived; nothing was answered",
                     scope["method"], scope["path"])
        except Exception as e:  # noqa: BLE001 — the last resort: log, answer, live on
            log.exception("unexpected error on %s", scope["path"])
            if not started:
                await error_response(500, f"internal error ({type(e).__name__}); the server keeps running, see its "
                                  "log")(scope, receive, send)


access_log = logging.getLogger("scgan.access")


class _AccessLog:
    """ASGI middleware: one line per HTTP request (client, method, path, status, bytes sent, seconds); never a
    body, a query value or an image."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, sent = time.monotonic(), 0, 0

        async def counted(message):
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            client = (scope.get("client") or ("-",))[0]
            access_log.info('%s "%s %s" %s %d B %.3f s', client, scope.get("method", ""),
                            printable(scope.get("path", ""))[:200], status or "-", sent, time.monotonic() - start)


def _check_header(data: bytes, name: str, max_pixels: int) -> None:
    """Refuse what is not an image, or is too large, from the header alone (nothing is decoded yet)."""
    from PIL import Image, UnidentifiedImageError

    from scgan.data.io import FORMAT_NAMES, open_image

    if not data:
        raise ServeError(400, f"{name} is empty; choose an image file")
    try:
        with open_image(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError:
        raise ServeError(413, f"{name} has more pixels than this server accepts ({max_pixels:,}); downscale it "
                              "first") from None
    except UnidentifiedImageError:
        raise ServeError(415, f"{name} is not an image this server reads ({FORMAT_NAMES})") from None
    except Exception:  # noqa: BLE001 - Pillow raises many types for a damaged header
        raise ServeError(422, f"{name} has a damaged image header; re-save or replace the file") from None
    if w * h > max_pixels:
        raise ServeError(413, f"{name} is {w} x {h} pixels, more than the {max_pixels:,} this server accepts; "
                              "downscale it first")


def _png_data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def create_app(detector, limits: Limits | None = None, allowed_hosts: Sequence[str] = LOCAL_HOSTS) -> FastAPI:
    """The FastAPI application serving ``detector`` (a :class:`scgan.inference.detector.Detector`) within ``limits``,
    to requests whose Host header names one of ``allowed_hosts``."""
    limits = limits or Limits()
    app = FastAPI(title="scgan", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_BodyLimit, limit=limits.max_upload_bytes)  # added last is outermost
    app.add_middleware(_HostGuard, allowed=tuple(allowed_hosts))
    app.add_middleware(_Errors)
    app.add_middleware(_AccessLog)  # outermost: logs every request, refused ones too
    pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="scgan-score")
    admitted = threading.BoundedSemaphore(limits.workers + limits.queue)
    model_info = detector.describe()
    threshold_norm = detector.threshold_normalized
    page = resources.files("scgan.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, e: ServeError) -> JSONResponse:
        return error_response(e.status, e.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = {404: f"there is no {request.url.path} here; the endpoints are /, /predict, /model and /health",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(e.status_code, str(e.detail))
        return error_response(e.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(422, "the request is not what this endpoint takes; see GET / for an example")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        return {**model_info, "limits": asdict(limits)}

    def score(files: list[tuple[str, bytes | ServeError]], overlays: bool) -> list[dict[str, Any]]:
        """Per file a result, or {"filename", "error", "status"} for one that cannot be scored (the others are
        scored: one policy with ``scgan predict``); ServeError only when no file could be scored."""
        readable = [(i, data) for i, (_, data) in enumerate(files) if not isinstance(data, ServeError)]
        outcomes = {readable[o.index][0]: o for o in detector.iter_predict([data for _, data in readable])}
        for i, o in list(outcomes.items()):
            if o.result is None:
                files[i] = (files[i][0], ServeError(422, f"{files[i][0]} is truncated or damaged and cannot be "
                                                         "decoded; replace the file"))
        if all(isinstance(data, ServeError) for _, data in files):
            raise next(data for _, data in files)
        out = []
        for i, (name, data) in enumerate(files):
            if isinstance(data, ServeError):
                out.append({"filename": name, "error": data.message, "status": data.status})
                continue
            o = outcomes[i]
            entry = {"filename": name, **o.result.to_dict(), "threshold_normalized": threshold_norm}
            if overlays:
                entry["overlay"] = _png_data_url(o.result.overlay())
            out.append(entry)
        return out

    @app.post("/predict")
    async def predict(request: Request, overlay: bool = True) -> dict[str, Any]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":
            raise ServeError(415, f"send images as multipart/form-data in the field '{FIELD}' "
                                  f"(got {kind or 'no content type'})")
        try:
            form = await request.form(max_files=limits.max_files, max_fields=limits.max_files)
        except StarletteHTTPException as e:
            raise ServeError(400 if e.status_code != 413 else 413,
                             f"the form was refused: {str(e.detail).rstrip('.')}; send at most {limits.max_files} "
                             "images") from None
        uploads = [v for v in form.getlist(FIELD) if isinstance(v, UploadFile)]
        if not uploads:
            fields = ", ".join(sorted(set(form.keys()))) or "none"
            raise ServeError(422, f"no image in the form field '{FIELD}' (fields sent: {fields}); "
                                  f"send each image as a file in '{FIELD}'")
        files = []
        for i, up in enumerate(uploads):
            name = printable(up.filename or f"image {i + 1}")[:200]
            data = await up.read()
            try:
                _check_header(data, name, limits.max_pixels)
            except ServeError as e:  # this file only: the others are still scored
                data = e
            files.append((name, data))
        await form.close()
        if not admitted.acquire(blocking=False):
            raise ServeError(503, f"the server is busy ({limits.workers + limits.queue} requests in progress); "
                                  "retry in a moment")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(pool, score, files, overlay)
        future.add_done_callback(lambda _: admitted.release())  # released when the work ends, not at the timeout
        try:
            results = await asyncio.wait_for(asyncio.shield(future), timeout=limits.timeout_s)
        except asyncio.TimeoutError:
            raise ServeError(503, f"scoring took longer than {limits.timeout_s:g} s; retry with fewer or smaller "
                                  "images") from None
        return {"score_name": detector.default_score, "results": results}

    app.state.detector = detector
    app.state.limits = limits
    app.state.allowed_hosts = tuple(allowed_hosts)
    app.state.pool = pool
    return app
