"""Counts per model version from the index alone: (model_id, decision, time) replaces (model_id, time).

On a million decisions the counts per model version read every row of the table through the old index (seconds);
the new one holds the decision too, so the count never touches the table.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_decisions_model_decision_time", "decisions", ["model_id", "decision", "time"])
    op.drop_index("ix_decisions_model_time", table_name="decisions")


def downgrade() -> None:
    op.create_index("ix_decisions_model_time", "decisions", ["model_id", "time"])
    op.drop_index("ix_decisions_model_decision_time", table_name="decisions")
