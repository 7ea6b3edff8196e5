"""``scgan watch``: each file scored exactly once, whatever happens to the folder, the files, the database or the
process; predictions.csv and the store agree."""
from __future__ import annotations

import contextlib
import csv
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("watchdog")

import sqlalchemy as sa  # noqa: E402

from scgan.cli import main  # noqa: E402
from scgan.record.store import Store, sha256_bytes  # noqa: E402
from scgan.record.watcher import Watcher, WatchOptions  # noqa: E402

FAST = {"settle_s": 0.2, "unclosed_s": 2.0, "retry_s": 0.2, "rescan_s": 0.5}


def wait_for(condition, timeout: float = 60.0, what: str = "the condition") -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def sources(demo_root, demo_category) -> list[Path]:
    """The demo category's images (each different), to copy into watched folders."""
    found = sorted(p for p in (demo_root / demo_category).rglob("*.png") if "ground_truth" not in p.parts)
    assert len(found) >= 8
    return found


def csv_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def store_paths(store: Store, watch: Path) -> list[str]:
    return [d.path for d in store.watched(str(watch.resolve()))]


@contextlib.contextmanager
def watching(in_dir: Path, out: Path, detector, store: Store, **options):
    """A Watcher running in a thread for the ``with`` block; stopped (and its error raised) after."""
    w = Watcher(in_dir, out, detector, store, WatchOptions(**{**FAST, **options}))
    stop, failed = threading.Event(), []

    def target() -> None:
        try:
            w.run(stop)
        except BaseException as e:  # noqa: BLE001 — raised in the test's thread below
            failed.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    wait_for(lambda: w._observer is not None or failed or not in_dir.is_dir(), what="the watcher to start")
    try:
        yield w
    finally:
        stop.set()
        t.join(60)
    if failed:
        raise failed[0]


@pytest.fixture
def out(tmp_path) -> Path:
    (tmp_path / "out").mkdir()
    return tmp_path / "out"


@pytest.fixture
def store(out):
    with Store.open(None, out) as s:
        yield s


