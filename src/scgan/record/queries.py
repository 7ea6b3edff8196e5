"""Finding decisions again: filtered lists (newest first), counts and rates per day and per model version (with the
marks people made on them from the service's page), CSV export.

Every query is one SQL statement that the indexes on time, decision and model answer; the export streams its rows
(a million rows never sit in memory).
"""
from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import IO, Any

import sqlalchemy as sa

from scgan.data.feedback import LABELS
from scgan.record.schema import decisions, feedback, models
from scgan.record.store import Store, as_utc
from scgan.utils.tables import csv_cells

# The columns of a listing and of an export, in order (``scores`` as JSON text).
COLUMNS = ("id", "time", "source", "path", "content_sha256", "size", "score_name", "score", "threshold",
           "score_normalized", "threshold_normalized", "decision", "model_sha256", "preset", "overlay", "scores")


@dataclass(frozen=True)
class Filter:
    """Which decisions: a time range [since, until), a decision, a model version (sha256 prefix), a score floor."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    decision: str | None = None  # "anomalous", "normal"
    model: str | None = None  # a prefix of the model file's sha256
    score_above: float | None = None
    source: str | None = None  # "watch", "predict", "serve"
    ids: tuple[int, ...] | None = None  # these decisions only

    def where(self) -> list[Any]:
        c = decisions.c
        out: list[Any] = []
        if self.ids is not None:
            out.append(c.id.in_(self.ids))
        if self.since is not None:
            out.append(c.time >= self.since)
        if self.until is not None:
            out.append(c.time < self.until)
        if self.decision is not None:
            out.append(c.decision == self.decision)
        if self.score_above is not None:
            out.append(c.score > self.score_above)
        if self.source is not None:
            out.append(c.source == self.source)
        if self.model is not None:
            ids = sa.select(models.c.id).where(models.c.sha256.startswith(self.model.lower(), autoescape=True))
            out.append(c.model_id.in_(ids.scalar_subquery()))
        return out


ALL = Filter()  # every decision


def _listing(flt: Filter):
    c, m = decisions.c, models.c
    cols = [c.id, c.time, c.source, c.path, c.content_sha256, c.size, c.score_name, c.score, c.threshold,
            c.score_normalized, c.threshold_normalized, c.decision, m.sha256.label("model_sha256"), m.preset,
            c.overlay, c.scores]
    return sa.select(*cols).join_from(decisions, models, c.model_id == m.id).where(*flt.where())


def latest(store: Store, flt: Filter = ALL, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` decisions that pass ``flt``, newest first."""
    q = _listing(flt).order_by(decisions.c.time.desc(), decisions.c.id.desc()).limit(limit)
    with store.engine.connect() as conn:
        return [_plain(r._asdict()) for r in conn.execute(q)]


def day_of(dialect: str):
    """A decision's UTC calendar day in SQL, as the per-day index of that database holds it (migration 0003)."""
    c = decisions.c
    # Constants written into the SQL, not bound: an expression index is used only for the very same expression.
    if dialect == "sqlite":  # the store keeps "YYYY-MM-DD HH:MM:SS.ffffff" in UTC
        return sa.func.substr(c.time, sa.literal_column("1"), sa.literal_column("10"), type_=sa.String)
    if dialect == "postgresql":
        return sa.cast(sa.func.timezone(sa.literal_column("'UTC'"), c.time), sa.Date)
    return sa.func.substr(sa.cast(c.time, sa.String), 1, 10)


@dataclass(frozen=True)
class Count:
    """Decisions in one group (a day, a model version): how many, how many anomalous, the rate, and the marks on
    them by label ({"false_alarm": n, "missed_defect": n})."""

    group: str
    total: int
    anomalous: int
    marks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABELS, 0))

    @property
    def rate(self) -> float:
        return self.anomalous / self.total if self.total else float("nan")


def counts(store: Store, by: str = "day", flt: Filter = ALL) -> list[Count]:
    """Counts and anomalous rates per ``by`` ("day" or "model"), oldest day / first-seen model first; each with the
    marks linked to its decisions (a mark counts in its decision's day and model)."""
    c, m = decisions.c, models.c
    anomalous = sa.func.sum(sa.case((c.decision == "anomalous", 1), else_=0))
    model_label = m.sha256 + sa.literal(" ") + sa.func.coalesce(m.preset, "")
    if by == "day":  # grouped by day and decision, as the index holds them; the decisions summed here
        key = day_of(store.engine.dialect.name)
        q = sa.select(key, c.decision, sa.func.count()).where(*flt.where()).group_by(key, c.decision)
        days: dict[str, list[int]] = {}
        with store.engine.connect() as conn:
            for day, decision, n in conn.execute(q):
                total = days.setdefault(str(day), [0, 0])
                total[0] += n
                total[1] += n if decision == "anomalous" else 0
        out = [Count(day, n, a) for day, (n, a) in sorted(days.items())]
    elif by == "model":
        inner = (sa.select(c.model_id, sa.func.count().label("n"), anomalous.label("a")).where(*flt.where())
                 .group_by(c.model_id).subquery())
        q = (sa.select(model_label, inner.c.n, inner.c.a).join_from(inner, models, inner.c.model_id == m.id)
             .order_by(m.first_seen))
        key = model_label
        with store.engine.connect() as conn:
            out = [Count(str(g).strip(), int(n), int(a or 0)) for g, n, a in conn.execute(q)]
    else:
        raise ValueError(f"counts by {by!r}: valid are day, model")
    f = feedback.c  # the marks: few beside the decisions, joined to theirs and grouped by the same key
    q = (sa.select(key, f.label, sa.func.count()).join_from(feedback, decisions, f.decision_id == c.id)
         .join(models, c.model_id == m.id).where(*flt.where()).group_by(key, f.label))
    groups = {g.group: g for g in out}
    with store.engine.connect() as conn:
        for g, label, n in conn.execute(q):
            group = groups.get(str(g).strip())
            if group is not None:
                group.marks[label] = group.marks.get(label, 0) + int(n)
    return out


def export_csv(store: Store, f: IO[str], flt: Filter = ALL, batch: int = 5000) -> int:
    """Write the decisions that pass ``flt`` to ``f`` as CSV (:data:`COLUMNS`), oldest first, streamed; how many."""
    q = _listing(flt).order_by(decisions.c.id)
    w = csv.writer(f)
    w.writerow(COLUMNS)
    n = 0
    with store.engine.connect() as conn:
        for r in conn.execution_options(yield_per=batch).execute(q):
            w.writerow(csv_cells(list(_plain(r._asdict()).values())))
            n += 1
    return n


def decision_of(store: Store, watch: str, path: str, sha: str) -> str | None:
    """The decision recorded for a watched image, or None."""
    c = decisions.c
    q = sa.select(c.decision).where(c.watch == watch, c.path == path, c.content_sha256 == sha).limit(1)
    with store.engine.connect() as conn:
        return conn.execute(q).scalar()


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row as text-ready values: the time in ISO 8601 UTC, the scores as JSON."""
    row["time"] = as_utc(row["time"]).isoformat(timespec="seconds")
    row["scores"] = json.dumps(row["scores"], sort_keys=True)
    return row

