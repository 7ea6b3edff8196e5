"""Running ``scgan serve``: one listening socket, and uvicorn with scgan's HTTP protocol.

uvicorn 0.54 alone waits for ever for a connection's first request, counts such idle connections against its
connection limit, and refuses beyond that limit, and on a malformed request, in plain text: 25 idle connections
made ``/health`` answer ``503 text/plain`` to everyone. :class:`GuardedH11Protocol` (uvicorn's h11 protocol) adds:

- a deadline for every request head (``Limits.read_timeout_s`` from the connection, or from the previous response):
  trickling bytes does not extend it. A connection that sent nothing is closed; one that sent part of a request gets
  a JSON 408 first. A body that pauses longer than that is cut off the same way.
- its own connection limit (``Limits.max_connections``, idle connections included), above the scoring queue: a
  request on a connection beyond it gets a JSON 503 and the connection is closed;
- JSON for uvicorn's own refusals (a malformed request, a request head not ended within ``MAX_HEAD_BYTES``).

Idle connections between requests close after ``Limits.keep_alive_s`` (uvicorn's keep-alive timeout).
"""
from __future__ import annotations

import asyncio
import errno
import http
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence

import h11
import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import H11Protocol

from scgan.serve.app import ANY_IP, LOCAL_HOSTS, Limits, create_app, error_response

log = logging.getLogger("scgan.serve")

MAX_HEAD_BYTES = 16 * 1024  # the request line and headers (h11's default, stated here)
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")


def port_in_range(port: int) -> int:
    """``port`` when it is a TCP port (0: any free one), else ValueError."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be a whole number from 0 to 65535, got {port!r}")
    return port


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (uvicorn listens on it), or OSError as one line that names the address
    and what to do (a port in use, an address this machine does not have)."""
    where = f"{host}:{port_in_range(port)}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise OSError(f"cannot listen on {where}: {host!r} is not an address or a name this machine resolves "
                      f"({e.strerror}); give --host an address such as 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a socket in TIME_WAIT, never a listening one
        sock.bind(address)
    except OSError as e:
        sock.close()
        hint = {errno.EADDRINUSE: "another process listens there: stop it, or choose another --port",
                errno.EACCES: "ports below 1024 need privileges: choose another --port",
                errno.EADDRNOTAVAIL: "this machine has no such address: choose another --host"}
        raise OSError(f"cannot listen on {where}: {e.strerror or e}; "
                      f"{hint.get(e.errno, 'choose another --host or --port')}") from None
    return sock


