"""The task queue: leases, heartbeats, results, and the sweeper that takes leases back.

A task moves ``waiting → ready → leased → done``; a lease is one claim, numbered by the
task's ``attempt``. The rules of ``docs/protocol.md``:

- :func:`lease` claims up to ``max_tasks`` ready tasks race-free (``Store.write`` plus
  ``store.claim_ready``), increments ``attempt`` and sets ``deadline = now + lease_ttl_s``;
  :func:`wait_for_lease` long-polls it without blocking the event loop.
- :func:`heartbeat` renews the caller's unexpired leases and names the ones it lost.
- :func:`accept_result` takes a result only from the lease holder, for that attempt,
  before the deadline; a repeat of an accepted result is a duplicate that changes
  nothing. Outputs make dependents ready and finish the job with its last task; an
  ``error`` re-queues the task until ``max_attempts`` claims, then fails the job.
- :func:`sweep` returns expired leases to the queue (or fails the job when the task has
  used its attempts), marks silent workers suspect, then dead, and re-queues a dead
  worker's leases at once.

Every state change appends an event in the same transaction. It knows nothing of HTTP
and never looks inside a blob; replication and quorum (``swarm``) come later.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import anyio
import sqlalchemy as sa

from hswarm import errors, wire
from hswarm.queen import blobs, events, refusals, settings, store

_T, _W, _J = store.tasks, store.workers, store.jobs


class Doorbell:
    """Wakes long-polling lessees when tasks may have become ready. Loop thread only."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ring(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)


# How often a long poll looks again without a ring: another queen process sharing a
# PostgreSQL store, or a lease that expires, rings no bell here.
POLL_INTERVAL_S = 0.5


async def wait_for_lease(
    db: store.Store,
    cfg: settings.QueenSettings,
    worker_id: str,
    request: wire.LeaseRequest,
    bell: Doorbell,
) -> wire.LeaseGrant:
    """:func:`lease`, retried until a task is granted or ``wait_s`` has passed."""
    give_up = time.monotonic() + min(request.wait_s, cfg.long_poll_max_s)
    while True:
        grant = await anyio.to_thread.run_sync(lease, db, cfg, worker_id, request)
        left = give_up - time.monotonic()
        if grant.tasks or left <= 0:
            return grant
        await bell.wait(min(left, POLL_INTERVAL_S))


def lease(
    db: store.Store,
    cfg: settings.QueenSettings,
    worker_id: str,
    request: wire.LeaseRequest,
    now: float | None = None,
) -> wire.LeaseGrant:
    """Claim up to ``request.max_tasks`` ready tasks for a worker, without waiting."""
    with db.read() as conn:  # most polls find nothing: don't take the write lock for them
        if conn.execute(sa.select(_T.c.id).where(_T.c.state == "ready").limit(1)).first() is None:
            return wire.LeaseGrant(tasks=[])
    now = time.time() if now is None else now
    with db.write() as conn:
        ids = store.claim_ready(conn, request.max_tasks, list(request.contexts))
        if not ids:
            return wire.LeaseGrant(tasks=[])
        deadline = now + cfg.lease_ttl_s
        conn.execute(
            sa.update(_T)
            .where(_T.c.id.in_(ids))
            .values(state="leased", leased_by=worker_id, attempt=_T.c.attempt + 1, deadline=deadline)
        )
        _touch(conn, worker_id, now)
        rows = conn.execute(sa.select(_T).where(_T.c.id.in_(ids)).order_by(_T.c.queued_at, _T.c.id)).all()
        known = _job_values(conn, rows)
        events.append_many(
            conn,
            [
                {
                    "kind": "task_leased",
                    "at": now,
                    "job_id": row.job_id,
                    "task_id": row.id,
                    "worker_id": worker_id,
                    "data": {"worker_id": worker_id, "attempt": row.attempt},
                }
                for row in rows
            ],
        )
    return wire.LeaseGrant(tasks=[_spec(row, known[row.job_id]) for row in rows])


