"""scgan serve: every endpoint and every kind of bad input through FastAPI's TestClient (as localhost: the app answers
only to the host names it knows); tests/test_hostile_images_and_requests.py runs the real server."""
from __future__ import annotations

import base64
import copy
import io
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from scgan.inference.detector import Detector  # noqa: E402
from scgan.serve import Limits, create_app  # noqa: E402

pytestmark = pytest.mark.integration


def _client(app, **kwargs) -> TestClient:
    return TestClient(app, base_url="http://localhost", **kwargs)


@pytest.fixture(scope="module")
def client(detector):
    with _client(create_app(detector, Limits(max_upload_bytes=2 * 1024 * 1024, max_files=4,
                                                max_pixels=1_000_000))) as c:
        yield c


@pytest.fixture(scope="module")
def png(demo_root, demo_category) -> bytes:
    path = sorted((demo_root / demo_category / "test").rglob("*.png"))[-1]
    img = Image.open(path).convert("RGB").resize((50, 30))  # non-square, not the model's S
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _one_sentence(r) -> str:
    body = r.json()
    assert set(body) == {"error"}, body
    msg = body["error"]
    assert msg and "\n" not in msg and "Traceback" not in msg and len(msg) < 300, msg
    return msg


def test_health_model_and_page(client, detector):
    assert client.get("/health").json() == {"status": "ok"}
    m = client.get("/model").json()
    assert m["score_names"] == list(detector.score_names) and m["default_score"] == detector.default_score
    assert m["image_size"] == detector.image_size and m["preset"] == "cpu" and m["version"]
    assert m["calibration"]["threshold"] == pytest.approx(detector.threshold) and m["calibration"]["n_images"] > 0
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'id="drop"' in html and 'id="threshold"' in html
    assert "http://" not in html and "https://" not in html and "//cdn" not in html  # works offline


def test_predict_returns_scores_decision_and_overlay(client, detector, png):
    r = client.post("/predict", files=[("file", ("a.png", png, "image/png")), ("file", ("b.png", png, "image/png"))])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["score_name"] == detector.default_score and len(body["results"]) == 2
    res = body["results"][0]
    expected = detector.predict(png)
    assert res["filename"] == "a.png" and res["scores"] == pytest.approx(expected.scores, rel=1e-6)
    assert set(res["scores"]) == set(detector.score_names)
    assert res["decision"] == expected.decision and res["threshold"] == pytest.approx(detector.threshold)
    assert (res["width"], res["height"]) == (50, 30)
    assert res["normalized"] == pytest.approx(expected.normalized) and res["threshold_normalized"] is not None
    header, data = res["overlay"].split(",", 1)
    assert header == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (50, 30)
    r = client.post("/predict?overlay=false", files={"file": ("a.png", png, "image/png")})
    assert r.status_code == 200 and "overlay" not in r.json()["results"][0]