def allowed_hosts(host: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The host names a server bound to ``host`` answers to: localhost, the bound address, and ``extra``; bound to
    all interfaces, also any IP address (DNS rebinding needs a name, never an address)."""
    wildcard = host in WILDCARD_ADDRESSES
    names = [*LOCAL_HOSTS, *([ANY_IP] if wildcard else [host]), *extra]
    return tuple(dict.fromkeys(n.strip().lower() for n in names if n.strip()))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines for reading each request, its own connection limit, and JSON refusals
    (see the module's doc). :func:`protocol_for` binds the limits."""

    limits: Limits = Limits()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limit_concurrency = None  # uvicorn's limit answers in plain text: ours is in _admit
        self._inner_app = self.app
        self.app = self._admit
        self._deadline: asyncio.TimerHandle | None = None
        self._reading: str | None = None  # "head", "body" or None (the app works, or a response is being sent)

    # -- the connection limit ----------------------------------------------------------------------------
    async def _admit(self, scope, receive, send) -> None:
        if len(self.connections) > self.limits.max_connections:
            message = (f"the server has {self.limits.max_connections} connections open, its limit; retry in a "
                       "moment")
            return await error_response(503, message, {"connection": "close"})(scope, receive, send)
        await self._inner_app(scope, receive, send)

    # -- deadlines ---------------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._follow()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_deadline(None)
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Arm the deadline that fits what the client should be sending now."""
        if self.transport is None or self.transport.is_closing():
            return self._set_deadline(None)
        state = self.conn.their_state
        if state is h11.IDLE:
            if self._reading != "head":  # from the connection, or the last response; more bytes do not extend it
                self._set_deadline("head")
        elif state is h11.SEND_BODY:
            self._set_deadline("body")  # re-armed by every chunk: a pause, not a slow upload, is cut off
        else:
            self._set_deadline(None)

    def _set_deadline(self, reading: str | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._reading = None, reading
        if reading is not None:
            self._deadline = self.loop.call_later(self.limits.read_timeout_s, self._expired, reading)

    def _expired(self, reading: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if reading == "body" and self.flow.read_paused:  # the server stopped reading, not the client sending
            return self._set_deadline("body")
        t = self.limits.read_timeout_s
        if reading == "head" and not self.conn.trailing_data[0]:  # an idle connection: nothing to answer
            self.conn.send(h11.ConnectionClosed())
            self.transport.close()
        elif self.cycle is not None and self.cycle.response_started and reading == "body":
            self.transport.close()
        else:
            what = "its headers" if reading == "head" else "the rest of its body"
            self._refuse(408, f"the request's {what} did not arrive within {t:g} s; send requests without pausing")

    # -- refusals ----------------------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        self._refuse(400, f"the request is not valid HTTP/1.1, or its head did not end within "
                          f"{MAX_HEAD_BYTES // 1024} KiB; send a well-formed request")

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with the service's JSON and close, whatever state the request is in."""
        body = error_response(status, message).body
        head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode("ascii")
        self.transport.write(head + body)
        self.transport.close()


def protocol_for(limits: Limits) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, with ``limits``."""
    return type("ScganH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def make_server(app, limits: Limits, log_level: str = "warning", log_config: dict | None = LOGGING_CONFIG
                ) -> uvicorn.Server:
    """A uvicorn server for ``app`` with scgan's protocol and ``limits`` (``log_config=None`` leaves logging as it
    is: records go to the root logger)."""
    config = uvicorn.Config(app, http=protocol_for(limits), ws="none", lifespan="on", log_level=log_level,
                            log_config=log_config, timeout_keep_alive=limits.keep_alive_s, limit_concurrency=None,
                            h11_max_incomplete_event_size=MAX_HEAD_BYTES, server_header=False)
    return uvicorn.Server(config)


class _StderrHandler(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record is written, not the one there was when it was made (an
    in-process caller that swaps stderr, such as a test's capture, leaves no handler writing to a closed file)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def log_to_stderr(prefix: str = "") -> None:
    """The service's records on stderr, whatever the root logger's level: one access line per request
    (``scgan.access``) and the supervisor's and workers' lines (``scgan.serve``), each after ``prefix``."""
    for name in ("scgan.access", "scgan.serve"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = _StderrHandler()
            handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


def url_of(host: str, sock: socket.socket) -> str:
    """The URL a server bound to ``host`` on ``sock`` is reached by."""
    shown = f"[{host}]" if ":" in host else (host or "0.0.0.0")
    return f"http://{shown}:{sock.getsockname()[1]}/"


def serve(detector, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None,
          allowed: Sequence[str] = (), log_level: str = "warning",
          announce: Callable[[str], None] | None = None, feedback=None, recent=None) -> None:
    """Serve ``detector`` until interrupted on ``host``:``port`` (localhost by default), answering to the host names
    of :func:`allowed_hosts` plus ``allowed``, from this one process. ``announce(url)`` is called once the port is
    bound; a port that cannot be bound is one OSError line, before anything starts. SIGHUP is logged and ignored:
    reloading the model takes worker processes (:mod:`scgan.serve.supervisor`) or a restart."""
    limits = limits or Limits()
    app = create_app(detector, limits, allowed_hosts=allowed_hosts(host, allowed), feedback=feedback, recent=recent)
    log_to_stderr()
    sock = listen(host, port)
    previous_hup = None
    try:
        if announce is not None:
            announce(url_of(host, sock))
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
            previous_hup = signal.signal(signal.SIGHUP, lambda *_: log.warning(
                "SIGHUP ignored: this server is one process and keeps serving sha256 %s; to reload the model, "
                "restart it, or serve with --processes N, where SIGHUP reloads", detector.info.get("sha256")))
        make_server(app, limits, log_level).run(sockets=[sock])
    finally:
        sock.close()
        if previous_hup is not None:  # the handler there was before, for a caller that serves in-process
            signal.signal(signal.SIGHUP, previous_hup)