def heartbeat(
    db: store.Store,
    cfg: settings.QueenSettings,
    worker_id: str,
    beat: wire.Heartbeat,
    now: float | None = None,
) -> wire.HeartbeatReply:
    """Renew the listed leases this worker still holds; the others are cancelled."""
    now = time.time() if now is None else now
    deadline = now + cfg.lease_ttl_s
    with db.write() as conn:
        renewed: set[str] = set()
        if beat.leases:
            renewed = set(
                conn.execute(
                    sa.update(_T)
                    .where(
                        _T.c.id.in_(sorted(set(beat.leases))),
                        _T.c.leased_by == worker_id,
                        _T.c.state == "leased",
                        _T.c.deadline >= now,
                    )
                    .values(deadline=deadline)
                    .returning(_T.c.id)
                ).scalars()
            )
        _touch(conn, worker_id, now, load=beat.load, contexts=list(beat.contexts))
    return wire.HeartbeatReply(
        renewed=[t for t in beat.leases if t in renewed],
        cancelled=[t for t in beat.leases if t not in renewed],
        deadline=deadline,
    )


def accept_result(
    db: store.Store,
    cfg: settings.QueenSettings,
    worker_id: str,
    result: wire.TaskResult,
    now: float | None = None,
) -> wire.ResultReceipt:
    """Record a task's outputs (or its error) from the worker that holds its lease."""
    if result.error is not None and result.outputs:
        raise errors.ProgramError("cannot accept the result: send outputs or an error, not both")
    now = time.time() if now is None else now
    with db.write() as conn:
        row = conn.execute(sa.select(_T).where(_T.c.id == result.task_id).with_for_update()).one_or_none()
        if row is None:
            raise refusals.NotFoundError(f"cannot accept the result: no task {result.task_id}")
        if _is_repeat(conn, row, worker_id, result):
            return wire.ResultReceipt(accepted=True, duplicate=True)
        if row.state != "leased" or row.leased_by != worker_id or row.attempt != result.attempt:
            raise refusals.ConflictError(
                f"cannot accept the result for task {row.id} attempt {result.attempt}: it is not leased "
                f"to this worker for that attempt (task is {row.state}, attempt {row.attempt}); "
                "drop it and lease again"
            )
        if row.deadline < now:
            raise refusals.ConflictError(
                f"cannot accept the result for task {row.id}: its lease expired {now - row.deadline:.1f} s "
                "ago; heartbeat more often than lease_ttl_s"
            )
        if result.error is not None:
            conn.execute(
                sa.update(_T)
                .where(_T.c.id == row.id)
                .values(error=result.error, error_by=worker_id, error_attempt=result.attempt)
            )
            _requeue_or_fail(conn, cfg, row, now, "error", result.error)
        else:
            _record_outputs(conn, row, worker_id, result, now)
        _touch(conn, worker_id, now)
    return wire.ResultReceipt(accepted=True)


def sweep(db: store.Store, cfg: settings.QueenSettings, now: float | None = None) -> dict[str, int]:
    """Take back expired leases and leases of dead workers; mark silent workers.
    Returns how many leases were expired or requeued and workers marked."""
    now = time.time() if now is None else now
    suspect_before, dead_before = now - cfg.suspect_after_s, now - cfg.dead_after_s
    expired_q = sa.select(_T).where(_T.c.state == "leased", _T.c.deadline < now)
    dying_q = sa.select(_W.c.id).where(_W.c.state.in_(("alive", "suspect")), _W.c.last_seen < dead_before)
    silent_q = sa.select(_W.c.id).where(_W.c.state == "alive", _W.c.last_seen < suspect_before)
    with db.read() as conn:
        if not any(conn.execute(q.limit(1)).first() for q in (expired_q, dying_q, silent_q)):
            return {"expired": 0, "dead": 0, "suspect": 0, "requeued": 0}
    report = {"expired": 0, "dead": 0, "suspect": 0, "requeued": 0}
    with db.write() as conn:
        dead = list(conn.execute(dying_q.with_for_update(skip_locked=True)).scalars())
        if dead:
            conn.execute(sa.update(_W).where(_W.c.id.in_(dead)).values(state="dead"))
            events.append_many(conn, [{"kind": "dead", "at": now, "worker_id": w} for w in dead])
            orphans = conn.execute(
                sa.select(_T)
                .where(_T.c.state == "leased", _T.c.leased_by.in_(dead))
                .with_for_update(skip_locked=True)  # one being answered now: the next sweep
            ).all()
            for row in orphans:
                _requeue_or_fail(conn, cfg, row, now, "worker_dead")
            report["dead"], report["requeued"] = len(dead), len(orphans)
        suspect = list(
            conn.execute(
                sa.update(_W)
                .where(_W.c.state == "alive", _W.c.last_seen < suspect_before)
                .values(state="suspect")
                .returning(_W.c.id)
            ).scalars()
        )
        events.append_many(conn, [{"kind": "suspect", "at": now, "worker_id": w} for w in suspect])
        report["suspect"] = len(suspect)
        expired = conn.execute(expired_q.with_for_update(skip_locked=True)).all()
        for row in expired:
            _requeue_or_fail(conn, cfg, row, now, "lease_expired")
        report["expired"] = len(expired)
    return report


