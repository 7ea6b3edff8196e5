"""The first schema: model versions and decisions, indexed on time, decision and model.

Revision ID: 0001
Revises:
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("preset", sa.String(64)),
        sa.Column("kind", sa.String(64)),
        sa.Column("path", sa.Text),
        sa.Column("score_name", sa.String(64)),
        sa.Column("threshold", sa.Float),
        sa.Column("scgan_version", sa.String(32)),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("watch", sa.Text),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("score_name", sa.String(64), nullable=False),
        sa.Column("score", sa.Float),
        sa.Column("threshold", sa.Float),
        sa.Column("score_normalized", sa.Float),
        sa.Column("threshold_normalized", sa.Float),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("scores", sa.JSON, nullable=False),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("overlay", sa.Text),
        sa.UniqueConstraint("watch", "path", "content_sha256", name="uq_decisions_image"),
    )
    op.create_index("ix_decisions_time", "decisions", ["time"])
    op.create_index("ix_decisions_decision_time", "decisions", ["decision", "time"])
    op.create_index("ix_decisions_model_time", "decisions", ["model_id", "time"])


def downgrade() -> None:
    op.drop_table("decisions")
    op.drop_table("models")