def _huge_header_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_bad_input_is_a_4xx_json_sentence(client, png):
    cases = {
        "not an image": (415, {"files": {"file": ("x.png", b"hello, not an image", "image/png")}}, "not an image"),
        "truncated": (422, {"files": {"file": ("t.png", png[: len(png) // 2], "image/png")}}, "truncated"),
        "empty": (400, {"files": {"file": ("e.png", b"", "image/png")}}, "empty"),
        "too many pixels": (413, {"files": {"file": ("h.png", _huge_header_png(), "image/png")}}, "pixels"),
        "too large": (413, {"files": {"file": ("big.png", b"\0" * (3 * 1024 * 1024), "image/png")}}, "MiB"),
        "wrong field": (422, {"files": {"image": ("a.png", png, "image/png")}}, "'file'"),
        "not multipart": (415, {"json": {"file": "a.png"}}, "multipart/form-data"),
        "too many files": (400, {"files": [("file", (f"{i}.png", png, "image/png")) for i in range(6)]}, "at most 4"),
    }
    for name, (status, kwargs, words) in cases.items():
        r = client.post("/predict", **kwargs)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert words in _one_sentence(r), (name, r.json())
    assert client.get("/nowhere").status_code == 404 and "/predict" in _one_sentence(client.get("/nowhere"))
    r = client.get("/predict")
    assert r.status_code == 405 and "GET" in _one_sentence(r)
    # and the server still scores after all of them
    assert client.post("/predict", files={"file": ("a.png", png, "image/png")}).status_code == 200


def _slow(detector, gate: threading.Event, entered: threading.Event) -> Detector:
    slow = copy.copy(detector)
    score = detector._score

    def wait_then_score(x):
        entered.set()
        gate.wait(30)
        return score(x)

    slow._score = wait_then_score
    return slow


def test_a_full_queue_is_refused_at_once_and_the_work_goes_on(detector, png):
    gate, entered = threading.Event(), threading.Event()
    app = create_app(_slow(detector, gate, entered), Limits(workers=1, queue=0))
    with _client(app) as c:
        first: dict = {}
        t = threading.Thread(target=lambda: first.update(r=c.post("/predict", files={"file": ("a.png", png)})))
        t.start()
        assert entered.wait(30)
        start = time.monotonic()
        busy = c.post("/predict", files={"file": ("b.png", png)})
        assert busy.status_code == 503 and "busy" in _one_sentence(busy) and time.monotonic() - start < 5
        gate.set()
        t.join(30)
        assert first["r"].status_code == 200
        assert c.post("/predict", files={"file": ("c.png", png)}).status_code == 200  # the slot was released


def test_a_slow_request_times_out_with_503(detector, png):
    gate, entered = threading.Event(), threading.Event()
    with _client(create_app(_slow(detector, gate, entered), Limits(timeout_s=0.3))) as c:
        r = c.post("/predict", files={"file": ("a.png", png)})
        gate.set()
        assert r.status_code == 503 and "longer than 0.3 s" in _one_sentence(r)


def test_an_internal_error_is_json_and_the_server_lives_on(detector, png):
    broken = copy.copy(detector)
    calls = []

    def fail_once(x):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return detector._score(x)

    broken._score = fail_once
    with _client(create_app(broken), raise_server_exceptions=False) as c:
        r = c.post("/predict", files={"file": ("a.png", png)})
        assert r.status_code == 500 and "RuntimeError" in _one_sentence(r)
        assert c.post("/predict", files={"file": ("a.png", png)}).status_code == 200


def test_scores_from_an_array_round_trip(client, detector):
    """An 8-bit grayscale upload is read like the same file on disk."""
    gray = (np.arange(40 * 24) % 256).astype(np.uint8).reshape(24, 40)
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG")
    r = client.post("/predict", files={"file": ("g.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200 and r.json()["results"][0]["scores"] == pytest.approx(detector.predict(gray).scores)


def test_the_serve_command_passes_its_limits(monkeypatch, trained):
    import scgan.serve
    from scgan.cli import main

    seen = {}
    monkeypatch.setattr(scgan.serve, "serve", lambda det, **kw: seen.update(det=det, **kw))
    assert main(["serve", "--checkpoint", str(trained[0].model_path), "--port", "8123", "--workers", "2",
                 "--queue", "3", "--max-upload-mb", "5", "--timeout", "7", "--read-timeout", "3",
                 "--max-connections", "20", "--allowed-host", "scanner.local"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123 and seen["det"].backend == "torch"
    assert seen["limits"] == Limits(max_upload_bytes=5 * 1024 * 1024, workers=2, queue=3, timeout_s=7.0,
                                    read_timeout_s=3.0, max_connections=20)
    assert seen["allowed"] == ["scanner.local"]


def test_options_served_from_one_process_are_refused_with_processes(trained, tmp_path, capsys):
    """Worker processes get the model and the limits only: the options they would drop are refused in one line."""
    from helpers import one_error_line
    from scgan.cli import main

    model = str(trained[0].model_path)
    for extra in (["--db", f"sqlite:///{tmp_path / 'r.db'}", "--overlay-dir", str(tmp_path / "o")],
                  ["--feedback", str(tmp_path / "marks")]):
        assert main(["serve", "--checkpoint", model, "--processes", "2", *extra]) == 1
        assert "leave out --processes" in one_error_line(capsys.readouterr().err, "serve")
    assert list(tmp_path.iterdir()) == []
