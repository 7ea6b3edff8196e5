"""Feedback in the results store: each mark from the page linked to the decision it concerns (the id /predict
returned, checked against the image and the model, else the latest decision on the image), counted per day and model
version by ``scgan results counts``, kept when its decision is pruned; a store at the revision before upgrades."""
from __future__ import annotations

import datetime as dt
import io
import json

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

import sqlalchemy as sa  # noqa: E402

from scgan.cli import main  # noqa: E402
from scgan.record.queries import counts  # noqa: E402
from scgan.record.schema import feedback  # noqa: E402
from scgan.record.store import Decision, ModelVersion, Store, migrate  # noqa: E402
from scgan.record.url import resolve_url  # noqa: E402

V1 = ModelVersion("a1" * 32, preset="default", kind="patchcore", score_name="patch_max", threshold=2.0)
V2 = ModelVersion("b2" * 32, preset="cpu", kind="patchcore", score_name="patch_max", threshold=2.0)
T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.timezone.utc)
TOKEN = "a-feedback-token-for-tests"


def decision(sha: str, *, time: dt.datetime = T0, anomalous: bool = True) -> Decision:
    return Decision(path=f"/line/{sha[:4]}.png", content_sha256=sha, size=100, score_name="patch_max", score=3.0,
                    threshold=2.0, score_normalized=1.5, threshold_normalized=1.0,
                    decision="anomalous" if anomalous else "normal", scores={"patch_max": 3.0}, source="serve",
                    time=time)



def marks(store: Store) -> list[tuple]:
    with store.engine.connect() as conn:
        q = sa.select(feedback.c.label, feedback.c.decision_id, feedback.c.content_sha256).order_by(feedback.c.id)
        return [tuple(r) for r in conn.execute(q)]


def test_a_mark_links_to_the_latest_decision_on_its_image_or_to_the_id_given_when_it_matches(db_url):
    a, b = "a" * 64, "b" * 64
    with Store.open(db_url) as store:
        first = store.add_one(decision(a), V1)
        later = store.add_one(decision(a, time=T0 + dt.timedelta(hours=1)), V1)
        other_model = store.add_one(decision(a, time=T0 + dt.timedelta(hours=2)), V2)
        on_b = store.add_one(decision(b), V1)
        assert len({first, later, other_model, on_b}) == 4 and None not in {first, later, other_model, on_b}
        assert store.decision_for(a, V1.sha256) == later  # the latest by this model, not the other model's
        assert store.decision_for(a, V1.sha256, first) == first
        for wrong in (on_b, other_model, 10**6):  # another image, another model, no such decision
            with pytest.raises(ValueError, match=f"decision {wrong} is not a decision on this image"):
                store.decision_for(a, V1.sha256, wrong)
        assert store.decision_for("c" * 64, V1.sha256) is None
        store.add_feedback("false_alarm", a, V1.sha256, later, T0 + dt.timedelta(days=1))
        store.add_feedback("missed_defect", "c" * 64, V1.sha256, None)
        assert marks(store) == [("false_alarm", later, a), ("missed_defect", None, "c" * 64)]


def test_counts_show_the_marks_of_each_day_and_model_and_a_pruned_decision_keeps_its_mark(db_url, capsys):
    with Store.open(db_url) as store:
        ids = [store.add_one(decision(f"{i:064x}", time=T0 + dt.timedelta(days=i % 2)), V1 if i < 3 else V2)
               for i in range(4)]
        for i, label in ((0, "false_alarm"), (1, "false_alarm"), (2, "false_alarm"), (3, "missed_defect")):
            store.add_feedback(label, f"{i:064x}", (V1 if i < 3 else V2).sha256, ids[i])
        by_day = counts(store, "day")
        assert [(c.group, c.total, c.marks) for c in by_day] == [
            ("2026-03-01", 2, {"false_alarm": 2, "missed_defect": 0}),
            ("2026-03-02", 2, {"false_alarm": 1, "missed_defect": 1})]
        by_model = counts(store, "model")
        assert [(c.group.split()[0], c.marks) for c in by_model] == [
            (V1.sha256, {"false_alarm": 3, "missed_defect": 0}), (V2.sha256, {"false_alarm": 0, "missed_defect": 1})]
    assert main(["results", "counts", "--db", db_url, "--by", "day"]) == 0
    out = capsys.readouterr().out
    assert "marked false_alarm" in out and "| 2026-03-02 | 2 | 2 | 100.0 | 1 | 1 |" in out
    with Store.open(db_url) as store:
        assert store.prune(1, now=T0 + dt.timedelta(days=1, hours=12)) == (2, 0)  # the first day's decisions
        assert sorted(m[1] is None for m in marks(store)) == [False, False, True, True]  # marks kept, unlinked
        assert len(marks(store)) == 4


