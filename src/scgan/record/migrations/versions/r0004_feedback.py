"""Feedback linked to decisions: one row per mark made on the service's page, linked to the decision it concerns.

The decisions get an index on their content's sha256: a mark finds the decision on its image without reading the
table.

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("decision_id", sa.Integer, sa.ForeignKey("decisions.id", ondelete="SET NULL")),
        sa.Column("label", sa.String(32), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
    )
    op.create_index("ix_feedback_decision", "feedback", ["decision_id"])
    op.create_index("ix_feedback_time", "feedback", ["time"])
    op.create_index("ix_decisions_content", "decisions", ["content_sha256"])


def downgrade() -> None:
    op.drop_index("ix_decisions_content", table_name="decisions")
    op.drop_table("feedback")