# -- state changes inside one transaction ------------------------------------------------
# PostgreSQL row locks are taken in one order, tasks -> job -> worker, so two requests of
# one worker (a heartbeat and a result) cannot deadlock; the sweeper, which starts from
# workers, only ever skips locked tasks.


def _touch(
    conn: sa.Connection,
    worker_id: str,
    now: float,
    load: float | None = None,
    contexts: list[str] | None = None,
) -> None:
    """The worker spoke: it is alive (again)."""
    before = conn.execute(sa.select(_W.c.state).where(_W.c.id == worker_id)).scalar_one()
    values: dict[str, Any] = {"last_seen": now, "state": "alive"}
    if load is not None:
        values["load"] = load
    if contexts is not None:
        values["contexts"] = contexts
    conn.execute(sa.update(_W).where(_W.c.id == worker_id).values(**values))
    if before != "alive":
        events.append(conn, "alive", now, worker_id=worker_id, data={"was": before})


def _is_repeat(conn: sa.Connection, row: Any, worker_id: str, result: wire.TaskResult) -> bool:
    """True for a resend of the result already accepted from this worker for this attempt."""
    if result.error is not None:
        return row.error_by == worker_id and row.error_attempt == result.attempt
    if row.state != "done" or row.done_by != worker_id or row.attempt != result.attempt:
        return False
    stored = dict(
        conn.execute(
            sa.select(store.results.c.step_id, store.results.c.digest).where(
                store.results.c.job_id == row.job_id, store.results.c.task_id == row.id
            )
        ).all()
    )
    if stored != dict(result.outputs):
        raise refusals.ConflictError(
            f"cannot accept the result for task {row.id} attempt {result.attempt}: a different result "
            "was already accepted for it"
        )
    return True


def _record_outputs(
    conn: sa.Connection, row: Any, worker_id: str, result: wire.TaskResult, now: float
) -> None:
    wanted = row.spec["outputs"]
    if sorted(result.outputs) != sorted(wanted):
        raise errors.ProgramError(
            f"cannot accept the result for task {row.id}: outputs must be steps {sorted(wanted)}, "
            f"got {sorted(result.outputs)}"
        )
    absent = blobs.missing(conn, set(result.outputs.values()))
    if absent:
        raise refusals.ConflictError(
            f"cannot accept the result for task {row.id}: output blobs {sorted(absent)} are not "
            "uploaded; PUT them before posting the result"
        )
    conn.execute(
        sa.update(_T)
        .where(_T.c.id == row.id)
        .values(state="done", leased_by=None, deadline=None, done_by=worker_id)
    )
    conn.execute(
        sa.insert(store.results),
        [
            {"job_id": row.job_id, "step_id": sid, "digest": digest, "task_id": row.id}
            for sid, digest in sorted(result.outputs.items())
        ],
    )
    log: list[dict[str, Any]] = [
        {
            "kind": "task_done",
            "at": now,
            "job_id": row.job_id,
            "task_id": row.id,
            "worker_id": worker_id,
            "data": {"worker_id": worker_id, "attempt": row.attempt, "seconds": result.seconds},
        }
    ]
    if row.dependents:
        # UPDATE ... RETURNING decrements under row locks: when two dependencies finish at
        # once (PostgreSQL), the second sees the first's decrement, so one of them sees zero.
        ready = conn.execute(
            sa.update(_T)
            .where(_T.c.job_id == row.job_id, _T.c.index.in_(row.dependents), _T.c.state == "waiting")
            .values(pending=_T.c.pending - 1)
            .returning(_T.c.id, _T.c.pending)
        ).all()
        now_ready = [tid for tid, pending in ready if pending == 0]
        if now_ready:
            conn.execute(sa.update(_T).where(_T.c.id.in_(now_ready)).values(state="ready", queued_at=now))
            log += [{"kind": "task_ready", "at": now, "job_id": row.job_id, "task_id": t} for t in now_ready]
    total, done, state = conn.execute(
        sa.update(_J)
        .where(_J.c.id == row.job_id)
        .values(tasks_done=_J.c.tasks_done + 1)
        .returning(_J.c.tasks_total, _J.c.tasks_done, _J.c.state)
    ).one()
    conn.execute(sa.update(_W).where(_W.c.id == worker_id).values(done=_W.c.done + 1))
    if done == total and state == "running":
        conn.execute(sa.update(_J).where(_J.c.id == row.job_id).values(state="done", finished_at=now))
        log.append({"kind": "done", "at": now, "job_id": row.job_id, "data": {"tasks": total}})
    events.append_many(conn, log)


