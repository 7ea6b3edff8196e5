"""The results store's tables: one row per decision, one per model version (SQLAlchemy Core).

Every named score of a decision is kept in one JSON column (``scores``) rather than a child table: the names differ
by kind of model (``patch_max`` for PatchCore, ``as`` for the SCGAN) and are always read together with their row, so
a row is written in one insert and read without a join; the score that decides (``score``) has its own indexed
column for filtering. ``(watch, path, content_sha256)`` is unique: a watched folder scores an image (its path and
its content) once, whichever process tries; ``watch`` is empty for ``scgan predict`` and ``scgan serve`` rows.

``feedback`` holds the marks people made on the service's page ("false alarm", "missed defect"), each linked to the
decision it concerns (the same image content under the same model file) where the store has one; a mark outlives a
pruned decision (its link set to NULL). The feedback folder stays the record of feedback; these rows let
``scgan results`` count them beside the decisions.
"""
from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

models = sa.Table(
    "models", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),  # the model file's content: its version
    sa.Column("preset", sa.String(64)),
    sa.Column("kind", sa.String(64)),
    sa.Column("path", sa.Text),  # where the file was when first seen
    sa.Column("score_name", sa.String(64)),  # the default score, which decides
    sa.Column("threshold", sa.Float),
    sa.Column("scgan_version", sa.String(32)),
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
)

decisions = sa.Table(
    "decisions", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),  # UTC, when it was scored
    sa.Column("source", sa.String(16), nullable=False),  # "watch", "predict" or "serve"
    sa.Column("watch", sa.Text),  # the watched folder (absolute), for "watch" rows
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("content_sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("score_name", sa.String(64), nullable=False),
    sa.Column("score", sa.Float),  # None when not finite
    sa.Column("threshold", sa.Float),
    sa.Column("score_normalized", sa.Float),
    sa.Column("threshold_normalized", sa.Float),
    sa.Column("decision", sa.String(16), nullable=False),  # "anomalous", "normal", or "" without a calibration
    sa.Column("scores", sa.JSON, nullable=False),  # every named score {name: value}
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("overlay", sa.Text),
    sa.UniqueConstraint("watch", "path", "content_sha256", name="uq_decisions_image"),
    sa.Index("ix_decisions_time", "time"),
    sa.Index("ix_decisions_decision_time", "decision", "time"),
    sa.Index("ix_decisions_model_decision_time", "model_id", "decision", "time"),
    sa.Index("ix_decisions_content", "content_sha256"),  # a mark finds the decision on its image (migration 0004)
)

feedback = sa.Table(
    "feedback", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("decision_id", sa.Integer, sa.ForeignKey("decisions.id", ondelete="SET NULL")),  # None: not linked
    sa.Column("label", sa.String(32), nullable=False),  # "false_alarm", "missed_defect"
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),  # UTC, when it was marked
    sa.Column("content_sha256", sa.String(64), nullable=False),  # the marked image's content
    sa.Column("model_sha256", sa.String(64), nullable=False),  # the model file that scored it on the page
    sa.Index("ix_feedback_decision", "decision_id"),
    sa.Index("ix_feedback_time", "time"),
)
