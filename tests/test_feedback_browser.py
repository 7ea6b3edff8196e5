"""The page's feedback buttons in a real headless Chromium: a mark without the token is refused and shown so; with it,
the image and its line land in the feedback folder; without --feedback the page shows no buttons.

Skips, saying why, where no Chromium binary is installed (CI installs Debian's ``chromium`` first).
"""
from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("websocket", reason="the browser test needs websocket-client (pip install 'scgan[test]')")

from browser import Browser, find_chromium, needs_chromium  # noqa: E402

CHROMIUM = find_chromium()
pytestmark = needs_chromium("the feedback buttons")

TOKEN = "a-feedback-token-for-the-browser"
CARD_BUTTONS = "Array.from(document.querySelectorAll('#results .card .feedback button')).map(b => b.textContent)"
STATUS = "document.querySelector('#results .card .feedback-status').textContent"


def _scored_page(browser: Browser, url: str, image, feedback: bool = False) -> None:
    browser.goto(url)
    browser.wait_for("document.getElementById('model').textContent.includes('px')")
    if feedback:  # the page learns that feedback is on before it scores
        browser.wait_for("document.getElementById('feedback-token') !== null")
    browser.set_files("#file", [str(image)])
    browser.wait_for("document.querySelectorAll('#results .card[data-normalized]').length === 1")


def test_the_buttons_need_the_token_and_store_the_mark(trained, demo_root, demo_category, tmp_path):
    from helpers import live_server
    from scgan.inference.detector import Detector
    from scgan.serve import create_app
    from scgan.serve.feedback import feedback_folder

    folder = tmp_path / "feedback"
    image = sorted((demo_root / demo_category / "test" / "good").glob("*.png"))[0]
    app = create_app(Detector.load(trained[0].model_path), feedback=feedback_folder(folder, TOKEN))
    with live_server(app) as port:
        browser = Browser(CHROMIUM)
        try:
            _scored_page(browser, f"http://127.0.0.1:{port}/", image, feedback=True)
            assert browser.evaluate(CARD_BUTTONS) == ["false alarm", "missed defect"]
            browser.evaluate("document.querySelector('#results .card .feedback button').click()")  # no token typed
            browser.wait_for(f"{STATUS}.length > 0")
            assert "token" in browser.evaluate(STATUS) and not (folder / "feedback.jsonl").exists()
            browser.evaluate(f"document.getElementById('feedback-token').value = '{TOKEN}'")
            browser.evaluate("document.querySelector('#results .card .feedback button').click()")
            browser.wait_for(f"{STATUS} === 'stored as false alarm'")
        finally:
            browser.close()
    line = json.loads((folder / "feedback.jsonl").read_text().splitlines()[-1])
    assert line["label"] == "false_alarm" and line["file"] == image.name
    assert (folder / line["image"]).read_bytes() == image.read_bytes()


def test_without_feedback_the_page_shows_no_buttons(trained, demo_root, demo_category):
    from helpers import live_server
    from scgan.inference.detector import Detector
    from scgan.serve import create_app

    image = sorted((demo_root / demo_category / "test" / "good").glob("*.png"))[0]
    with live_server(create_app(Detector.load(trained[0].model_path))) as port:
        browser = Browser(CHROMIUM)
        try:
            _scored_page(browser, f"http://127.0.0.1:{port}/", image)
            assert browser.evaluate(CARD_BUTTONS) == []
            assert browser.evaluate("document.getElementById('feedback-token') === null")
        finally:
            browser.close()
