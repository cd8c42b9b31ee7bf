"""Replicated tasks: one row per replica (lease and vote), worker standing, job policy.

A task's lease moves from the task row to ``replicas``, so several workers can run one
task at once and vote on its digest. Workers gain their standing (streak, valid results,
lies, quarantine); jobs gain their verification policy. Leases held at upgrade time are
returned to the queue: their holders' results would come back as 409s.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_Digest = sa.String(71)


def upgrade() -> None:
    op.execute("UPDATE tasks SET state = 'ready' WHERE state = 'leased'")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_index("ix_tasks_leased_by")
        for name in ("leased_by", "deadline", "done_by", "error_by", "error_attempt"):
            batch.drop_column(name)
        batch.add_column(sa.Column("wanted", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("in_flight", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("failures", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("single", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("audit", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("dclass", sa.String(200), nullable=True))
        batch.add_column(sa.Column("digest", _Digest, nullable=True))
    op.execute("UPDATE tasks SET wanted = 0 WHERE state IN ('done', 'failed')")
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("replicas", new_column_name="quorum")
        batch.add_column(sa.Column("verify", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("reexecuted", sa.Integer, nullable=False, server_default="0"))
    op.execute("UPDATE jobs SET quorum = 1")  # jobs from before verification: one vote each
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("streak", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("valid", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("lies", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("quarantined", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("quarantined_at", sa.Double, nullable=True))
    op.create_table(
        "replicas",
        sa.Column("task_id", sa.String(48), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("worker_id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(140), nullable=False),
        sa.Column("dclass", sa.String(200), nullable=False),
        sa.Column("guardian", sa.Boolean, nullable=False),
        sa.Column("audit", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("leased_at", sa.Double, nullable=False),
        sa.Column("deadline", sa.Double, nullable=True),
        sa.Column("digest", _Digest, nullable=True),
        sa.Column("outputs", sa.JSON, nullable=True),
        sa.Column("seconds", sa.Double, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("verdict", sa.String(16), nullable=True),
    )
    op.create_index("ix_replicas_job_id", "replicas", ["job_id"])
    op.create_index("ix_replicas_state_deadline", "replicas", ["state", "deadline"])
    op.create_index("ix_replicas_worker_id_state", "replicas", ["worker_id", "state"])


def downgrade() -> None:
    op.drop_table("replicas")
    with op.batch_alter_table("workers") as batch:
        for name in ("quarantined_at", "quarantined", "lies", "valid", "streak"):
            batch.drop_column(name)
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("reexecuted")
        batch.drop_column("verify")
        batch.alter_column("quorum", new_column_name="replicas")
    op.execute("UPDATE tasks SET state = 'ready' WHERE state = 'leased'")
    with op.batch_alter_table("tasks") as batch:
        for name in ("digest", "dclass", "audit", "single", "failures", "in_flight", "wanted"):
            batch.drop_column(name)
        batch.add_column(sa.Column("leased_by", sa.String(32), nullable=True))
        batch.add_column(sa.Column("deadline", sa.Double, nullable=True))
        batch.add_column(sa.Column("done_by", sa.String(32), nullable=True))
        batch.add_column(sa.Column("error_by", sa.String(32), nullable=True))
        batch.add_column(sa.Column("error_attempt", sa.Integer, nullable=True))
        batch.create_index("ix_tasks_leased_by", ["leased_by"])
