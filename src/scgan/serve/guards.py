"""What guards a request before a route sees it: the service's :class:`Limits`, the host and origin checks, and the
ASGI middlewares that apply them (body size, host guard, the last-resort error answer, the access log).

:func:`scgan.serve.app.create_app` stacks the middlewares; how connections are accepted, timed and limited is
:mod:`scgan.serve.server`'s.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from scgan.serve.errors import ServeError, error_response
from scgan.utils.limits import MAX_PIXELS, MAX_UPLOAD_MB, SERVE_CONNECTIONS, SERVE_QUEUE, WORKERS
from scgan.utils.names import printable

log = logging.getLogger(__name__)

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
        # the ranges `scgan serve` takes on its command line, for a server built from Python too
        WORKERS.check("workers", self.workers)
        SERVE_QUEUE.check("queue", self.queue)
        MAX_PIXELS.check("max_pixels", self.max_pixels)
        SERVE_CONNECTIONS.check("max_connections", self.max_connections)
        if self.max_upload_bytes > MAX_UPLOAD_MB.high << 20:
            raise ValueError(f"max_upload_bytes must be at most {MAX_UPLOAD_MB.high << 20} ({MAX_UPLOAD_MB.high} MiB: "
                             f"{MAX_UPLOAD_MB.why}), got {self.max_upload_bytes}")
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


class BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes with 413, by its Content-Length or, chunked or
    not, as it streams in (the routes read a form's parts up to the same limit, so no smaller limit of the form
    parser answers first). A 413 closes the connection: the rest of the body is never read."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = (f"the upload is larger than the {self.limit // (1024 * 1024)} MiB this server accepts; send fewer "
                   "or smaller images")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.limit:
            return await error_response(413, too_big, {"connection": "close"})(scope, receive, send)
        seen = 0

        async def closing(message) -> None:
            if message["type"] == "http.response.start" and seen > self.limit:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise ServeError(413, too_big)
            return message

        await self.app(scope, counted, closing)


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


class HostGuard:
    """ASGI middleware: refuse a Host header not in ``allowed`` (400) and a request made by a page of another origin
    (403), before anything else is read."""

    def __init__(self, app: ASGIApp, allowed: Sequence[str]) -> None:
        self.app = app
        self.allowed = tuple(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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


class UnexpectedErrors:
    """ASGI middleware, just inside the access log: a client that went away mid-request is one log line and no
    answer; any other unexpected error is one logged traceback and a JSON 500 (Starlette's own handler answers in
    plain text, and its re-raise made uvicorn log the traceback a second time)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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


class AccessLog:
    """ASGI middleware: one line per HTTP request (client, method, path, status, bytes sent, seconds); never a
    body, a query value or an image."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
