"""Hostile images and requests are refused or bounded: by the image readers every command uses, and by
``scgan serve``'s server. Each test is one guarantee of docs/reliability.md.

The service cases run ``scgan serve``'s own server (uvicorn with scgan's protocol) on 127.0.0.1 in a thread,
bounded in requests and seconds (``helpers.live_server``).
"""
from __future__ import annotations

import copy
import io
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import http_request, multipart_body, one_error_line, png_bytes
from scgan.cli import main
from scgan.inference.detector import Detector
from scgan.inference.predict import run_predict

pytestmark = pytest.mark.integration


def _refusal(answer: tuple[int, str, dict], status: int) -> str:
    """The one sentence of a JSON refusal with ``status``."""
    got, kind, body = answer
    assert got == status and kind == "application/json" and set(body) == {"error"}, answer
    assert "\n" not in body["error"] and len(body["error"]) < 300, body
    return body["error"]


def _counting(detector: Detector) -> tuple[Detector, list]:
    """A copy of ``detector`` that records every batch it scores."""
    counted, calls = copy.copy(detector), []

    def score(x):
        calls.append(len(x))
        return detector._score(x)

    counted._score = score
    return counted, calls



# ---- uploaded PostScript never runs Ghostscript ------------------------------------------------------------
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
       b"newpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n")


@pytest.fixture
def fake_ghostscript(tmp_path, monkeypatch) -> Path:
    """A ``gs`` first on PATH that only records that it ran; returns the file it writes when it does."""
    from PIL import EpsImagePlugin

    ran = tmp_path / "gs_ran"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f"#!/bin/sh\necho \"$@\" > {ran}\nexit 1\n")
    (bin_dir / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # Pillow looks for gs again
    return ran


def test_postscript_is_never_decoded_by_the_library_readers(detector, tmp_path, fake_ghostscript):
    from scgan.data.io import ImageReadError, load_image
    from scgan.inference.detector import InputError

    eps = tmp_path / "drawing.png"  # the name does not matter: the bytes say what the file is
    eps.write_bytes(EPS)
    with pytest.raises(ImageReadError, match="not a PNG, JPEG, BMP, TIFF or WebP image"):
        detector.predict(eps)
    with pytest.raises(ImageReadError, match="not a PNG, JPEG, BMP, TIFF or WebP image"):
        detector.predict(EPS)
    with pytest.raises(ImageReadError):
        load_image(eps, 32)  # the data sets' reader
    out = run_predict([eps], tmp_path / "p", detector=detector, overlays=False, progress=False)
    assert not out.predictions and "not a PNG" in out.skipped[0][1]
    with Image.open(io.BytesIO(EPS)) as opened:  # a PIL image of the caller's own, not decoded yet
        with pytest.raises(InputError, match="EPS file is not scored"):
            detector.predict(opened)
    assert not fake_ghostscript.exists()
    for fmt in ("PNG", "JPEG", "BMP", "TIFF", "WEBP"):  # what is decoded
        buf = io.BytesIO()
        Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(buf, format=fmt)
        assert detector.predict(buf.getvalue()).original_size == (20, 30), fmt


# ---- every image mode is bounded by max_side ---------------------------------------------------------------
def _big_16_bit_png(side: int = 5000) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode, fmt", [("I;16", "PNG"), ("I;16B", "TIFF"), ("I", "TIFF"), ("F", "TIFF"),
                                       ("P", "PNG"), ("1", "PNG"), ("LA", "PNG"), ("RGB", "PNG")])
def test_every_image_mode_is_reduced_to_max_side_from_files_and_pil_images(detector, mode, fmt):
    """Encoded files and the caller's own PIL images of every mode (P, 1 and I;16 included) are read, none refused
    for its mode."""
    base = Image.fromarray(np.tile(np.arange(0, 250, 5, dtype=np.uint8), (40, 60)))  # 40 x 3000 grey ramp
    image = base.convert("RGB").convert("P") if mode == "P" else base.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    for x in (buf.getvalue(), image):
        r = detector.predict(x)
        assert r.original_size == (40, 3000) and max(r.image.shape[:2]) <= detector.max_side, (mode, type(x))
        assert r.image.shape[:2] == (20, 1500) and r.heat.shape == (20, 1500)


def test_huge_16_bit_png_is_reduced_while_read(detector, demo_root, demo_category):
    from scgan.data.io import load_image_with_size

    data = _big_16_bit_png()
    assert len(data) < 100_000
    r = detector.predict(data)
    assert r.original_size == (5000, 5000) and r.image.shape == (1667, 1667, 3) and r.overlay().size == (1667, 1667)
    img, size = load_image_with_size(io.BytesIO(data), None, max_side=2048)
    assert size == (5000, 5000) and img.shape == (1667, 1667, 3)


