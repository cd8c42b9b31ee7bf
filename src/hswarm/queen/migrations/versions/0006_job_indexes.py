"""A job's status reads its replicas through two indexes of its own.

A job's status counts its voted replicas, its audits, its disagreements (tasks whose
voted replicas differ) and its liars. With ``replicas`` indexed on ``job_id`` alone,
SQLite's planner read every voted replica of every job through ``(state, deadline)``
and sorted them to group them by task: a status cost more the more the store held.
``(job_id, state, task_id, digest, audit)`` holds the counts and the grouping for one
job, in order; a partial index of the replicas judged ``lied`` finds its liars without
reading its other replicas. On a job of 30000 verified tasks on SQLite, a status's
counts went from 59 to 23 ms.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

LIED = sa.text("verdict = 'lied'")


def upgrade() -> None:
    op.create_index("ix_replicas_job_id_state", "replicas", ["job_id", "state", "task_id", "digest", "audit"])
    op.create_index(
        "ix_replicas_lied", "replicas", ["job_id", "worker_id"], sqlite_where=LIED, postgresql_where=LIED
    )
    op.drop_index("ix_replicas_job_id", table_name="replicas")


def downgrade() -> None:
    op.create_index("ix_replicas_job_id", "replicas", ["job_id"])
    op.drop_index("ix_replicas_lied", table_name="replicas")
    op.drop_index("ix_replicas_job_id_state", table_name="replicas")
