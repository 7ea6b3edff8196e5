"""The results store: decisions in SQLite and in a real PostgreSQL, migrations both ways, queries, pruning, passwords
never shown, a full disk, and ``scgan results`` on the command line."""
from __future__ import annotations

import datetime as dt
import io
import sys

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

import sqlalchemy as sa  # noqa: E402

from scgan.cli import main  # noqa: E402
from scgan.record.queries import Filter, counts, export_csv, latest  # noqa: E402
from scgan.record.spool import Spool  # noqa: E402
from scgan.record.store import Decision, ModelVersion, NewerStoreError, Store, known_revisions, migrate  # noqa: E402
from scgan.record.url import resolve_url, shown  # noqa: E402

V1 = ModelVersion("a1" * 32, preset="default", kind="patchcore", score_name="patch_max", threshold=2.0)
V2 = ModelVersion("b2" * 32, preset="cpu", kind="scgan", score_name="as", threshold=0.5)
T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.timezone.utc)


def decision(i: int, *, score: float = 1.0, anomalous: bool = False, watch: str | None = "/line", sha: str = "",
             time: dt.datetime | None = None, overlay: str | None = None) -> Decision:
    return Decision(path=f"/line/{i:03d}.png", content_sha256=sha or f"{i:064x}", size=100 + i, score_name="patch_max",
                    score=score, threshold=2.0, score_normalized=score / 2, threshold_normalized=1.0,
                    decision="anomalous" if anomalous else "normal", scores={"patch_max": score, "mean": score / 3},
                    source="watch" if watch else "predict", watch=watch, overlay=overlay, time=time or T0)



def index_names(conn) -> set[str]:
    """The decisions table's indexes, expression indexes too (which SQLAlchemy's reflection leaves out)."""
    if conn.dialect.name == "sqlite":
        q = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'decisions'"
    else:
        q = "SELECT indexname FROM pg_indexes WHERE tablename = 'decisions'"
    return set(conn.execute(sa.text(q)).scalars())


def revision(store: Store) -> str:
    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()


def test_decisions_are_kept_with_every_score_and_an_image_is_its_path_and_content(db_url):
    with Store.open(db_url) as store:
        assert store.add(decision(1), V1)
        assert not store.add(decision(1), V1)  # the same watched image again: refused, not doubled
        assert store.add(decision(1, sha="f" * 64), V1)  # same name, new content: a new image
        assert store.add(decision(2, watch=None), V2) and store.add(decision(2, watch=None), V2)  # predict runs
        assert store.is_done("/line", "/line/001.png", "f" * 64)
        store._is_done = lambda *a: False  # another process's insert between the check and ours: the key refuses it
        assert not store.add(decision(1), V1) and store.add(decision(3), V1)
        del store._is_done
        assert not store.is_done("/line", "/line/002.png", f"{2:064x}")
        rows = latest(store, limit=10)
        assert len(rows) == 5
        assert {r["model_sha256"] for r in rows} == {V1.sha256, V2.sha256}
        first = [d for d in store.watched("/line")][0]
        assert first.scores == {"patch_max": 1.0, "mean": pytest.approx(1 / 3)}
        assert first.time == T0 and first.size == 101


def test_an_older_store_is_migrated_and_keeps_its_rows(db_url):
    known, head = known_revisions()
    assert {"0001", head} <= known and head != "0001"
    url = resolve_url(db_url)
    old = Store(url, migrate_schema=False)
    migrate(old.engine, target="0001")  # as the first release left it
    with old.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO models (sha256, first_seen) VALUES (:s, :t)"), {"s": V1.sha256, "t": T0})
        conn.execute(sa.text(
            "INSERT INTO decisions (time, source, path, content_sha256, size, score_name, decision, scores, model_id) "
            "VALUES (:t, 'predict', '/old.png', :h, 1, 'patch_max', 'normal', '{}', 1)"), {"t": T0, "h": "0" * 64})
        indexes_before = index_names(conn)
    old.close()
    with Store(url) as store:
        assert revision(store) == head
        assert [r["path"] for r in latest(store)] == ["/old.png"]
        with store.engine.connect() as conn:
            indexes = index_names(conn)
    assert "ix_decisions_model_time" in indexes_before and "ix_decisions_day_decision" not in indexes_before
    assert {"ix_decisions_model_decision_time", "ix_decisions_day_decision"} <= indexes
    assert "ix_decisions_model_time" not in indexes