def test_big_endian_arrays_score_like_native_ones(detector):
    a = (np.arange(24 * 40, dtype=np.uint16) * 60).reshape(24, 40)
    assert detector.predict(a.astype(">u2")).scores == detector.predict(a).scores
    f = a.astype(np.float32) / 65535.0
    assert detector.predict(f.astype(">f4")).scores == detector.predict(f).scores


def test_an_uploaded_postscript_file_is_refused_unread(detector, fake_ghostscript):
    from helpers import live_server
    from scgan.serve import create_app

    with live_server(create_app(detector)) as port:
        answer = http_request(port, "POST", "/predict", files=[("drawing.png", EPS)])
        assert "not an image this server reads (PNG, JPEG, BMP, TIFF or WebP)" in _refusal(answer, 415)
        answer = http_request(port, "POST", "/predict?overlay=false", files=[("ok.webp", _webp())])
        assert answer[0] == 200 and answer[2]["results"][0]["width"] == 40
    assert not fake_ghostscript.exists()


def _webp() -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(png_bytes())).save(buf, format="WEBP")
    return buf.getvalue()


# ---- DNS rebinding and cross-origin requests ---------------------------------------------------------------
def test_foreign_host_names_and_origins_are_refused(detector):
    from helpers import live_server
    from scgan.serve import create_app
    from scgan.serve.server import allowed_hosts

    counted, calls = _counting(detector)
    with live_server(create_app(counted, allowed_hosts=allowed_hosts("127.0.0.1", ["scanner.local"]))) as port:
        for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1.attacker.example:{port}"):
            assert "attacker.example" in _refusal(http_request(port, "GET", "/model", headers={"Host": host}), 400)
            answer = http_request(port, "POST", "/predict", files=[("a.png", png_bytes())], headers={"Host": host})
            _refusal(answer, 400)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost.:{port}", f"scanner.local:{port}"):
            assert http_request(port, "GET", "/model", headers={"Host": host})[0] == 200, host
        for origin in ("http://attacker.example", f"http://attacker.example:{port}", "null",
                       f"http://localhost:{port + 1}"):
            answer = http_request(port, "POST", "/predict", files=[("a.png", png_bytes())], headers={"Origin": origin})
            assert "refused" in _refusal(answer, 403), origin
            _refusal(http_request(port, "GET", "/model", headers={"Origin": origin}), 403)
        assert calls == []  # nothing refused was scored
        same = {"Origin": f"http://127.0.0.1:{port}"}  # the page itself
        answer = http_request(port, "POST", "/predict?overlay=false", files=[("a.png", png_bytes())], headers=same)
        assert answer[0] == 200
        assert http_request(port, "GET", "/model")[0] == 200  # a client that sends no Origin (curl, scripts)
        assert calls == [1]


