"""Writing the record: model versions and decisions, one transaction per decision, migrations on open.

Opening a store brings its schema to this scgan's newest revision (Alembic); a store that a newer scgan wrote (a
revision this one does not know) is refused in one line before anything is changed. Each decision is one
transaction, so a crash, a ``kill -9`` or a full disk leaves every decision either in the store or not at all.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scgan.record import require
from scgan.record.url import resolve_url, shown, sqlite_file

require()

import sqlalchemy as sa  # noqa: E402  (after require(): a missing extra is one line, not a traceback)
from sqlalchemy.exc import IntegrityError, OperationalError  # noqa: E402

from scgan.record.schema import decisions, feedback, models  # noqa: E402

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# The errors that mean "the database cannot be reached or cannot write now" (a server down, a network gone, a full
# disk): the decision waits in the spool. Anything else is a bug or a bad store and stops the run.
UNAVAILABLE = (OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError, sa.exc.TimeoutError)


class NewerStoreError(RuntimeError):
    """The store's schema is newer than this scgan knows: nothing was changed."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


@dataclass(frozen=True)
class ModelVersion:
    """A model file as the store knows it: its content's sha256 is its version."""

    sha256: str
    preset: str | None = None
    kind: str | None = None
    path: str | None = None
    score_name: str | None = None
    threshold: float | None = None
    scgan_version: str | None = None

    @classmethod
    def of_detector(cls, detector) -> ModelVersion:
        """The version of a :class:`scgan.inference.detector.Detector`'s model file: the sha256 of the bytes it loaded
        (``info["sha256"]``, set by :func:`scgan.inference.detector.load_detector`), else of the file as it is now."""
        from scgan.utils.manifest import file_sha256
        from scgan.utils.names import printable

        sha256 = detector.info.get("sha256") or file_sha256(detector.path)
        return cls(sha256=sha256, preset=detector.info.get("preset"), kind=detector.info.get("kind"),
                   path=printable(Path(detector.path).resolve()), score_name=detector.default_score,
                   threshold=_finite(detector.threshold), scgan_version=detector.info.get("version"))


@dataclass
class Decision:
    """One scored image as recorded: what, when, by which model, and the decision with every named score."""

    path: str
    content_sha256: str
    size: int
    score_name: str
    score: float | None
    threshold: float | None
    score_normalized: float | None
    threshold_normalized: float | None
    decision: str  # "anomalous", "normal", or "" without a calibration
    scores: dict[str, float | None]
    source: str = "predict"
    watch: str | None = None
    overlay: str | None = None
    time: dt.datetime = field(default_factory=utc_now)

    @classmethod
    def of_result(cls, result, *, path: str, content_sha256: str, size: int, source: str,
                  watch: str | None = None, overlay: str | None = None) -> Decision:
        """The decision of a :class:`scgan.inference.detector.Result` (non-finite values kept as None)."""
        cal = result.calibration
        return cls(path=path, content_sha256=content_sha256, size=size, score_name=result.score_name,
                   score=_finite(result.score), threshold=_finite(result.threshold),
                   score_normalized=_finite(result.normalized),
                   threshold_normalized=None if cal is None else _finite(cal.threshold_normalized(result.score_name)),
                   decision=result.decision or "", scores={k: _finite(v) for k, v in result.scores.items()},
                   source=source, watch=watch, overlay=overlay)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["time"] = self.time.isoformat()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Decision:
        return cls(**{**d, "time": as_utc(dt.datetime.fromisoformat(d["time"]))})


def as_utc(t: dt.datetime) -> dt.datetime:
    """``t`` as an aware UTC time (SQLite gives back naive times, which the store wrote in UTC)."""
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def _alembic_config(connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def known_revisions() -> tuple[set[str], str]:
    """Every schema revision this scgan knows, and the newest."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS))
    return {r.revision for r in script.walk_revisions()}, script.get_current_head()


def migrate(engine, target: str = "head", what: str = "") -> None:
    """Bring the store's schema to ``target`` (the newest by default) in one transaction; a store newer than this
    scgan, or a database holding other tables, raises without changing anything."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    known, head = known_revisions()
    with engine.begin() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
        if current - known:
            raise NewerStoreError(
                f"the results store {what} was written by a newer scgan (schema revision "
                f"{', '.join(sorted(current - known))}; this scgan knows up to {head}); use that scgan or a newer "
                "one, or another --db (nothing was changed)")
        if not current and "decisions" in sa.inspect(conn).get_table_names():
            raise NewerStoreError(f"{what} holds a decisions table without scgan's schema revision; it is not a "
                                  "results store this scgan wrote (nothing was changed)")
        if target == "head" and current == {head}:
            return
        command.upgrade(_alembic_config(conn), target)


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def make_engine(url):
    """An engine for ``url``, its connections pooled: every PostgreSQL session in UTC and each connection checked
    before use; a SQLite file with foreign keys on, a wait for a busy file, and each connection dropped when the
    file at its path is no longer the one it opened (its folder gone, moved or remounted): the path is opened again,
    or the store is away."""
    path = sqlite_file(url)
    kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
        if url.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {"options": "-c timezone=UTC", "connect_timeout": 10}
    engine = sa.create_engine(url, **kwargs)
    if path is not None:
        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, record) -> None:
            record.info["inode"] = _inode(path)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")  # with WAL: a commit survives a crash of the process
            cur.close()

        @sa.event.listens_for(engine, "checkout")
        def _same_file(_dbapi_conn, record, _proxy) -> None:
            if _inode(path) != record.info.get("inode"):
                raise sa.exc.DisconnectionError("the store's file is not the one this connection opened")
    return engine


