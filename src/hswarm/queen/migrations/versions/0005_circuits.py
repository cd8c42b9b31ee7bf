"""Circuits: a job's compiled program and output step ids move to their own table.

Both are written once, at submission, and can be large (the circuit of a job of 4000
one-step tasks is 1.3 MB of JSON). In the ``jobs`` row they made every progress update
rewrite them: SQLite rewrites a whole row, overflow pages included, to change one
counter, so a result batch's ``tasks_done`` update grew with the size of its job (1.35
ms for 4000 tasks against 0.07 ms for 500). The ``jobs`` row is now small and hot;
``circuits`` is cold.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "circuits",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("circuit", sa.JSON, nullable=False),
        sa.Column("outputs", sa.JSON, nullable=False),
    )
    op.execute("INSERT INTO circuits (job_id, circuit, outputs) SELECT id, circuit, outputs FROM jobs")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): a batch copy of ``jobs`` would drop
    # the table that tasks, replicas and results refer to.
    with op.batch_alter_table("jobs", recreate="never") as batch:
        batch.drop_column("circuit")
        batch.drop_column("outputs")


def downgrade() -> None:
    # The restored columns keep a server default: SQLite cannot drop one without copying
    # the table (see above).
    with op.batch_alter_table("jobs", recreate="never") as batch:
        batch.add_column(sa.Column("circuit", sa.JSON, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("outputs", sa.JSON, nullable=False, server_default="[]"))
    op.execute(
        "UPDATE jobs SET circuit = (SELECT circuit FROM circuits WHERE circuits.job_id = jobs.id), "
        "outputs = (SELECT outputs FROM circuits WHERE circuits.job_id = jobs.id)"
    )
    op.drop_table("circuits")