def _requeue_or_fail(
    conn: sa.Connection,
    cfg: settings.QueenSettings,
    row: Any,
    now: float,
    reason: str,
    error: str | None = None,
) -> None:
    """A lease ended without a result: back to ready, or fail the job after max_attempts."""
    still_leased = (
        _T.c.id == row.id,
        _T.c.state == "leased",
        _T.c.leased_by == row.leased_by,
        _T.c.attempt == row.attempt,
    )
    if conn.execute(sa.select(_T.c.id).where(*still_leased)).first() is None:
        return  # its job failed earlier in this transaction: nothing left to take back
    data = {"reason": reason, "attempt": row.attempt, "worker_id": row.leased_by}
    if error is not None:
        data["error"] = error
    log: list[dict[str, Any]] = []
    if row.attempt < cfg.max_attempts:
        conn.execute(
            sa.update(_T)
            .where(*still_leased)
            .values(state="ready", leased_by=None, deadline=None, queued_at=now)
        )
        if error is not None:
            log.append(
                {"kind": "task_failed", "at": now, "job_id": row.job_id, "task_id": row.id, "data": data}
            )
        log.append({"kind": "task_ready", "at": now, "job_id": row.job_id, "task_id": row.id, "data": data})
        events.append_many(conn, log)
        return
    message = (
        f"task {row.index} failed {row.attempt} times (last: {reason}"
        + (f": {error}" if error else "")
        + f"); max_attempts is {cfg.max_attempts}"
    )
    events.append(conn, "task_failed", now, job_id=row.job_id, task_id=row.id, data={**data, "final": True})
    _fail_job(conn, row.job_id, message, now)


def _fail_job(conn: sa.Connection, job_id: str, message: str, now: float) -> None:
    """A failed job has no live task left: its leases are cancelled, nothing more is leased."""
    conn.execute(
        sa.update(_T)
        .where(_T.c.job_id == job_id, _T.c.state.in_(("waiting", "ready", "leased")))
        .values(state="failed", leased_by=None, deadline=None)
    )
    failed = conn.execute(
        sa.select(sa.func.count()).where(_T.c.job_id == job_id, _T.c.state == "failed")
    ).scalar_one()
    conn.execute(
        sa.update(_J)
        .where(_J.c.id == job_id, _J.c.state == "running")
        .values(
            state="failed", error=f"cannot finish the job: {message}", finished_at=now, tasks_failed=failed
        )
    )
    events.append(conn, "failed", now, job_id=job_id, data={"error": message})


# -- lease answers ------------------------------------------------------------------------


def _job_values(conn: sa.Connection, rows: list[Any]) -> dict[str, dict[int, str]]:
    """Known step digests (program inputs and task outputs) of the jobs these tasks belong to."""
    wanted: dict[str, set[int]] = {}
    for row in rows:
        wanted.setdefault(row.job_id, set()).update(row.spec["inputs"])
    steps = sorted(set().union(*wanted.values())) if wanted else []
    query = sa.select(store.results.c.job_id, store.results.c.step_id, store.results.c.digest).where(
        store.results.c.job_id.in_(sorted(wanted)), store.results.c.step_id.in_(steps)
    )
    known: dict[str, dict[int, str]] = {job: {} for job in wanted}
    for job_id, step_id, digest in conn.execute(query):
        known[job_id][step_id] = digest
    return known


def _spec(row: Any, known: dict[int, str]) -> wire.TaskSpec:
    spec = row.spec
    missing = [sid for sid in spec["inputs"] if sid not in known]
    if missing:  # a ready task's inputs all exist; anything else is a queen bug
        raise RuntimeError(f"task {row.id} is ready but steps {missing} have no digest")
    return wire.TaskSpec(
        task_id=row.id,
        job_id=row.job_id,
        attempt=row.attempt,
        deadline=row.deadline,
        context=row.context,
        steps=[wire.TaskStep(id=s[0], op=s[1], args=s[2], attrs=s[3]) for s in spec["steps"]],
        inputs={sid: known[sid] for sid in spec["inputs"]},
        outputs=list(spec["outputs"]),
    )