def test_a_store_at_the_revision_before_feedback_upgrades_and_keeps_its_rows(db_url):
    url = resolve_url(db_url)
    old = Store(url, migrate_schema=False)
    migrate(old.engine, target="0003")
    with old.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO models (sha256, first_seen) VALUES (:s, :t)"), {"s": V1.sha256, "t": T0})
        conn.execute(sa.text(
            "INSERT INTO decisions (time, source, path, content_sha256, size, score_name, decision, scores, model_id) "
            "VALUES (:t, 'serve', '/old.png', :h, 1, 'patch_max', 'anomalous', '{}', 1)"), {"t": T0, "h": "d" * 64})
        assert "feedback" not in sa.inspect(conn).get_table_names()
    old.close()
    with Store(url) as store:
        with store.engine.connect() as conn:
            assert "feedback" in sa.inspect(conn).get_table_names()
            q = ("SELECT name FROM sqlite_master WHERE type = 'index'" if conn.dialect.name == "sqlite"
                 else "SELECT indexname FROM pg_indexes")
            assert "ix_decisions_content" in set(conn.execute(sa.text(q)).scalars())
        old_id = store.decision_for("d" * 64, V1.sha256)
        assert old_id is not None
        store.add_feedback("false_alarm", "d" * 64, V1.sha256, old_id)
        assert marks(store) == [("false_alarm", old_id, "d" * 64)]


def png(value: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.integration
def test_a_click_on_the_served_page_writes_the_linked_row(tmp_path, detector, monkeypatch):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from scgan.data.feedback import LOG_NAME
    from scgan.record.recorder import Recorder
    from scgan.serve.app import create_app
    from scgan.serve.feedback import feedback_folder
    from scgan.serve.recent import DecisionLog

    log = DecisionLog(Recorder.open(str(tmp_path / "results.db"), detector, "serve"), tmp_path / "overlays")
    folder = tmp_path / "feedback"
    app = create_app(detector, feedback=feedback_folder(folder, TOKEN), recent=log)
    images = [png(v) for v in (0, 255, 128)]
    header = {"X-Feedback-Token": TOKEN}
    with TestClient(app, base_url="http://localhost") as c:
        ids = []
        for i, data in enumerate(images[:2]):
            r = c.post("/predict?overlay=false", files={"file": (f"part{i}.png", data)})
            assert r.status_code == 200, r.text
            ids.append(r.json()["results"][0]["decision_id"])
        # the id /predict returned: that row
        r = c.post(f"/feedback?label=false_alarm&decision_id={ids[0]}", files={"file": ("part0.png", images[0])},
                   headers=header)
        assert r.status_code == 200 and r.json()["decision_id"] == ids[0] and r.json()["recorded"], r.text
        # another image's id is refused, and nothing is stored anywhere
        r = c.post(f"/feedback?label=false_alarm&decision_id={ids[1]}", files={"file": ("part0.png", images[0])},
                   headers=header)
        assert r.status_code == 422 and "nothing was stored" in r.json()["error"]
        # no id: the latest decision on this image by this model
        r = c.post("/feedback?label=missed_defect", files={"file": ("part1.png", images[1])}, headers=header)
        assert r.status_code == 200 and r.json()["decision_id"] == ids[1]
        # an image never scored with --db: the mark is kept, unlinked
        r = c.post("/feedback?label=missed_defect", files={"file": ("new.png", images[2])}, headers=header)
        assert r.status_code == 200 and r.json()["decision_id"] is None and r.json()["recorded"]
        # the store away: the mark is kept in the folder, unlinked, and the answer says it is not in the store
        store = log.recorder.store

        def away(*_a, **_k):
            raise sa.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))

        with monkeypatch.context() as m:
            m.setattr(store, "decision_for", away)
            m.setattr(store, "add_feedback", away)
            r = c.post(f"/feedback?label=false_alarm&decision_id={ids[1]}", files={"file": ("part1.png", images[1])},
                       headers=header)
        assert r.status_code == 200 and r.json()["decision_id"] is None and r.json()["recorded"] is False, r.text
    lines = [json.loads(x) for x in (folder / LOG_NAME).read_text().splitlines()]
    assert [x.get("decision_id") for x in lines] == [ids[0], ids[1], None, None]
    assert [(label, did) for label, did, _ in marks(store)] == [("false_alarm", ids[0]), ("missed_defect", ids[1]),
                                                                ("missed_defect", None)]
    assert [sha for *_, sha in marks(store)] == [x["sha256"] for x in lines[:3]]  # the last one in the folder only
    log.recorder.close()


@pytest.mark.integration
def test_the_serve_command_takes_db_and_feedback_together(monkeypatch, trained, tmp_path):
    import scgan.serve

    seen = {}
    monkeypatch.setattr(scgan.serve, "serve", lambda det, **kw: seen.update(det=det, **kw))
    monkeypatch.setenv("SCGAN_FEEDBACK_TOKEN", TOKEN)
    assert main(["serve", "--checkpoint", str(trained[0].model_path), "--db", str(tmp_path / "results.db"),
                 "--overlay-dir", str(tmp_path / "overlays"), "--feedback", str(tmp_path / "marks")]) == 0
    assert seen["feedback"].folder == (tmp_path / "marks").resolve()
    assert seen["recent"].recorder.store.name.endswith("results.db")
    seen["recent"].recorder.close()
