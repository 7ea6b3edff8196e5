"""The service's parts alone, without the app's middleware stack: the router on a bare FastAPI app, the scoring pool
called directly, the header check, and one guard around a bare app. The detector is a real Detector on a numpy score
function (the mean brightness), so nothing is trained; tests/test_serve.py runs the composed app on a trained model."""
from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from scgan.inference.detector import Detector  # noqa: E402
from scgan.serve.errors import EXCEPTION_HANDLERS, ServeError  # noqa: E402
from scgan.serve.guards import HostGuard, Limits  # noqa: E402
from scgan.serve.routes import Scoring, build_router, check_header  # noqa: E402

pytestmark = pytest.mark.unit


def _mean_brightness(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, C, H, W) -> scores (B, 1), maps (B, H, W): a stand-in model that needs no training."""
    return x.mean(axis=(1, 2, 3))[:, None], x.mean(axis=1)


@pytest.fixture
def detector() -> Detector:
    return Detector(_mean_brightness, spec=32, score_names=["mean"], default_score="mean", calibration=None,
                    backend="numpy")


def _png(value: int, size: tuple[int, int] = (40, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


def _bare_app(detector: Detector, limits: Limits, handlers: bool = True) -> FastAPI:
    """Only the router (and, with ``handlers``, the exception handlers): no middleware."""
    app = FastAPI()
    for kind, handler in EXCEPTION_HANDLERS.items() if handlers else ():
        app.add_exception_handler(kind, handler)
    app.include_router(build_router(detector, limits))
    return app


def test_router_alone_answers_health_model_page_and_predict(detector):
    limits = Limits(max_files=3)
    with TestClient(_bare_app(detector, limits, handlers=False)) as c:
        assert c.get("/health").json() == {"status": "ok"}
        model = c.get("/model").json()
        assert model["default_score"] == "mean" and model["calibration"] is None
        assert model["limits"]["max_files"] == 3 and model["image_size"] == 32
        assert 'id="drop"' in c.get("/").text
        dark, bright = _png(20), _png(230)
        r = c.post("/predict", files=[("file", ("dark.png", dark)), ("file", ("bright.png", bright))])
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["score_name"] == "mean" and [e["filename"] for e in body["results"]] == ["dark.png", "bright.png"]
        first, second = body["results"]
        assert first["score"] < second["score"]  # the stand-in's brightness, through the route unchanged
        assert first["score"] == pytest.approx(detector.predict(dark).score)
        assert first["decision"] is None and first["threshold_normalized"] is None  # no calibration: no decision
        assert (first["width"], first["height"]) == (40, 24)
        header, data = first["overlay"].split(",", 1)
        assert header == "data:image/png;base64"
        assert Image.open(io.BytesIO(base64.b64decode(data))).size == (40, 24)
        assert "overlay" not in c.post("/predict?overlay=false", files={"file": ("a.png", dark)}).json()["results"][0]


def test_a_route_refuses_with_serve_error_and_the_handlers_make_it_json(detector):
    with TestClient(_bare_app(detector, Limits(), handlers=False)) as c, pytest.raises(ServeError) as e:
        c.post("/predict", json={"file": "a.png"})
    assert e.value.status == 415 and "multipart/form-data" in e.value.message
    with TestClient(_bare_app(detector, Limits())) as c:
        r = c.post("/predict", json={"file": "a.png"})
        assert r.status_code == 415 and r.json() == {"error": e.value.message}
        r = c.get("/nowhere")
        assert r.status_code == 404 and set(r.json()) == {"error"} and "/predict" in r.json()["error"]


def test_scoring_keeps_good_files_and_raises_only_when_none_can_be_scored(detector):
    scoring = Scoring(detector, Limits())
    try:
        damaged = ServeError(415, "x.png is not an image this server reads")
        grey = _png(100)
        out = scoring.score([("a.png", grey), ("x.png", damaged)], overlays=False)
        assert out[0]["filename"] == "a.png" and out[0]["score"] == pytest.approx(detector.predict(grey).score)
        assert out[1] == {"filename": "x.png", "error": damaged.message, "status": 415}
        truncated = _png(100)[:40]
        with pytest.raises(ServeError) as e:
            scoring.score([("t.png", truncated)], overlays=False)
        assert e.value.status == 422 and "t.png is truncated" in e.value.message
    finally:
        scoring.pool.shutdown()


def test_scoring_turns_away_a_request_beyond_workers_and_queue_at_once(detector):
    scoring = Scoring(detector, Limits(workers=1, queue=0))
    try:
        assert scoring.admitted.acquire(blocking=False)  # the one slot taken by a request in progress
        with pytest.raises(ServeError) as e:
            asyncio.run(scoring([("a.png", _png(50))], overlays=False))
        assert e.value.status == 503 and "busy (1 requests in progress)" in e.value.message
        scoring.admitted.release()
        assert len(asyncio.run(scoring([("a.png", _png(50))], overlays=False))) == 1
        assert scoring.admitted.acquire(blocking=False)  # the slot came back when the work ended
    finally:
        scoring.pool.shutdown()


@pytest.mark.parametrize("data, max_pixels, status, words", [
    (b"", 10_000, 400, "empty"),
    (b"hello, not an image", 10_000, 415, "not an image"),
    (None, 100, 413, "40 x 24 pixels"),
])
def test_check_header_refuses_from_the_header_alone(data, max_pixels, status, words):
    with pytest.raises(ServeError) as e:
        check_header(_png(0) if data is None else data, "f.png", max_pixels)
    assert e.value.status == status and words in e.value.message and e.value.message.startswith("f.png")
    check_header(_png(0), "f.png", 40 * 24)  # exactly at the limit passes


def test_host_guard_alone_refuses_a_foreign_host_before_the_route(detector):
    app = HostGuard(_bare_app(detector, Limits()), allowed=("localhost",))
    with TestClient(app, base_url="http://localhost") as c:
        assert c.get("/health").json() == {"status": "ok"}
        r = c.get("/health", headers={"host": "evil.example"})
        assert r.status_code == 400 and "--allowed-host evil.example" in r.json()["error"]