@pytest.mark.integration
def test_each_arrival_is_scored_once_and_only_when_complete(tmp_path, out, store, detector, sources):
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    shutil.copy(sources[0], in_dir / "before.png")  # there at start: scored
    with watching(in_dir, out, detector, store) as w:
        wait_for(lambda: len(store_paths(store, in_dir)) == 1, what="the file there at start")
        shutil.copy(sources[1], in_dir / "copied.png")
        shutil.copy(sources[2], in_dir / ".renamed.tmp")
        os.replace(in_dir / ".renamed.tmp", in_dir / "renamed.png")  # a writer's temporary file is never scored
        (in_dir / "line2").mkdir()
        shutil.copy(sources[3], in_dir / "line2" / "sub.png")
        data = sources[4].read_bytes()
        with open(in_dir / "slow.png", "wb") as f:  # a camera still writing: not read before it closes the file
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(4 * FAST["settle_s"])
            assert "slow.png" not in {Path(p).name for p in store_paths(store, in_dir)}
            f.write(data[len(data) // 2:])
        wait_for(lambda: len(store_paths(store, in_dir)) == 5, what="five decisions")
        (in_dir / "copied.png").write_bytes(sources[5].read_bytes())  # the name again, new content: a new image
        wait_for(lambda: len(store_paths(store, in_dir)) == 6, what="the reused name's decision")
        time.sleep(3 * FAST["rescan_s"])  # rescans find nothing new
    decided = list(store.watched(str(in_dir.resolve())))
    names = sorted(Path(d.path).relative_to(in_dir.resolve()).as_posix() for d in decided)
    assert names == ["before.png", "copied.png", "copied.png", "line2/sub.png", "renamed.png", "slow.png"]
    assert next(d for d in decided if d.path.endswith("slow.png")).content_sha256 == sha256_bytes(data)
    assert len({(d.path, d.content_sha256) for d in decided}) == 6
    rows = csv_rows(out)
    assert [r["path"] for r in rows] == [d.path for d in decided]
    assert list(rows[0])[:6] == ["path", "score", "threshold", "score_normalized", "threshold_normalized", "decision"]
    assert all(r["decision"] in ("normal", "anomalous") for r in rows)
    for d in decided:  # overlays of the anomalous ones, none of the normal
        assert (d.overlay is not None) == (d.decision == "anomalous")
        assert d.overlay is None or Path(d.overlay).is_file()
    assert w.summary.scored == 6


@pytest.mark.integration
def test_what_cannot_or_must_not_be_scored_is_skipped_with_a_line(tmp_path, out, store, detector, sources, caplog):
    caplog.set_level(logging.INFO, logger="scgan.record")
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    outside = tmp_path / "outside.png"
    shutil.copy(sources[0], outside)
    with watching(in_dir, out, detector, store) as w:
        (in_dir / "notes.txt").write_text("not an image")
        (in_dir / "link.png").symlink_to(outside)
        (in_dir / "broken.png").write_bytes(b"\x89PNG this is not a picture")
        shutil.copy(sources[1], in_dir / "inside.png")
        (in_dir / "link_inside.png").symlink_to(in_dir / "inside.png")  # inside the folder: followed
        wait_for(lambda: len(store_paths(store, in_dir)) == 2 and sum(w.summary.skipped.values()) == 3,
                 what="two decisions and three skips")
    text = caplog.text
    assert "notes.txt: not an image file" in text
    assert "link.png: a symbolic link to" in text and "(not followed)" in text
    assert "broken.png: unreadable as an image" in text
    assert sorted(Path(p).name for p in store_paths(store, in_dir)) == ["inside.png", "link_inside.png"]
    # a file deleted between its event and its read: skipped, nothing recorded, the watcher goes on
    idle = Watcher(in_dir, out, detector, store, WatchOptions(**FAST))
    gone = in_dir / "gone.png"
    shutil.copy(sources[2], gone)
    idle._candidate(gone, complete=True)
    assert gone in idle._pending
    gone.unlink()
    idle._handle(gone)
    assert idle.summary.skipped == {"removed before it could be read": 1}
    assert len(store_paths(store, in_dir)) == 2


@pytest.mark.integration
def test_a_file_under_a_linked_folder_outside_is_neither_read_nor_moved(tmp_path, out, store, detector, sources,
                                                                         caplog):
    # Polling (and a scan of a new folder) lists a linked folder's files under the watched folder's own path.
    caplog.set_level(logging.INFO, logger="scgan.record")
    in_dir, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    in_dir.mkdir()
    elsewhere.mkdir()
    shutil.copy(sources[0], elsewhere / "private.png")
    (in_dir / "linked").symlink_to(elsewhere, target_is_directory=True)
    w = Watcher(in_dir, out, detector, store, WatchOptions(**FAST, move=True))
    w._scan(in_dir / "linked")
    path = in_dir / "linked" / "private.png"
    assert path in w._pending
    w._handle(path)
    assert "outside the watched folder" in caplog.text and sum(w.summary.skipped.values()) == 1
    assert store_paths(store, in_dir) == [] and (elsewhere / "private.png").is_file()


@pytest.mark.integration
def test_a_watch_folder_that_disappears_and_comes_back(tmp_path, out, store, detector, sources, caplog):
    caplog.set_level(logging.WARNING, logger="scgan.record")
    in_dir, away = tmp_path / "in", tmp_path / "away"
    in_dir.mkdir()
    with watching(in_dir, out, detector, store):
        shutil.copy(sources[0], in_dir / "a.png")
        wait_for(lambda: len(store_paths(store, in_dir)) == 1, what="the first decision")
        in_dir.rename(away)
        wait_for(lambda: "is gone" in caplog.text, what="the folder to be missed")
        shutil.copy(sources[1], away / "b.png")  # arrives while the folder is away
        away.rename(in_dir)
        wait_for(lambda: "is back" in caplog.text, what="the folder to be found again")
        shutil.copy(sources[2], in_dir / "c.png")
        wait_for(lambda: len(store_paths(store, in_dir)) == 3, what="three decisions")
        time.sleep(3 * FAST["rescan_s"])
    assert sorted(Path(p).name for p in store_paths(store, in_dir)) == ["a.png", "b.png", "c.png"]
    assert len(csv_rows(out)) == 3


def _db_away_and_back(tmp_path, out, detector, sources, caplog, store, away, back):
    caplog.set_level(logging.WARNING, logger="scgan.record")
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    with watching(in_dir, out, detector, store) as w:
        shutil.copy(sources[0], in_dir / "a.png")
        wait_for(lambda: len(store_paths(store, in_dir)) == 1, what="the first decision")
        away()
        shutil.copy(sources[1], in_dir / "b.png")
        shutil.copy(sources[2], in_dir / "c.png")
        wait_for(lambda: len(csv_rows(out)) == 3, what="three rows while the store is away")
        assert "cannot be reached" in caplog.text and (out / ".results-spool.jsonl").is_file()
        back()
        wait_for(lambda: not (out / ".results-spool.jsonl").exists(), what="the spool to be written")
        shutil.copy(sources[3], in_dir / "d.png")
        wait_for(lambda: len(store_paths(store, in_dir)) == 4, what="four decisions")
    assert sorted(Path(p).name for p in store_paths(store, in_dir)) == ["a.png", "b.png", "c.png", "d.png"]
    assert [r["path"] for r in csv_rows(out)] == store_paths(store, in_dir)
    assert len(w.summary.gaps) == 1 and w.summary.gaps[0][2] == 2
    assert "2 decision(s) kept in the spool during a gap" in caplog.text


@pytest.mark.integration
def test_a_sqlite_store_away_for_a_while_loses_nothing(tmp_path, out, detector, sources, caplog):
    folder = tmp_path / "db"
    folder.mkdir()
    with Store.open(str(folder / "results.db")) as store:
        _db_away_and_back(tmp_path, out, detector, sources, caplog, store,
                          away=lambda: folder.rename(tmp_path / "db_away"),
                          back=lambda: (tmp_path / "db_away").rename(folder))


@pytest.mark.system
def test_a_postgresql_server_down_for_a_while_loses_nothing(tmp_path, out, detector, sources, caplog,
                                                            postgres_server, postgres_url):
    with Store.open(postgres_url) as store:
        _db_away_and_back(tmp_path, out, detector, sources, caplog, store, away=postgres_server.stop,
                          back=postgres_server.start)


@pytest.mark.integration
def test_move_repair_and_restart_score_nothing_twice(tmp_path, out, store, detector, sources):
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    for i in range(3):
        shutil.copy(sources[i], in_dir / f"{i}.png")
    with watching(in_dir, out, detector, store):
        wait_for(lambda: len(store_paths(store, in_dir)) == 3, what="three decisions")
    # a crash between a commit and its row, mid-row: the CSV is rewritten from the store at the next start
    text = (out / "predictions.csv").read_text()
    (out / "predictions.csv").write_text(text[: text.rindex("\n", 0, len(text) - 1) + 8])
    with watching(in_dir, out, detector, store, move=True):  # decided but not moved: moved, not scored again
        wait_for(lambda: not list(in_dir.glob("*.png")), what="the files to be moved")
        shutil.copy(sources[3], in_dir / "3.png")
        wait_for(lambda: not (in_dir / "3.png").exists(), what="the new file to be moved")
    decided = list(store.watched(str(in_dir.resolve())))
    assert len(decided) == 4
    assert [r["path"] for r in csv_rows(out)] == [d.path for d in decided]
    for d in decided:
        assert (out / d.decision / Path(d.path).name).is_file()


@pytest.mark.integration
def test_a_second_watcher_on_the_same_output_is_refused(tmp_path, out, trained, capsys):
    from scgan.utils.lock import folder_lock

    (tmp_path / "in").mkdir()
    with folder_lock(out, "watching"):
        assert main(["watch", str(tmp_path / "in"), "--checkpoint", str(trained[0].model_path),
                     "--output", str(out)]) == 1
    assert "is in use by" in capsys.readouterr().err
    assert not (out / "results.db").exists()


@pytest.mark.integration
def test_pruning_without_moving_is_refused_since_a_pruned_file_would_be_scored_again(tmp_path, trained, capsys):
    (tmp_path / "in").mkdir()
    out = tmp_path / "out"
    assert main(["watch", str(tmp_path / "in"), "--checkpoint", str(trained[0].model_path), "--output", str(out),
                 "--keep-days", "30"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--keep-days needs --move" in err[0]
    assert not out.exists()


@pytest.mark.integration
def test_an_output_folder_inside_the_watched_one_is_refused(tmp_path, detector, store):
    with pytest.raises(ValueError, match="inside the watched folder"):
        Watcher(tmp_path, tmp_path / "out", detector, store)


def _start(in_dir: Path, out: Path, model: Path, db: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "scgan", "watch", str(in_dir), "--checkpoint", str(model),
                             "--output", str(out), "--db", db, "--settle", "0.2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.system
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_killed_halfway_then_restarted_every_file_is_scored_exactly_once(backend, tmp_path, trained, sources,
                                                                         request):
    """50 files copied in one by one; SIGKILL after about half are decided; the rest arrive while it is down;
    a restart ends with 50 decisions in the store and 50 rows in the CSV, each file once."""
    in_dir, out = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    out.mkdir()
    secret = "pw-never-shown"
    if backend == "sqlite":
        db = str(out / "results.db")
    else:
        server = request.getfixturevalue("postgres_server")
        db = server.url(server.new_database(), password=secret)
    model = trained[0].model_path
    proc = _start(in_dir, out, model, db)
    try:
        assert "watching" in proc.stdout.readline()
        store = Store.open(db)
        done = lambda: len(store_paths(store, in_dir))  # noqa: E731
        n = 0
        while done() < 25:
            assert n < 50 and proc.poll() is None, "the watcher fell behind or stopped"
            shutil.copy(sources[n % len(sources)], in_dir / f"{n:03d}.png")
            n += 1
            time.sleep(0.05)
        proc.kill()  # SIGKILL: no clean-up at all
        proc.wait(30)
        first = done()
        for k in range(n, 50):
            shutil.copy(sources[k % len(sources)], in_dir / f"{k:03d}.png")
        proc = _start(in_dir, out, model, db)
        assert "watching" in proc.stdout.readline()
        wait_for(lambda: done() == 50, timeout=120, what="50 decisions")
        time.sleep(1.0)  # anything scored twice would show now
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "stopped: scored" in stdout
    assert 25 <= first < 50
    paths = store_paths(store, in_dir)
    assert sorted(Path(p).name for p in paths) == [f"{k:03d}.png" for k in range(50)]
    rows = csv_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(paths)
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM decisions")).scalar_one() == 50
    store.close()
    for text in (stdout, stderr, *(p.read_text(errors="replace") for p in out.rglob("*.csv"))):
        assert secret not in text



@pytest.mark.integration
def test_polling_leaves_existing_files_alone_and_prunes_old_decisions(tmp_path, out, store, detector, sources):
    import datetime as dt

    from scgan.record.store import Decision, ModelVersion

    old = Decision(path="/old.png", content_sha256="0" * 64, size=1, score_name="s", score=1.0, threshold=2.0,
                   score_normalized=None, threshold_normalized=None, decision="normal", scores={"s": 1.0},
                   time=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10))
    store.add(old, ModelVersion("e" * 64))
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    shutil.copy(sources[0], in_dir / "there.png")
    shutil.copy(sources[1], in_dir / "changed.png")
    with watching(in_dir, out, detector, store, poll=True, existing=False, keep_days=5) as w:
        assert w._observer.__class__.__name__ == "PollingObserver"
        time.sleep(3 * FAST["settle_s"])
        (in_dir / "changed.png").write_bytes(sources[2].read_bytes())  # changed after the start: scored
        shutil.copy(sources[3], in_dir / "new.png")
        wait_for(lambda: len(store_paths(store, in_dir)) == 2, what="two decisions")
        time.sleep(3 * FAST["rescan_s"])
    assert sorted(Path(p).name for p in store_paths(store, in_dir)) == ["changed.png", "new.png"]
    with store.engine.connect() as conn:  # the 10-day-old decision was pruned at the start
        assert conn.execute(sa.text("SELECT count(*) FROM decisions WHERE path = '/old.png'")).scalar_one() == 0
