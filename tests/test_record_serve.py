"""``scgan serve --db``: /predict's decisions recorded in the store, the recent ones shown at /recent with their
overlays, under the service's host rules."""
from __future__ import annotations

import io

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from scgan.record.queries import latest  # noqa: E402
from scgan.record.recorder import Recorder  # noqa: E402
from scgan.serve.app import create_app  # noqa: E402
from scgan.serve.recent import DecisionLog  # noqa: E402

pytestmark = pytest.mark.integration


def png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


def test_served_decisions_are_recorded_and_shown_recent_first(tmp_path, detector):
    log = DecisionLog(Recorder.open(str(tmp_path / "results.db"), detector, "serve"), tmp_path / "overlays", 10)
    uploads = [png(v) for v in (0, 128, 255)]
    with TestClient(create_app(detector, recent=log), base_url="http://localhost") as c:
        for i, data in enumerate(uploads):
            r = c.post("/predict", files={"file": (f"part{i}.png", data)})
            assert r.status_code == 200, r.text
        rows = latest(log.recorder.store, limit=10)
        assert [r["path"] for r in rows] == ["part2.png", "part1.png", "part0.png"]
        assert {r["source"] for r in rows} == {"serve"}
        recent = c.get("/recent.json?n=2").json()["decisions"]
        assert [d["path"] for d in recent] == ["part2.png", "part1.png"]
        assert all("overlay" not in d for d in recent)  # a server path is never shown
        page = c.get("/recent")
        assert page.status_code == 200 and "part0.png" in page.text
        shown = c.get("/recent.json").json()["decisions"]
        assert {d["decision"] for d in shown} >= {"anomalous"}  # a flat grey square is no normal part
        for d in shown:
            if d["decision"] == "anomalous":
                pic = c.get("/" + d["overlay_url"])
                assert pic.status_code == 200 and pic.content.startswith(b"\x89PNG")
            else:
                assert d["overlay_url"] is None
        assert c.get("/recent/overlay/999").status_code == 404
        assert c.get("/recent.json?n=0").status_code == 422
        assert c.get("/recent", headers={"host": "evil.example"}).status_code in (400, 403, 421)
    log.recorder.close()


def test_a_name_with_markup_is_shown_as_text(tmp_path, detector):
    log = DecisionLog(Recorder.open(str(tmp_path / "results.db"), detector, "serve"), tmp_path / "overlays")
    with TestClient(create_app(detector, recent=log), base_url="http://localhost") as c:
        assert c.post("/predict", files={"file": ("<script>x</script>.png", png(9))}).status_code == 200
        page = c.get("/recent").text
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page
    log.recorder.close()