# ---- idle connections and bursts ---------------------------------------------------------------------------
def _read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed (seconds from now)."""
    start, data = time.monotonic(), b""
    sock.settimeout(limit_s)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data, float("inf")
    except ConnectionResetError:
        pass
    return data, time.monotonic() - start


def test_idle_connections_are_closed_and_never_starve_the_server(detector):
    from helpers import live_server
    from scgan.serve import Limits, create_app

    with live_server(create_app(detector, Limits(read_timeout_s=1.0))) as port:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(15)]
        half = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(10)]
        for s in half:
            s.sendall(b"GET /hea")  # half a request line, never finished
        assert http_request(port, "GET", "/health") == (200, "application/json", {"status": "ok"})
        closed = [_read_until_closed(s, 5.0) for s in idle + half]
        for s in idle + half:
            s.close()
        assert all(t < 4.0 for _, t in closed), [t for _, t in closed]  # read_timeout_s 1 s, with slack
        assert all(data == b"" for data, _ in closed[:15])  # nothing sent, nothing answered
        for data, _ in closed[15:]:
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408") and b"application/json" in head.lower(), data
            assert "did not arrive within 1 s" in json.loads(body)["error"]
        assert http_request(port, "GET", "/health")[0] == 200
    # Beyond the connection limit a request gets the service's JSON, not uvicorn's plain text.
    with live_server(create_app(detector, Limits(max_connections=12, read_timeout_s=30.0))) as port:
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(12)]
        time.sleep(0.2)
        assert "connections open" in _refusal(http_request(port, "GET", "/health"), 503)
        for s in held:
            s.close()
        deadline = time.monotonic() + 10  # the server sees the closes when its loop next runs
        while (status := http_request(port, "GET", "/health")[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status == 200


def test_request_that_trickles_or_stalls_is_cut_off(detector):
    from helpers import live_server
    from scgan.serve import Limits, create_app

    body, kind = multipart_body([("a.png", png_bytes())])
    with live_server(create_app(detector, Limits(read_timeout_s=1.0))) as port:
        trickle = socket.create_connection(("127.0.0.1", port), timeout=5)
        start = time.monotonic()
        try:  # one byte of the head every 0.2 s: each byte would reset a plain idle timer
            for byte in b"GET /health HTTP/1.1\r\nHost: localhost\r\n":
                trickle.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass  # cut off while still sending
        data, _ = _read_until_closed(trickle, 5.0)
        trickle.close()
        assert time.monotonic() - start < 4.0 and data.startswith(b"HTTP/1.1 408"), data
        stall = socket.create_connection(("127.0.0.1", port), timeout=5)
        stall.sendall(f"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: {kind}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:100])  # then nothing more
        data, closed = _read_until_closed(stall, 5.0)
        stall.close()
        assert closed < 4.0 and data.startswith(b"HTTP/1.1 408") and b"the rest of its body" in data, data
        for request in (b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 20_000,  # no end in 16 KiB
                        b"NOT HTTP AT ALL\r\n\r\n"):  # uvicorn's own answer would be plain text
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(request)
                head, _, answer = _read_until_closed(s, 5.0)[0].partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400") and "not valid HTTP/1.1" in json.loads(answer)["error"], head
        assert http_request(port, "GET", "/health")[0] == 200


def test_burst_of_forty_clients_gets_only_json_answers(detector):
    """1 worker and a queue of 8: the first 9 requests are scored, the other 31 told at once that it is busy."""
    from helpers import live_server
    from scgan.serve import create_app

    gate = threading.Event()
    slow = copy.copy(detector)

    def wait_then_score(x):
        gate.wait(30)
        return detector._score(x)

    slow._score = wait_then_score
    answers: list = []
    lock = threading.Lock()
    start = threading.Barrier(40)

    def client(port: int) -> None:
        start.wait(10)
        answer = http_request(port, "POST", "/predict?overlay=false", files=[("a.png", png_bytes())])
        with lock:
            answers.append(answer)

    with live_server(create_app(slow)) as port:
        threads = [threading.Thread(target=client, args=(port,), daemon=True) for _ in range(40)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(answers) < 31 and time.monotonic() < deadline:  # the refusals come before any scoring ends
            time.sleep(0.05)
        gate.set()
        for t in threads:
            t.join(30)
    assert len(answers) == 40
    busy = [a for a in answers if a[0] == 503]
    assert all("busy" in _refusal(a, 503) for a in busy)
    assert sorted(a[0] for a in answers) == [200] * 9 + [503] * 31


# ---- a huge upload is scored at max_side -------------------------------------------------------------------
def test_huge_16_bit_upload_is_scored_and_overlaid_at_max_side(detector):
    import base64

    from helpers import live_server
    from scgan.serve import create_app

    with live_server(create_app(detector)) as port:
        status, _, body = http_request(port, "POST", "/predict", files=[("big.png", _big_16_bit_png())])
    assert status == 200, body
    r = body["results"][0]
    assert (r["width"], r["height"]) == (5000, 5000)
    overlay = Image.open(io.BytesIO(base64.b64decode(r["overlay"].split(",", 1)[1])))
    assert overlay.size == (1667, 1667)


# ---- serve's settings, and clients that go away ------------------------------------------------------------
def test_serve_refuses_timeouts_and_ports_that_cannot_work_in_one_line(trained, capsys, monkeypatch):
    import scgan.serve

    model = str(trained[0].model_path)
    started = []
    monkeypatch.setattr(scgan.serve, "serve", lambda *a, **kw: started.append(kw))
    for flag, value in (("--timeout", "0"), ("--timeout", "-1"), ("--timeout", "nan"), ("--read-timeout", "inf"),
                        ("--port", "70000"), ("--port", "-5")):
        with pytest.raises(SystemExit) as e:
            main(["serve", "--checkpoint", model, flag, value])
        assert e.value.code == 2 and f"argument {flag}" in capsys.readouterr().err, (flag, value)
    assert main(["serve", "--checkpoint", model, "--queue", "80"]) == 1  # above the 64 connections
    assert "max_connections (64) must exceed" in one_error_line(capsys.readouterr().err, "serve")
    assert started == []
    monkeypatch.undo()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--checkpoint", model, "--port", str(port)]) == 1
        out = capsys.readouterr()
        line = one_error_line(out.err, "serve")
        assert f"cannot listen on 127.0.0.1:{port}" in line and "another --port" in line and out.out == ""


def test_client_that_goes_away_mid_upload_is_one_log_line(detector, caplog):
    from helpers import live_server
    from scgan.serve import create_app

    body, kind = multipart_body([("a.png", png_bytes(size=(400, 400)))])
    with caplog.at_level("INFO"), live_server(create_app(detector)) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {kind}\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 3])
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while not any("went away" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert http_request(port, "GET", "/health")[0] == 200
    mine = [r for r in caplog.records if r.name.startswith(("uvicorn", "scgan"))]
    assert [r.getMessage() for r in mine if "went away" in r.getMessage()] == \
        ["POST /predict: the client went away before its request arrived; nothing was answered"]
    assert not any(r.exc_info for r in mine) and not any(r.levelname in ("ERROR", "CRITICAL") for r in mine), \
        [r.getMessage() for r in mine]
