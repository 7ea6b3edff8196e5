"""Overlays that state their decision; `scgan serve` scores the good files of a batch with a bad one, logs one line
per request, and its page's threshold goes as far as the scores do."""
from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

pytestmark = pytest.mark.integration


def test_predict_overlays_state_their_score_threshold_and_decision(trained, demo_root, demo_category, tmp_path):
    from scgan.inference.detector import Detector
    from scgan.inference.predict import run_predict

    det = Detector.load(trained[0].model_path)
    image = tmp_path / "wide.png"  # wide enough for a legible caption (the demo's 32 px images would cut it)
    Image.open(sorted((demo_root / demo_category / "test").rglob("*.png"))[-1]).resize((240, 160)).save(image)
    res = run_predict([image], tmp_path / "a", detector=det, progress=False)
    p = res.predictions[0]
    with Image.open(p.overlay) as im:
        text, (w, h) = dict(im.text), im.size
        pixels = np.asarray(im.convert("RGB"))
    r = det.predict(image)
    assert text["scgan.decision"] == r.decision and float(text["scgan.score"]) == pytest.approx(r.score, rel=1e-5)
    assert float(text["scgan.threshold"]) == pytest.approx(det.threshold, rel=1e-5)
    assert text["scgan.score_name"] == det.default_score and text["Source"] == image.name
    assert "threshold" in text["scgan.heat"]
    ih, iw = r.image.shape[:2]
    assert w == iw and h > ih  # a caption band below the picture
    band = pixels[ih:]
    colour = (214, 39, 40) if r.anomalous else (31, 119, 180)
    assert (band == colour).all(axis=-1).mean() > 0.5 and (band.min(axis=-1) > 200).any()  # white text on it
    res = run_predict([image], tmp_path / "b", detector=det, progress=False, captions=False)
    with Image.open(res.predictions[0].overlay) as im:
        assert im.size == (iw, ih) and im.text["scgan.decision"] == r.decision


def test_one_bad_file_in_a_batch_is_reported_and_the_others_are_scored(trained, demo_root, demo_category):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from scgan.inference.detector import Detector
    from scgan.serve import create_app

    good = sorted((demo_root / demo_category / "test").rglob("*.png"))[0].read_bytes()
    files = [("file", ("a.png", good, "image/png")), ("file", ("bad.png", b"not an image", "image/png")),
             ("file", ("cut.png", good[: len(good) // 2], "image/png")), ("file", ("empty.png", b"", "image/png")),
             ("file", ("b.png", good, "image/png"))]
    with TestClient(create_app(Detector.load(trained[0].model_path)), base_url="http://localhost") as c:
        r = c.post("/predict?overlay=false", files=files)
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["filename"] for x in results] == ["a.png", "bad.png", "cut.png", "empty.png", "b.png"]
        assert results[0]["scores"] == results[4]["scores"] and results[0]["decision"] in ("normal", "anomalous")
        assert [(x["status"], "error" in x, "scores" in x) for x in results[1:4]] == [(415, True, False),
                                                                                      (422, True, False),
                                                                                      (400, True, False)]
        assert "not an image" in results[1]["error"] and "truncated" in results[2]["error"]
        # a request whose every file is bad is still refused as a whole, with the first file's reason
        r = c.post("/predict", files=files[1:4])
        assert r.status_code == 415 and set(r.json()) == {"error"}


def test_every_request_logs_one_access_line_without_image_data(trained, demo_root, demo_category, caplog):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from scgan.inference.detector import Detector
    from scgan.serve import create_app

    good = sorted((demo_root / demo_category / "test").rglob("*.png"))[0].read_bytes()
    with TestClient(create_app(Detector.load(trained[0].model_path)), base_url="http://localhost") as c, \
            caplog.at_level(logging.INFO, logger="scgan.access"):
        c.get("/health")
        c.post("/predict?overlay=false", files={"file": ("secret_name.png", good, "image/png")})
        c.get("/nowhere")
    lines = [r.getMessage() for r in caplog.records if r.name == "scgan.access"]
    assert len(lines) == 3
    assert re.fullmatch(r'\S+ "GET /health" 200 \d+ B \d+\.\d{3} s', lines[0]), lines[0]
    assert '"POST /predict" 200' in lines[1] and '"GET /nowhere" 404' in lines[2]
    assert all("secret_name" not in line and "overlay" not in line and len(line) < 200 for line in lines)


@pytest.mark.unit
def test_the_page_slider_grows_with_the_scores_and_takes_a_typed_value():
    """Without a browser: the page has a typed threshold and widens its slider to the largest score seen
    (tests/test_serve_browser.py drives the same page in Chromium)."""
    page = (REPO / "src" / "scgan" / "serve" / "page.html").read_text()
    assert 'id="threshold-typed" type="number"' in page
    assert "widenSlider(r.normalized)" in page and "Math.ceil(x * 1.1 * 100) / 100" in page
    assert 'typed.addEventListener("input"' in page
