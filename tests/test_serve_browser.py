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

from browser import Browser, find_chromium  # noqa: E402

CHROMIUM = find_chromium()
pytestmark = [pytest.mark.system, pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on PATH (apt-get install chromium); "
                                                         "the browser test of the serve page is skipped")]


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
        assert browser.evaluate("Array.from(document.querySelectorAll('.decision')).map(d => d.textContent)") == decisions
        shot = os.environ.get("SCGAN_SERVE_SCREENSHOT")
        browser.screenshot(Path(shot) if shot else tmp_path / "serve.png")
    finally:
        browser.close()
