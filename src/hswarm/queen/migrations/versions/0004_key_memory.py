"""Key-set memory: ``contexts.memory``, the bytes an executor needs to hold the keys.

The queen measures it when a context is uploaded (its trial load in a forked child, with
headroom for evaluation) and never leases a task to a worker whose memory budget is
smaller. Contexts stored before this revision get 0: unknown, routed anywhere.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contexts") as batch:
        batch.add_column(sa.Column("memory", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("contexts") as batch:
        batch.drop_column("memory")
