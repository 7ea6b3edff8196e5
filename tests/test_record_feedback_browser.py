"""A click on the page's feedback button with ``scgan serve --db``, in a real headless Chromium: the mark's row in the
store is linked to the decision the page showed (the id /predict returned), not to a later decision on the same image.

Skips, saying why, where no Chromium binary is installed (CI installs Debian's ``chromium`` first).
"""
from __future__ import annotations

import json

import pytest

pytest.importorskip("sqlalchemy")

from browser import needs_chromium  # noqa: E402
from test_feedback_browser import CHROMIUM, STATUS, TOKEN, _scored_page  # noqa: E402

pytestmark = needs_chromium("the feedback buttons")


def test_a_click_links_the_mark_to_the_decision_the_page_shows(trained, demo_root, demo_category, tmp_path):
    import sqlalchemy as sa

    from browser import Browser
    from helpers import http_request, live_server
    from scgan.inference.detector import Detector
    from scgan.record.queries import latest
    from scgan.record.recorder import Recorder
    from scgan.record.schema import feedback
    from scgan.serve import create_app
    from scgan.serve.feedback import feedback_folder
    from scgan.serve.recent import DecisionLog

    folder = tmp_path / "feedback"
    image = sorted((demo_root / demo_category / "test" / "good").glob("*.png"))[0]
    detector = Detector.load(trained[0].model_path)
    log = DecisionLog(Recorder.open(str(tmp_path / "results.db"), detector, "serve"), tmp_path / "overlays")
    app = create_app(detector, feedback=feedback_folder(folder, TOKEN), recent=log)
    with live_server(app) as port:
        browser = Browser(CHROMIUM)
        try:
            _scored_page(browser, f"http://127.0.0.1:{port}/", image, feedback=True)
            shown = latest(log.recorder.store, limit=1)[0]["id"]  # the decision the page shows
            status, _, body = http_request(port, "POST", "/predict?overlay=false",
                                           files=[(image.name, image.read_bytes())])
            assert status == 200 and body["results"][0]["decision_id"] > shown  # a later decision on the same image
            browser.evaluate(f"document.getElementById('feedback-token').value = '{TOKEN}'")
            browser.evaluate("document.querySelector('#results .card .feedback button').click()")
            browser.wait_for(f"{STATUS} === 'stored as false alarm'")
        finally:
            browser.close()
    line = json.loads((folder / "feedback.jsonl").read_text().splitlines()[-1])
    assert line["decision_id"] == shown
    with log.recorder.store.engine.connect() as conn:
        rows = conn.execute(sa.select(feedback.c.label, feedback.c.decision_id)).all()
    assert [tuple(r) for r in rows] == [("false_alarm", shown)]
    log.recorder.close()
