"""The append-only event log: every job, task and worker state change is one row.

Services call :func:`append` inside the same transaction as the change it records, so
the log and the state never disagree (a rolled-back request leaves no event). Readers
use :func:`for_job`, or :func:`follow` for a replay-then-live stream that ends with the
job. Rows are never updated or deleted here.

It does not decide anything: the services do. Event kinds for jobs are those of
``wire.JobEvent`` (submitted, task_ready, task_leased, task_done, task_failed, done,
failed); worker events (registered, suspect, dead, alive) have no job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import sqlalchemy as sa

from hswarm import wire
from hswarm.queen import statements, store

JOB_ENDS = frozenset({"done", "failed"})
# Events after which a task may be leasable: a transaction that appends one made work.
READYING = frozenset({"task_ready", "task_reset"})
_READIED = "hswarm.readied"  # conn.info key, set by an append of a READYING event


def readied(conn: sa.Connection) -> bool:
    """Whether a READYING event was appended on this connection since the last call; the
    mark is cleared (it lives in ``conn.info``, which outlasts the transaction, so call it
    once when a transaction starts and once before it commits)."""
    return bool(conn.info.pop(_READIED, False))


_INSERT = sa.insert(store.events)


def append(
    conn: sa.Connection,
    kind: str,
    at: float,
    *,
    job_id: str | None = None,
    task_id: str | None = None,
    worker_id: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> None:
    conn.execute(
        sa.insert(store.events).values(
            at=at, job_id=job_id, task_id=task_id, worker_id=worker_id, kind=kind, data=dict(data or {})
        )
    )
    if kind in READYING:
        conn.info[_READIED] = True


def append_many(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Append several events at once; each row has the keyword names of :func:`append`."""
    if rows:
        full = [{"job_id": None, "task_id": None, "worker_id": None, "data": {}, **row} for row in rows]
        statements.execute_many(conn, _INSERT, full)
        if any(row["kind"] in READYING for row in rows):
            conn.info[_READIED] = True


def for_job(conn: sa.Connection, job_id: str, after: int = 0, limit: int = 1000) -> list[wire.JobEvent]:
    """A job's events with ``seq > after``, oldest first."""
    query = (
        sa.select(store.events)
        .where(store.events.c.job_id == job_id, store.events.c.seq > after)
        .order_by(store.events.c.seq)
        .limit(limit)
    )
    return [
        wire.JobEvent(
            seq=row.seq, job_id=row.job_id, kind=row.kind, task_id=row.task_id, at=row.at, data=row.data
        )
        for row in conn.execute(query)
    ]


async def follow(db: store.Store, job_id: str, poll_s: float = 0.2) -> AsyncIterator[wire.JobEvent]:
    """A job's events from the first, then new ones as they are committed, until the job
    ends (its ``done`` or ``failed`` event has been yielded).

    On PostgreSQL a transaction may commit after another that took a later ``seq``, so
    each poll looks back a window of sequence numbers and yields what it has not yet;
    such a late event arrives after higher ones. SQLite writers are serialized: no window.
    """
    window = 0 if db.dialect == "sqlite" else 256
    seen: set[int] = set()
    after = 0
    ended = False
    while True:
        batch = await anyio.to_thread.run_sync(_read, db, job_id, max(0, after - window))
        fresh = [event for event in batch if event.seq not in seen]
        for event in fresh:
            seen.add(event.seq)
            after = max(after, event.seq)
            ended = ended or event.kind in JOB_ENDS
            yield event
        if ended and not fresh:
            return
        if not fresh:
            await anyio.sleep(poll_s)


def _read(db: store.Store, job_id: str, after: int) -> list[wire.JobEvent]:
    with db.read() as conn:
        return for_job(conn, job_id, after)