def test_a_store_written_by_a_newer_scgan_is_refused_in_one_line_and_left_alone(db_url, capsys):
    with Store.open(db_url) as store:
        store.add(decision(1), V1)
        with store.engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(NewerStoreError, match="newer scgan.*9999.*nothing was changed"):
        Store.open(db_url)
    assert main(["results", "--db", db_url]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "newer scgan" in err
    check = Store(resolve_url(db_url), migrate_schema=False)
    assert revision(check) == "9999"
    with check.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM decisions")).scalar_one() == 1
    check.close()


def test_queries_filter_count_and_export(db_url, capsys):
    with Store.open(db_url) as store:
        for i in range(30):
            day = T0 + dt.timedelta(days=i % 3, minutes=i)
            store.add(decision(i, score=float(i), anomalous=i % 5 == 0, time=day), V1 if i < 20 else V2)
        newest = latest(store, limit=5)
        assert [r["path"] for r in newest] == [f"/line/{i:03d}.png" for i in (29, 26, 23, 20, 17)]
        flt = Filter(decision="anomalous", score_above=4.5, since=T0 + dt.timedelta(days=1))
        assert sorted(r["path"] for r in latest(store, flt)) == [f"/line/{i:03d}.png" for i in (5, 10, 20, 25)]
        assert {r["path"] for r in latest(store, Filter(model=V2.sha256[:8]))} == {f"/line/{i:03d}.png"
                                                                                  for i in range(20, 30)}
        assert [r["path"] for r in latest(store, Filter(until=T0 + dt.timedelta(minutes=3)))] == [
            "/line/000.png", ]
        by_day = counts(store, "day")
        assert [(c.group, c.total, c.anomalous) for c in by_day] == [("2026-03-01", 10, 2), ("2026-03-02", 10, 2),
                                                                     ("2026-03-03", 10, 2)]
        by_model = counts(store, "model")
        assert [(c.group.split()[0], c.total, c.anomalous) for c in by_model] == [(V1.sha256, 20, 4),
                                                                                  (V2.sha256, 10, 2)]
        buf = io.StringIO()
        assert export_csv(store, buf, Filter(decision="anomalous"), batch=2) == 6
        lines = buf.getvalue().splitlines()
        assert lines[0].startswith("id,time,source,path") and len(lines) == 7
    assert main(["results", "counts", "--db", db_url, "--by", "day"]) == 0
    assert "| 2026-03-02 | 10 | 2 | 20.0 |" in capsys.readouterr().out
    assert main(["results", "--db", db_url, "--decision", "anomalous", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "/line/020.png" in out and "/line/005.png" in out and "/line/025.png" not in out  # day 3 first


@pytest.mark.unit
def test_prune_removes_old_rows_and_their_overlays(tmp_path, capsys):
    old_overlay = tmp_path / "old.png"
    old_overlay.write_bytes(b"png")
    db = tmp_path / "results.db"
    now = dt.datetime.now(dt.timezone.utc)
    with Store.open(str(db)) as store:
        store.add(decision(1, time=now - dt.timedelta(days=40), overlay=str(old_overlay)), V1)
        store.add(decision(2, time=now - dt.timedelta(days=2)), V1)
    assert main(["results", "prune", "--db", str(tmp_path), "--keep-days", "30"]) == 0
    assert "pruned 1 decision(s) older than 30 days and 1 overlay file(s)" in capsys.readouterr().out
    assert not old_overlay.exists()
    with Store.open(str(db)) as store:
        assert [r["path"] for r in latest(store)] == ["/line/002.png"]
    assert main(["results", "prune", "--db", str(db)]) == 1
    assert "needs --keep-days" in capsys.readouterr().err


@pytest.mark.unit
def test_prune_keeps_an_overlay_that_a_newer_decision_still_names(tmp_path):
    # a rerun into one output folder (or the same upload served again) writes its overlay under the same name
    shared = tmp_path / "overlays" / "a.png"
    shared.parent.mkdir()
    shared.write_bytes(b"png")
    now = dt.datetime.now(dt.timezone.utc)
    with Store.open(str(tmp_path / "results.db")) as store:
        store.add(decision(1, time=now - dt.timedelta(days=40), overlay=str(shared), watch=None), V1)
        store.add(decision(1, time=now - dt.timedelta(days=1), overlay=str(shared), watch=None), V1)
        assert store.prune(30) == (1, 0)
        assert shared.is_file() and [r["overlay"] for r in latest(store)] == [str(shared)]


@pytest.mark.unit
def test_a_password_is_taken_from_the_environment_and_never_shown(monkeypatch, capsys, tmp_path):
    from scgan.utils.runinfo import command_line

    monkeypatch.setenv("SCGAN_DB_PASSWORD", "hunter2")
    url = resolve_url(f"postgresql://line@{tmp_path}:1/plant")
    assert url.password == "hunter2" and url.drivername == "postgresql+psycopg"
    assert "hunter2" not in shown(url) and "***" in shown(url)
    monkeypatch.setattr(sys, "argv", ["scgan", "watch", "--db", "postgresql://line:s3cret@db.plant/line"])
    assert "s3cret" not in command_line() and "line:***@db.plant" in command_line()
    # a server that is not there: the one-line error names the store, masked
    assert main(["results", "--db", "postgresql://line:s3cret@localhost:1/plant"]) == 1
    err = capsys.readouterr().err
    assert "s3cret" not in err and "cannot open the results store" in err and err.count("\n") == 1


@pytest.mark.unit
@pytest.mark.parametrize("url", ["postgresql://line:pa/ss@db.plant/line", "postgresql://line@x:s3c/ret@db.plant/line",
                                 "postgresql://line:s3cret@db.plant:5432/line?sslmode=require"])
def test_every_password_the_database_driver_would_read_is_masked(url, monkeypatch):
    from sqlalchemy.engine import make_url

    from scgan.utils.runinfo import command_line, mask_passwords

    password = make_url(url).password
    assert password and password not in mask_passwords(url)
    monkeypatch.setattr(sys, "argv", ["scgan", "watch", "in", "--db", url])
    assert password not in command_line()


@pytest.mark.unit
def test_without_the_extra_the_command_names_it_in_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    assert main(["results", "--db", "x.db"]) == 1
    err = capsys.readouterr().err
    assert "pip install 'scgan[record]'" in err and err.count("\n") == 1


@pytest.mark.unit
def test_a_missing_store_file_is_an_error_not_a_new_empty_store(tmp_path, capsys):
    assert main(["results", "--db", str(tmp_path / "nothing.db")]) == 1
    assert "no results store at" in capsys.readouterr().err
    assert not (tmp_path / "nothing.db").exists()


@pytest.mark.unit
def test_a_full_disk_leaves_the_store_consistent(tmp_path):
    """SQLite refusing to grow (as on a full disk): each decision is in the store whole or not at all."""
    from scgan.record.store import UNAVAILABLE

    store = Store.open(str(tmp_path / "results.db"))

    @sa.event.listens_for(store.engine, "connect")
    def _small(dbapi_conn, _record):
        dbapi_conn.execute("PRAGMA max_page_count = 40")

    store.engine.dispose()  # the pooled connections are opened again, small
    added = 0
    with pytest.raises(UNAVAILABLE, match="full"):
        for i in range(10_000):
            store.add(decision(i, overlay="x" * 500), V1)
            added += 1
    assert added > 0
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA integrity_check")).scalar_one() == "ok"
        assert conn.execute(sa.text("SELECT count(*) FROM decisions")).scalar_one() == added
    store.close()


@pytest.mark.unit
def test_the_spool_keeps_decisions_and_leaves_out_a_torn_line(tmp_path):
    spool = Spool(tmp_path)
    spool.append(decision(1), V1)
    spool.append(decision(2, anomalous=True), V2)
    with open(spool.path, "a") as f:
        f.write('{"decision": {"path": "/line/003')  # the process stopped mid-write
    items = spool.read()
    assert [(d.path, d.decision, v.sha256) for d, v in items] == [("/line/001.png", "normal", V1.sha256),
                                                                  ("/line/002.png", "anomalous", V2.sha256)]
    assert items[0][0].time == T0
    spool.append(decision(4), V1)  # the next start's first decision: never swallowed by the torn line
    assert [d.path for d, _ in spool.read()] == ["/line/001.png", "/line/002.png", "/line/004.png"]
    spool.clear()
    assert spool.read() == []


@pytest.mark.unit
def test_an_empty_store_exports_its_header_alone(tmp_path, capsys):
    with Store.open(str(tmp_path)):
        pass
    assert main(["results", "export", "--db", str(tmp_path), "--to", str(tmp_path / "all.csv")]) == 0
    assert (tmp_path / "all.csv").read_text().splitlines() == [",".join(
        ("id", "time", "source", "path", "content_sha256", "size", "score_name", "score", "threshold",
         "score_normalized", "threshold_normalized", "decision", "model_sha256", "preset", "overlay", "scores"))]


@pytest.mark.unit
def test_counts_per_day_read_the_day_index(tmp_path):
    from scgan.record.queries import day_of
    from scgan.record.schema import decisions

    with Store.open(str(tmp_path)) as store:
        key = day_of("sqlite")
        q = sa.select(key, decisions.c.decision, sa.func.count()).group_by(key, decisions.c.decision)
        with store.engine.connect() as conn:
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(q.compile(store.engine))).fetchall()
    assert "ix_decisions_day_decision" in str(plan)