class Store:
    """A results store at a SQLAlchemy URL, migrated to this scgan's schema on open."""

    def __init__(self, url, *, migrate_schema: bool = True) -> None:
        self.url = url
        self.name = shown(url)
        path = sqlite_file(url)
        if path is not None and not path.parent.is_dir():
            raise FileNotFoundError(f"no folder for the results store {self.name}: create {path.parent} first")
        self.engine = make_engine(url)
        self._model_ids: dict[str, int] = {}
        try:
            if path is not None:  # WAL: readers (scgan results) do not block the writer; kept in the file
                with self.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            if migrate_schema:
                migrate(self.engine, what=self.name)
        except UNAVAILABLE as e:
            self.close()
            raise ConnectionError(f"cannot open the results store {self.name}: {error_line(e)}") from None

    @classmethod
    def open(cls, db: str | None, folder: str | os.PathLike[str] | None = None) -> Store:
        """The store named by ``db`` (see :func:`scgan.record.url.resolve_url`), else ``folder/results.db``."""
        return cls(resolve_url(db, folder))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- writing --------------------------------------------------------------------------------------------
    def model_id(self, version: ModelVersion, conn=None) -> int:
        """The id of ``version`` in the models table, added on first sight."""
        if version.sha256 in self._model_ids:
            return self._model_ids[version.sha256]
        if conn is None:
            with self.engine.begin() as c:
                return self.model_id(version, c)
        sel = sa.select(models.c.id).where(models.c.sha256 == version.sha256)
        found = conn.execute(sel).scalar()
        if found is None:
            try:
                with conn.begin_nested():
                    found = conn.execute(models.insert().values(**asdict(version), first_seen=utc_now())
                                         .returning(models.c.id)).scalar_one()
            except IntegrityError:  # another process added it meanwhile
                found = conn.execute(sel).scalar_one()
        self._model_ids[version.sha256] = int(found)
        return int(found)

    def add(self, decision: Decision, version: ModelVersion) -> bool:
        """Record one decision in its own transaction; False when its watched image is recorded already."""
        return self.add_many([decision], version) == 1

    def add_one(self, decision: Decision, version: ModelVersion) -> int | None:
        """Record one decision in its own transaction: its id, or None when its watched image is recorded already."""
        try:
            ids = self._insert([decision], version)
        except IntegrityError:
            return None
        return ids[0] if ids else None

    def add_many(self, items: Iterable[Decision], version: ModelVersion) -> int:
        """Record decisions in one transaction, leaving out watched images recorded already; how many were added.

        Where another process records one of them meanwhile (the unique key refuses it), each goes in its own
        transaction instead and the ones it recorded are left out.
        """
        items = list(items)
        try:
            return len(self._insert(items, version))
        except IntegrityError:
            if len(items) == 1:
                return 0
        added = 0
        for d in items:
            try:
                added += len(self._insert([d], version))
            except IntegrityError:
                pass
        return added

    def _insert(self, items: list[Decision], version: ModelVersion) -> list[int]:
        """The ids of the decisions added (in one transaction)."""
        ids = []
        try:
            with self.engine.begin() as conn:
                mid = self.model_id(version, conn)
                for d in items:
                    if d.watch is not None and self._is_done(conn, d.watch, d.path, d.content_sha256):
                        continue
                    ids.append(conn.execute(decisions.insert().values(_row(d, mid))
                                            .returning(decisions.c.id)).scalar_one())
        except BaseException:
            self._model_ids.pop(version.sha256, None)  # its row may have gone with the transaction
            raise
        return ids

    # ---- feedback -------------------------------------------------------------------------------------------
    def decision_for(self, content_sha256: str, model_sha256: str, decision_id: int | None = None) -> int | None:
        """The decision a mark on this image under this model concerns: ``decision_id`` when given (ValueError
        unless that decision is of this very content and model file, so that a mark never lands on another image's
        row), else the latest decision on it, or None when the store has none."""
        c, m = decisions.c, models.c
        q = (sa.select(c.id).join_from(decisions, models, c.model_id == m.id)
             .where(c.content_sha256 == content_sha256, m.sha256 == model_sha256))
        if decision_id is not None:
            q = q.where(c.id == decision_id)
        with self.engine.connect() as conn:
            found = conn.execute(q.order_by(c.time.desc(), c.id.desc()).limit(1)).scalar()
        if decision_id is not None and found is None:
            raise ValueError(f"decision {decision_id} is not a decision on this image by the model served")
        return None if found is None else int(found)

    def add_feedback(self, label: str, content_sha256: str, model_sha256: str, decision_id: int | None,
                     time: dt.datetime | None = None) -> int:
        """Record one mark (linked to ``decision_id`` when not None); its id."""
        row = {"label": label, "content_sha256": content_sha256, "model_sha256": model_sha256,
               "decision_id": decision_id, "time": time or utc_now()}
        with self.engine.begin() as conn:
            return int(conn.execute(feedback.insert().values(row).returning(feedback.c.id)).scalar_one())

    # ---- reading what is done -------------------------------------------------------------------------------
    @staticmethod
    def _is_done(conn, watch: str, path: str, sha: str) -> bool:
        c = decisions.c
        q = sa.select(c.id).where(c.watch == watch, c.path == path, c.content_sha256 == sha).limit(1)
        return conn.execute(q).first() is not None

    def is_done(self, watch: str, path: str, sha: str) -> bool:
        """True when the watched folder ``watch`` has a decision on this image (path and content)."""
        with self.engine.connect() as conn:
            return self._is_done(conn, watch, path, sha)

    def watched(self, watch: str) -> Iterator[Decision]:
        """The decisions of a watched folder in the order they were recorded (streamed)."""
        c = decisions.c
        cols = [c[k] for k in Decision.__dataclass_fields__]
        q = sa.select(*cols).where(c.watch == watch).order_by(c.id)
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=1000).execute(q):
                d = Decision(**row._asdict())
                d.time = as_utc(d.time)
                yield d

    def count_watched(self, watch: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(decisions.c.watch == watch)).scalar_one())

    # ---- pruning --------------------------------------------------------------------------------------------
    def prune(self, keep_days: float, *, now: dt.datetime | None = None, batch: int = 10_000) -> tuple[int, int]:
        """Delete decisions older than ``keep_days`` days and the overlay files they name: (rows, files) removed.

        Rows go in transactions of ``batch``; an overlay goes only after its row (a crash leaves a file, never a row
        naming a missing file), only a ``.png`` file, and only one no remaining decision names. A mark on a pruned
        decision stays, unlinked.
        """
        if not keep_days > 0:
            raise ValueError(f"keep_days must be > 0, got {keep_days}")
        cutoff = (now or utc_now()) - dt.timedelta(days=keep_days)
        c = decisions.c
        rows = files = 0
        while True:
            with self.engine.begin() as conn:
                found = conn.execute(sa.select(c.id, c.overlay).where(c.time < cutoff).order_by(c.id)
                                     .limit(batch)).all()
                if not found:
                    break
                conn.execute(decisions.delete().where(c.id.in_([r.id for r in found])))
                # a newer decision may name the same file (a rerun into one folder, an upload served again): kept
                named = {r.overlay for r in found if r.overlay}
                kept = set(conn.execute(sa.select(c.overlay).where(c.overlay.in_(named)).distinct()).scalars()) \
                    if named else set()
            rows += len(found)
            for r in found:
                if r.overlay and r.overlay.endswith(".png") and r.overlay not in kept:
                    try:
                        os.unlink(r.overlay)
                        files += 1
                    except FileNotFoundError:
                        pass
                    except OSError as e:
                        log.warning("could not remove the overlay %s: %s", r.overlay, e.strerror or e)
        return rows, files


def _row(d: Decision, model_id: int) -> dict[str, Any]:
    row = asdict(d)
    row["model_id"] = model_id
    return row


def error_line(e: BaseException) -> str:
    """A database error in one line, without SQLAlchemy's statement and link (a URL there is masked)."""
    from scgan.utils.runinfo import mask_passwords

    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()
    return mask_passwords(text[0] if text else type(orig).__name__)
