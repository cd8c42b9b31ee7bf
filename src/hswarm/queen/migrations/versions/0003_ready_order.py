"""The ready queue's index holds its whole order: ``(state, queued_at, id)``.

A lease takes the oldest ready tasks, ``ORDER BY queued_at, id``. With the index on
``(state, queued_at)`` alone, every lease sorted every ready task of a big job (they
share one ``queued_at``) before it could take the first; with ``id`` in the index it
reads them in order and stops at the ones it takes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tasks_state_queued_at_id", "tasks", ["state", "queued_at", "id"])
    op.drop_index("ix_tasks_state_queued_at", table_name="tasks")


def downgrade() -> None:
    op.create_index("ix_tasks_state_queued_at", "tasks", ["state", "queued_at"])
    op.drop_index("ix_tasks_state_queued_at_id", table_name="tasks")
