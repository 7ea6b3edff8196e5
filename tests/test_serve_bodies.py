"""Bodies over the limit and clients that give up: the real server (uvicorn with scgan's protocol, in a thread) over
raw sockets, so that the framing of each request is exactly what the test writes."""
from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time

import pytest

from helpers import http_request, live_server, multipart_body, png_bytes
from scgan.serve import Limits, create_app

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def _part_head(boundary: str, filename: str | None) -> bytes:
    name = f'; filename="{filename}"' if filename else ""
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"{name}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()


def _post(port: int, headers: str, chunks) -> tuple[int, dict, dict]:
    """Send a request head and ``chunks`` from a thread while reading the answer (a server may answer and close
    before the body is sent, as a client must expect): (status, headers, JSON body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode())

    def send() -> None:
        try:
            for chunk in chunks:
                s.sendall(chunk)
        except OSError:  # the server answered and closed: expected once it refuses
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    data = b""
    try:
        while (got := s.recv(65536)):
            data += got
    except ConnectionResetError:
        pass
    s.close()
    sender.join(30)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, json.loads(body)


def _chunked(parts, total_bytes: int, block: int = MiB):
    """Transfer-Encoding chunked: ``parts`` as they are, then zeros up to ``total_bytes``, then the last chunk."""
    sent = 0
    for p in parts:
        yield f"{len(p):x}\r\n".encode() + p + b"\r\n"
        sent += len(p)
    while sent < total_bytes:
        n = min(block, total_bytes - sent)
        yield f"{n:x}\r\n".encode() + b"\0" * n + b"\r\n"
        sent += n
    yield b"0\r\n\r\n"


def _refused_as_too_large(answer: tuple[int, dict, dict]) -> None:
    status, headers, body = answer
    assert status == 413 and headers["content-type"] == "application/json", answer
    assert "larger than the 20 MiB" in body["error"] and headers.get("connection") == "close", answer


def test_every_body_over_the_limit_gets_413_declared_or_chunked(detector):
    """Declared (Content-Length, with or without Expect: 100-continue) or chunked, a file part or a plain field
    (the form parser's own 1 MiB limit for fields used to answer 400 first), one answer: a JSON 413 and the
    connection closed, before the body is read to its end."""
    _, kind = multipart_body([("a.png", b"x")])
    boundary = kind.split("boundary=")[1]
    with live_server(create_app(detector)) as port:
        for expect in ("", "Expect: 100-continue\r\n"):
            head = f"Content-Type: {kind}\r\nContent-Length: {10 ** 12}\r\n{expect}"  # 1 TB declared
            _refused_as_too_large(_post(port, head, [_part_head(boundary, "a.png"), b"\0" * MiB]))
        for filename in ("big.png", None):
            head = f"Content-Type: {kind}\r\nTransfer-Encoding: chunked\r\n"
            _refused_as_too_large(_post(port, head, _chunked([_part_head(boundary, filename)], 25 * MiB)))
        # a chunk that declares a terabyte, streamed: refused once 20 MiB of it arrived
        head = f"Content-Type: {kind}\r\nTransfer-Encoding: chunked\r\n"
        terabyte = [f"{10 ** 12:x}\r\n".encode() + _part_head(boundary, None), *([b"\0" * MiB] * 25)]
        _refused_as_too_large(_post(port, head, terabyte))
        assert http_request(port, "GET", "/health")[0] == 200
        # under the limit, chunked, the same upload is scored
        body, kind = multipart_body([("a.png", png_bytes())])
        status, _, answer = _post(port, f"Content-Type: {kind}\r\nTransfer-Encoding: chunked\r\n"
                                  "Connection: close\r\n", _chunked([body], len(body)))
        assert status == 200 and answer["results"][0]["filename"] == "a.png"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts file descriptors in /proc")
def test_clients_that_give_up_leak_no_temp_file_slot_or_descriptor(detector, tmp_path, monkeypatch):
    """Uploads cut off midway (over 1 MiB: the form parser spools them to a temporary file) and requests abandoned
    while they wait or score leave no temporary file, no descriptor and no place in the queue behind them."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the form parser spools large parts
    big, kind = multipart_body([("big.png", png_bytes((1200, 1200)))])
    small, small_kind = multipart_body([("a.png", png_bytes())])
    assert len(big) > 2 * MiB
    app = create_app(detector, Limits(workers=1, queue=1))
    with live_server(app) as port:
        assert http_request(port, "GET", "/health")[0] == 200
        before = _open_fds()
        for _ in range(10):  # cut off mid-upload, past the spooling threshold
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\n"
                          f"Content-Length: {len(big)}\r\n\r\n".encode() + big[: len(big) * 2 // 3])
                time.sleep(0.05)
        for _ in range(6):  # whole requests, abandoned while queued or scored (more than workers + queue)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {small_kind}\r\n"
                          f"Content-Length: {len(small)}\r\n\r\n".encode() + small)
        deadline = time.monotonic() + 20
        while (_open_fds() > before or list(tmp_path.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(tmp_path.iterdir()) == [] and _open_fds() <= before
        # both places (the worker and the queue) are free again once the abandoned requests' scoring has ended (it runs
        # on to the end on its worker): a task queued behind it on the one worker returns after it, and each place is
        # released on the server's loop right after its work. Then two requests at once are both scored.
        app.state.pool.submit(lambda: None).result(60)
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(
            http_request(port, "POST", "/predict?overlay=false", files=[("a.png", png_bytes())])[0]))
            for _ in range(2)]
        time.sleep(0.5)  # the release callbacks run on the server's loop
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert answers == [200, 200]
