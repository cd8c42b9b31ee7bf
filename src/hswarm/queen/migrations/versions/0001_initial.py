"""The first schema: workers, contexts, blobs, jobs, tasks, results, events.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Digest = sa.String(71)


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("determinism_class", sa.String(200), nullable=False),
        sa.Column("executors", sa.Integer, nullable=False),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("credential_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("registered_at", sa.Double, nullable=False),
        sa.Column("last_seen", sa.Double, nullable=False),
        sa.Column("load", sa.Double, nullable=False),
        sa.Column("contexts", sa.JSON, nullable=False),
        sa.Column("done", sa.Integer, nullable=False),
    )
    op.create_table(
        "contexts",
        sa.Column("digest", _Digest, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("key_tag", sa.String(200), nullable=False),
        sa.Column("rotation_indices", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_table(
        "blobs",
        sa.Column("digest", _Digest, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("context", _Digest, sa.ForeignKey("contexts.digest"), nullable=False),
        sa.Column("circuit", sa.JSON, nullable=False),
        sa.Column("replicas", sa.Integer, nullable=False),
        sa.Column("outputs", sa.JSON, nullable=False),
        sa.Column("tasks_total", sa.Integer, nullable=False),
        sa.Column("tasks_done", sa.Integer, nullable=False),
        sa.Column("tasks_failed", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("finished_at", sa.Double, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("context", _Digest, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("leased_by", sa.String(32), nullable=True),
        sa.Column("deadline", sa.Double, nullable=True),
        sa.Column("queued_at", sa.Double, nullable=True),
        sa.Column("pending", sa.Integer, nullable=False),
        sa.Column("dependents", sa.JSON, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("done_by", sa.String(32), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("error_by", sa.String(32), nullable=True),
        sa.Column("error_attempt", sa.Integer, nullable=True),
    )
    op.create_index("ix_tasks_job_id", "tasks", ["job_id"])
    op.create_index("ix_tasks_leased_by", "tasks", ["leased_by"])
    op.create_index("ix_tasks_state_queued_at", "tasks", ["state", "queued_at"])
    op.create_table(
        "results",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("step_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("digest", _Digest, nullable=False),
        sa.Column("task_id", sa.String(48), nullable=True),
    )
    op.create_table(
        "events",
        sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("task_id", sa.String(48), nullable=True),
        sa.Column("worker_id", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_index("ix_events_job_id", "events", ["job_id"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("results")
    op.drop_table("tasks")
    op.drop_table("jobs")
    op.drop_table("blobs")
    op.drop_table("contexts")
    op.drop_table("workers")
