"""The serve page in a real headless Chromium: drop an image, see the overlay and the decision, move the slider.

Skips, saying why, where no Chromium binary is installed (CI installs Debian's ``chromium`` first).
Set SCGAN_SERVE_SCREENSHOT=docs/serve.png to write the screenshot used in the docs.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("websocket", reason="the browser test needs websocket-client (pip install 'scgan[test]')")

from browser import Browser, find_chromium, needs_chromium  # noqa: E402

CHROMIUM = find_chromium()
pytestmark = needs_chromium("the serve page")


@pytest.fixture(scope="module")
def server(trained):
    """``scgan serve``'s own server on a free localhost port, in a thread."""
    from helpers import live_server
    from scgan.inference.detector import Detector
    from scgan.serve import create_app

    with live_server(create_app(Detector.load(trained[0].model_path))) as port:
        yield f"http://127.0.0.1:{port}/"


def test_the_page_scores_a_dropped_image_and_the_slider_re_decides(server, demo_root, demo_category, tmp_path):
    normal = sorted((demo_root / demo_category / "test" / "good").glob("*.png"))[0]
    defect = next(p for p in sorted((demo_root / demo_category / "test").rglob("*.png")) if p.parent.name != "good")
    browser = Browser(CHROMIUM)
    try:
        browser.goto(server)
        browser.wait_for("document.getElementById('model').textContent.includes('px')")
        browser.set_files("#file", [str(normal), str(defect)])
        browser.wait_for("document.querySelectorAll('#results .card[data-normalized]').length === 2")
        browser.wait_for("Array.from(document.querySelectorAll('img.overlay, img.original'))"
                         ".every(i => i.complete && i.naturalWidth > 0) && document.images.length === 4")
        decisions = browser.evaluate("Array.from(document.querySelectorAll('.decision')).map(d => d.textContent)")
        assert sorted(set(decisions)) <= ["anomalous", "normal"] and len(decisions) == 2
        overlay_size = browser.evaluate("[document.querySelector('img.overlay').naturalWidth,"
                                        " document.querySelector('img.overlay').naturalHeight]")
        assert overlay_size[0] > 0 and overlay_size[1] > 0
        # The slider re-decides in the page: at 0 every image is anomalous, at its maximum none is.
        for value, expected in (("0", "anomalous"), ("document.getElementById('threshold').max", "normal")):
            browser.evaluate(f"(() => {{ const s = document.getElementById('threshold'); s.value = {value};"
                             " s.dispatchEvent(new Event('input')); })()")
            assert set(browser.evaluate("Array.from(document.querySelectorAll('.decision'))"
                                        ".map(d => d.textContent)")) == {expected}
        browser.evaluate("document.getElementById('reset').click()")  # back to the model's threshold
        shown = browser.evaluate("Array.from(document.querySelectorAll('.decision')).map(d => d.textContent)")
        assert shown == decisions
        shot = os.environ.get("SCGAN_SERVE_SCREENSHOT")
        browser.screenshot(Path(shot) if shot else tmp_path / "serve.png")
    finally:
        browser.close()


def test_the_slider_reaches_the_largest_score_and_a_typed_threshold_decides(server, demo_root, demo_category):
    """The slider's end follows the largest score seen (it once stopped at 3); any threshold can be typed; the
    legend says what the heat-map colours mean for this model."""
    files = sorted(p for p in (demo_root / demo_category / "test").rglob("*.png") if p.parent.name != "good")[:2]
    browser = Browser(CHROMIUM)
    try:
        browser.goto(server)
        browser.wait_for("document.getElementById('model').textContent.includes('px')")
        assert "threshold" in browser.evaluate("document.getElementById('legend').textContent")
        browser.evaluate("(() => { const s = document.getElementById('threshold'); s.max = 0.01; })()")  # force growth
        browser.set_files("#file", [str(p) for p in files])
        browser.wait_for("document.querySelectorAll('#results .card[data-normalized]').length === 2")
        largest = browser.evaluate("Math.max(...Array.from(document.querySelectorAll('.card[data-normalized]'))"
                                   ".map(c => Number(c.dataset.normalized)))")
        assert browser.evaluate("Number(document.getElementById('threshold').max)") >= largest
        for typed, expected in ((f"{largest * 10 + 5:.2f}", {"normal"}), ("-1", {"anomalous"})):
            browser.evaluate(f"(() => {{ const t = document.getElementById('threshold-typed'); t.value = '{typed}';"
                             " t.dispatchEvent(new Event('input')); })()")
            assert set(browser.evaluate("Array.from(document.querySelectorAll('.decision'))"
                                        ".map(d => d.textContent)")) == expected, typed
        assert browser.evaluate("Number(document.getElementById('threshold').max)") >= largest * 10 + 5
        caption = browser.evaluate("document.querySelector('.card img.overlay').alt")
        assert "blue" in caption and "green" in caption and "red anomalous" not in caption
    finally:
        browser.close()
