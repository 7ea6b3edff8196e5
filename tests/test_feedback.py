"""Feedback from the page: off by default; on, a mark needs the token, stores the image once (by hash) and one JSON
line with the server's own score, never overwrites, and refuses hostile file names with nothing written."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from helpers import http_request, live_server, png_bytes  # noqa: E402
from scgan.data.feedback import LOG_NAME, read_feedback, record_feedback  # noqa: E402

TOKEN = "a-feedback-token-for-tests"


@pytest.mark.unit
@pytest.mark.parametrize("name", ["../x.png", "a/b.png", "x\x00.png", "..png", "a\\b.png", "", "x.txt"])
def test_a_hostile_file_name_is_refused_with_nothing_written(tmp_path, name):
    with pytest.raises(ValueError, match="plain name|must end in"):
        record_feedback(tmp_path / "fb", name, png_bytes(), {"label": "false_alarm"})
    assert not (tmp_path / "fb").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.unit
def test_marks_are_appended_and_an_image_is_stored_once(tmp_path):
    data = png_bytes(seed=1)
    a = record_feedback(tmp_path, "a.png", data, {"label": "false_alarm", "score": 1.0})
    b = record_feedback(tmp_path, "b.png", data, {"label": "missed_defect", "score": 2.0})
    assert a["image"] == b["image"] and len(list((tmp_path / "images").iterdir())) == 1
    lines = (tmp_path / LOG_NAME).read_text().splitlines()
    assert [json.loads(x)["label"] for x in lines] == ["false_alarm", "missed_defect"]
    assert [f.record["file"] for f in read_feedback(tmp_path, "missed_defect")] == ["b.png"]
    with pytest.raises(ValueError, match="unknown feedback label"):
        record_feedback(tmp_path, "c.png", data, {"label": "maybe"})
    assert len((tmp_path / LOG_NAME).read_text().splitlines()) == 2


@pytest.mark.unit
def test_a_mark_after_one_cut_by_a_crash_is_kept_whole(tmp_path):
    record_feedback(tmp_path, "a.png", png_bytes(seed=1), {"label": "false_alarm"})
    with open(tmp_path / LOG_NAME, "a") as f:
        f.write('{"label": "false_al')  # the server stopped mid-write
    record_feedback(tmp_path, "b.png", png_bytes(seed=2), {"label": "missed_defect"})
    last = (tmp_path / LOG_NAME).read_text().splitlines()[-1]
    assert json.loads(last)["file"] == "b.png"


@pytest.mark.unit
def test_an_image_a_crash_cut_short_is_stored_whole_by_the_next_mark_of_it(tmp_path):
    data = png_bytes(seed=3)
    line = record_feedback(tmp_path, "a.png", data, {"label": "false_alarm"})
    stored = tmp_path / line["image"]
    stored.write_bytes(data[:10])  # the server stopped mid-write
    record_feedback(tmp_path, "a.png", data, {"label": "false_alarm"})
    assert stored.read_bytes() == data and [p.name for p in (tmp_path / "images").iterdir()] == [stored.name]


@pytest.mark.unit
def test_the_token_comes_from_a_file_the_environment_or_is_generated(tmp_path, monkeypatch):
    from scgan.serve.feedback import TOKEN_ENV, feedback_folder, feedback_token

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    token, generated = feedback_token()
    assert generated and len(token) >= 16 and feedback_token()[0] != token
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert feedback_token() == (TOKEN, False)
    (tmp_path / "t").write_text("short\n")
    with pytest.raises(ValueError, match="16 characters"):
        feedback_token(tmp_path / "t")
    assert TOKEN not in repr(feedback_folder(tmp_path / "fb", TOKEN))


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    """The tiny model served with feedback into a fresh folder: (port, folder, detector)."""
    from scgan.inference.detector import Detector
    from scgan.serve import create_app
    from scgan.serve.feedback import feedback_folder

    folder = tmp_path_factory.mktemp("feedback")
    detector = Detector.load(trained[0].model_path)
    with live_server(create_app(detector, feedback=feedback_folder(folder, TOKEN))) as port:
        yield port, folder, detector


@pytest.mark.system
def test_a_mark_needs_the_token_and_stores_the_servers_own_score(served, caplog):
    port, folder, detector = served
    image = png_bytes((32, 32), seed=5)
    files = [("part.png", image)]
    status, _, body = http_request(port, "POST", "/feedback?label=false_alarm", files=files)
    assert status == 401 and "X-Feedback-Token" in body["error"]
    status, _, body = http_request(port, "POST", "/feedback?label=false_alarm", files=files,
                                   headers={"X-Feedback-Token": TOKEN + "x"})
    assert status == 403
    for hostile in ("../evil.png", "a/b.png", "x\x00.png"):
        status, _, body = http_request(port, "POST", "/feedback?label=false_alarm", files=[(hostile, image)],
                                       headers={"X-Feedback-Token": TOKEN})
        assert status == 400 and "nothing was stored" in body["error"], body
    assert not (folder / LOG_NAME).exists() and not (folder / "images").exists()
    assert not (folder.parent / "evil.png").exists()
    status, _, body = http_request(port, "POST", "/feedback?label=false_alarm", files=files,
                                   headers={"X-Feedback-Token": TOKEN})
    assert status == 200, body
    line = json.loads((folder / LOG_NAME).read_text().splitlines()[-1])
    expected = detector.predict(image)
    assert line["score"] == pytest.approx(expected.score, rel=1e-5) and line["threshold"] == expected.threshold
    assert line["label"] == "false_alarm" and line["file"] == "part.png" and (folder / line["image"]).is_file()
    assert TOKEN not in (folder / LOG_NAME).read_text() and TOKEN not in caplog.text
    status, _, body = http_request(port, "GET", "/feedback")
    assert status == 200 and body["enabled"] is True and TOKEN not in json.dumps(body)


@pytest.mark.system
def test_feedback_is_off_by_default(trained):
    from scgan.inference.detector import Detector
    from scgan.serve import create_app

    with live_server(create_app(Detector.load(trained[0].model_path))) as port:
        status, _, _ = http_request(port, "POST", "/feedback?label=false_alarm", files=[("a.png", png_bytes())],
                                    headers={"X-Feedback-Token": TOKEN})
        assert status == 404
        assert http_request(port, "GET", "/feedback")[0] == 404
