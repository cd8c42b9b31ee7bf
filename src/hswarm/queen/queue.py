"""The task queue: replicas, leases, votes, verdicts, and the sweeper that takes leases back.

A task moves ``waiting → ready → leased → done``. It is ``ready`` while it *wants*
replicas and ``leased`` while every wanted replica is out; each replica is one lease of
one worker, numbered by the task's ``attempt`` counter, and ends as a vote (its outputs'
digest), an error, or lost (expired, its worker dead or caught lying). The rules of
``docs/protocol.md`` and ``docs/verification.md``:

- :func:`lease` offers a worker ready tasks it is eligible for (its determinism class, no
  replica of its owner yet, audits for guardians first), picks among them with the
  routing strategy of ``swarm.routing``, and decides there whether adaptive replication
  (``swarm.reputation``) lets a trusted worker run a fresh task alone, and whether a
  guardian audits it.
- :func:`heartbeat` renews the caller's unexpired leases and names the ones it lost.
- :func:`accept_results` records each result as a vote, only from the lease holder, for
  that attempt, before the deadline; a repeat is a duplicate that changes nothing. When
  a task has no replica out, ``swarm.quorum.judge`` decides: accepted (outputs become
  the job's results, dependents get ready, voters gain standing and pheromone, every
  liar is quarantined and its unconfirmed results in open jobs are re-run), more
  replicas, or undecidable (the job fails). An error result or a lost lease counts
  against ``max_attempts``.
- :func:`sweep` returns expired leases, marks silent workers suspect, then dead, and
  takes back a dead worker's leases at once.

Every state change appends an event in the same transaction. It knows nothing of HTTP
and never looks inside a blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import sqlalchemy as sa

from hswarm import errors, wire
from hswarm.queen import blobs, events, jobs, membership, refusals, settings, statements, store
from hswarm.swarm import quorum, reputation, routing

_T, _W, _J, _R = store.tasks, store.workers, store.jobs, store.replicas


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


OTHERS_SAMPLE = 32  # other workers a routing decision compares the asker with
# How often a long poll looks again without a ring: another queen process sharing a
# PostgreSQL store, or a lease that expires, rings no bell here.
POLL_INTERVAL_S = 0.5


async def wait_for_lease(
    db: store.Store,
    cfg: settings.QueenSettings,
    worker_id: str,
    request: wire.LeaseRequest,
    bell: Doorbell,
    trails: routing.Trails | None = None,
    run: Callable[[Callable[[], wire.LeaseGrant]], Awaitable[wire.LeaseGrant]] = anyio.to_thread.run_sync,
) -> wire.LeaseGrant:
    """:func:`lease`, retried until a task is granted or ``wait_s`` has passed; ``run``
    runs each try (in a worker thread unless told otherwise)."""
    give_up = time.monotonic() + min(request.wait_s, cfg.long_poll_max_s)
    take = functools.partial(lease, db, cfg, worker_id, request, trails=trails)
    while True:
        grant = await run(take)
        left = give_up - time.monotonic()
        if grant.tasks or left <= 0:
            return grant
        await bell.wait(min(left, POLL_INTERVAL_S))


def vote_digest(outputs: dict[int, str]) -> str:
    """One digest for a task's whole result: what replicas are compared on."""
    canonical = json.dumps({str(k): v for k, v in sorted(outputs.items())}, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


# Statements of the hot paths, built once (building and caching one costs more than
# SQLite takes to run it); IN lists expand at execution.
_IDS = sa.bindparam("ids", expanding=True)
_WORKER = sa.select(_W).where(_W.c.id == sa.bindparam("b_worker"))
_TOUCH = (
    sa.update(_W)
    .where(_W.c.id == sa.bindparam("b_worker"), _W.c.state == "alive")
    .values(last_seen=sa.bindparam("b_now"))
    .returning(_W)
)
_BEAT = (  # a heartbeat's touch: it also reports load and cached key sets
    sa.update(_W)
    .where(_W.c.id == sa.bindparam("b_worker"), _W.c.state == "alive")
    .values(
        last_seen=sa.bindparam("b_now"),
        load=sa.bindparam("b_load", type_=_W.c.load.type),
        contexts=sa.bindparam("b_contexts", type_=_W.c.contexts.type),
    )
    .returning(_W)
)
_GUARDIANS_ALIVE = sa.select(_W.c.id, _W.c.owner).where(
    _W.c.role == "guardian", _W.c.state == "alive", ~_W.c.quarantined
)
_JOB_POLICIES = sa.select(_J.c.id, _J.c.verify, _J.c.quorum).where(_J.c.id.in_(_IDS))
_LEASED = (
    sa.update(_T)
    .where(_T.c.id == sa.bindparam("tid"))
    .values(
        attempt=sa.bindparam("attempt"),
        wanted=sa.bindparam("wanted"),
        in_flight=sa.bindparam("in_flight"),
        single=sa.bindparam("single"),
        audit=sa.bindparam("audit"),
        dclass=sa.bindparam("dclass"),
        state=sa.bindparam("state"),
    )
)
_INSERT_REPLICAS = sa.insert(_R)
_CONTEXT_MEMORY = sa.select(store.contexts.c.digest, store.contexts.c.memory).where(
    store.contexts.c.digest.in_(_IDS)
)
_KNOWN_STEPS = sa.select(store.results.c.job_id, store.results.c.step_id, store.results.c.digest).where(
    store.results.c.job_id.in_(sa.bindparam("jobs", expanding=True)),
    store.results.c.step_id.in_(sa.bindparam("steps", expanding=True)),
)


def lease(
    db: store.Store,
    cfg: settings.QueenSettings,
    worker_id: str,
    request: wire.LeaseRequest,
    now: float | None = None,
    rng: random.Random | None = None,
    trails: routing.Trails | None = None,
) -> wire.LeaseGrant:
    """Lease up to ``request.max_tasks`` replicas of ready tasks to a worker, without waiting."""
    with db.read() as conn:  # most polls find nothing: don't take the write lock for them
        me = _worker(conn, worker_id)
        _check_not_quarantined(me)
        if not store.any_ready_for(
            conn,
            owner=membership.owner_key(me.owner, me.id),
            worker_id=me.id,
            dclass=me.determinism_class,
            memory=me.memory_bytes,
        ):
            return wire.LeaseGrant(tasks=[])
    now = time.time() if now is None else now
    rng = rng or random.Random()

    def claim(conn: sa.Connection) -> wire.LeaseGrant:
        me = _touch(conn, worker_id, now)
        _check_not_quarantined(me)
        owner = membership.owner_key(me.owner, me.id)
        guardian = me.role == "guardian"
        guardians = _guardian_owners(conn)
        warm = frozenset(request.contexts) | frozenset(me.contexts or [])  # key sets it holds
        rows = store.ready_for(
            conn,
            owner=owner,
            worker_id=me.id,
            dclass=me.determinism_class,
            may_audit=guardian or not guardians,
            audits_first=guardian,
            # fifo grants the oldest: no wider offer to choose from (nor rows to lock)
            limit=request.max_tasks if cfg.routing == "fifo" else max(4 * request.max_tasks, 16),
            memory=me.memory_bytes,
            warm=sorted(warm),
        )
        chosen = _route(conn, cfg, me, warm, request, rows, now, rng, trails)
        if not chosen:
            return wire.LeaseGrant(tasks=[])
        policies = _policies(conn, cfg, {row.job_id for row in chosen})
        trust = cfg.trust_policy()
        standing = _standing(me)
        deadline = now + cfg.lease_ttl_s
        replicas, updates, log = [], [], []
        for row in chosen:
            verify, need = policies[row.job_id]
            single, audit, wanted, auditing = row.single, row.audit, row.wanted - 1, False
            if single and audit and row.attempt > 0:
                auditing = True  # the trusted worker has its replica; this one checks it
            elif verify and need > 1 and row.attempt == 0 and guardian:
                single, wanted = True, 0  # a guardian is trusted: its vote alone settles it
            elif (
                verify
                and need > 1
                and row.attempt == 0
                and not reputation.should_replicate(standing, trust, rng.random())
            ):
                single, wanted = True, 0  # adaptive replication: a trusted worker runs it alone
                if reputation.should_audit(trust, rng.random()):
                    if guardians - {owner}:
                        audit, wanted = True, 1  # an audit slot that a guardian will take
                    else:  # no guardian of another owner to audit it: replicate it instead
                        single, wanted = False, row.wanted - 1
            attempt = row.attempt + 1
            updates.append(
                {
                    "tid": row.id,
                    "attempt": attempt,
                    "wanted": wanted,
                    "in_flight": row.in_flight + 1,
                    "single": single,
                    "audit": audit,
                    "dclass": me.determinism_class,
                    "state": "ready" if wanted > 0 else "leased",
                }
            )
            replicas.append(
                {
                    "task_id": row.id,
                    "attempt": attempt,
                    "job_id": row.job_id,
                    "worker_id": me.id,
                    "owner": owner,
                    "dclass": me.determinism_class,
                    "guardian": guardian,
                    "audit": auditing,
                    "state": "leased",
                    "leased_at": now,
                    "deadline": deadline,
                }
            )
            data = {"worker_id": me.id, "attempt": attempt}
            if single and row.attempt == 0:
                data["single"] = True
            if auditing:
                data["audit"] = True
            log.append(
                {
                    "kind": "task_leased",
                    "at": now,
                    "job_id": row.job_id,
                    "task_id": row.id,
                    "worker_id": me.id,
                    "data": data,
                }
            )
        statements.execute_many(conn, _LEASED, updates)
        statements.execute_many(conn, _INSERT_REPLICAS, replicas)
        events.append_many(conn, log)
        known = _job_values(conn, chosen)
        memory = dict(
            statements.fetch(conn, _CONTEXT_MEMORY, {"ids": sorted({row.context for row in chosen})})
        )
        by_id = {u["tid"]: u for u in updates}
        return wire.LeaseGrant(
            tasks=[
                _spec(row, by_id[row.id]["attempt"], deadline, known[row.job_id], memory.get(row.context, 0))
                for row in chosen
            ]
        )

    return db.run_write(claim)


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

    def renew(conn: sa.Connection) -> set[str]:
        renewed: set[str] = set()
        if beat.leases:
            renewed = set(
                conn.execute(
                    sa.update(_R)
                    .where(
                        _R.c.task_id.in_(sorted(set(beat.leases))),
                        _R.c.worker_id == worker_id,
                        _R.c.state == "leased",
                        _R.c.deadline >= now,
                    )
                    .values(deadline=deadline)
                    .returning(_R.c.task_id)
                ).scalars()
            )
        _touch(conn, worker_id, now, beat)
        return renewed

    renewed = db.run_write(renew)
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
    trails: routing.Trails | None = None,
    on_ready: Callable[[], None] | None = None,
) -> wire.ResultReceipt:
    """One result; a refusal is raised (the HTTP status says why). ``on_ready`` is called
    after the commit if the result made a task leasable (a dependent, more replicas)."""
    now = time.time() if now is None else now

    def record(conn: sa.Connection) -> tuple[wire.ResultReceipt, bool]:
        events.readied(conn)
        batch = _Batch(conn, cfg, worker_id, now, trails, [result])
        receipt = batch.take(result)
        batch.flush()
        if not receipt.duplicate:
            _touch(conn, worker_id, now)
        return receipt, events.readied(conn)

    receipt, readied = db.run_write(record)
    if readied and on_ready is not None:
        on_ready()
    return receipt


def accept_results(
    db: store.Store,
    cfg: settings.QueenSettings,
    worker_id: str,
    results: Iterable[wire.TaskResult],
    now: float | None = None,
    trails: routing.Trails | None = None,
    on_ready: Callable[[], None] | None = None,
) -> list[wire.ResultReceipt]:
    """Several results in one transaction; each is taken or refused on its own (a refused
    one changes nothing: every check runs before that result's first write). ``on_ready``
    as for :func:`accept_result`."""
    now = time.time() if now is None else now
    batch = list(results)
    order = sorted(range(len(batch)), key=lambda i: batch[i].task_id)  # one lock order for all

    def record(conn: sa.Connection) -> tuple[list[wire.ResultReceipt], bool]:
        events.readied(conn)
        taken = _Batch(conn, cfg, worker_id, now, trails, batch)
        receipts: dict[int, wire.ResultReceipt] = {}
        for i in order:
            try:
                receipts[i] = taken.take(batch[i])
            except errors.HSwarmError as exc:
                _status, code = refusals.classify(exc)
                body = wire.ErrorBody(code=code, message=str(exc))
                receipts[i] = wire.ResultReceipt(accepted=False, error=body)
        taken.flush()
        if any(r.accepted and not r.duplicate for r in receipts.values()):
            _touch(conn, worker_id, now)
        return [receipts[i] for i in range(len(batch))], events.readied(conn)

    receipts, readied = db.run_write(record)
    if readied and on_ready is not None:
        on_ready()
    return receipts


def sweep(
    db: store.Store,
    cfg: settings.QueenSettings,
    now: float | None = None,
    trails: routing.Trails | None = None,
) -> dict[str, int]:
    """Take back expired leases and leases of dead workers; mark silent workers.
    Returns how many leases were expired or requeued and workers marked."""
    now = time.time() if now is None else now
    suspect_before, dead_before = now - cfg.suspect_after_s, now - cfg.dead_after_s
    expired_q = sa.select(_R).where(_R.c.state == "leased", _R.c.deadline < now)
    dying_q = sa.select(_W.c.id).where(_W.c.state.in_(("alive", "suspect")), _W.c.last_seen < dead_before)
    silent_q = sa.select(_W.c.id).where(_W.c.state == "alive", _W.c.last_seen < suspect_before)
    with db.read() as conn:
        if not any(conn.execute(q.limit(1)).first() for q in (expired_q, dying_q, silent_q)):
            return {"expired": 0, "dead": 0, "suspect": 0, "requeued": 0}

    def take_back(conn: sa.Connection) -> dict[str, int]:
        report = {"expired": 0, "dead": 0, "suspect": 0, "requeued": 0}
        dead = list(conn.execute(dying_q.with_for_update(skip_locked=True)).scalars())
        if dead:
            conn.execute(sa.update(_W).where(_W.c.id.in_(dead)).values(state="dead"))
            events.append_many(conn, [{"kind": "dead", "at": now, "worker_id": w} for w in dead])
            orphans = conn.execute(
                sa.select(_R).where(_R.c.state == "leased", _R.c.worker_id.in_(dead))
            ).all()
            for rep in orphans:
                _end_replica(conn, cfg, rep, now, "lost", "worker_dead", trails=trails)
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
        expired = conn.execute(expired_q).all()
        for rep in expired:
            _end_replica(conn, cfg, rep, now, "lost", "lease_expired", trails=trails)
        report["expired"] = len(expired)
        return report

    return db.run_write(take_back)


def release(db: store.Store, worker_id: str, now: float | None = None) -> None:
    """An operator ends a worker's quarantine; its streak starts again from zero."""
    now = time.time() if now is None else now
    with db.write() as conn:
        row = conn.execute(sa.select(_W).where(_W.c.id == worker_id)).one_or_none()
        if row is None:
            raise refusals.NotFoundError(f"cannot release worker {worker_id}: no worker has that id")
        standing = reputation.release(_standing(row))
        conn.execute(
            sa.update(_W)
            .where(_W.c.id == worker_id)
            .values(quarantined=standing.quarantined, streak=standing.streak, quarantined_at=None)
        )
        events.append(conn, "released", now, worker_id=worker_id, data={"was_quarantined": row.quarantined})


# -- state changes inside one transaction ------------------------------------------------
# PostgreSQL row locks are taken in one order, tasks -> replicas -> job -> worker, so two
# requests of one worker (a heartbeat and a result) cannot deadlock.


def _touch(conn: sa.Connection, worker_id: str, now: float, beat: wire.Heartbeat | None = None) -> Any:
    """The worker spoke: it is alive (again); a heartbeat also brings its load and cached
    key sets. Returns its row."""
    if beat is None:
        rows = statements.fetch(conn, _TOUCH, {"b_worker": worker_id, "b_now": now})
        values: dict[str, Any] = {"last_seen": now}
    else:
        contexts = list(beat.contexts)
        params = {"b_worker": worker_id, "b_now": now, "b_load": beat.load, "b_contexts": contexts}
        rows = statements.fetch(conn, _BEAT, params)
        values = {"last_seen": now, "load": beat.load, "contexts": contexts}
    if rows:
        return rows[0]
    before = conn.execute(sa.select(_W.c.state).where(_W.c.id == worker_id)).scalar_one()
    row = conn.execute(
        sa.update(_W).where(_W.c.id == worker_id).values(state="alive", **values).returning(_W)
    ).one()
    events.append(conn, "alive", now, worker_id=worker_id, data={"was": before})
    return row


def _worker(conn: sa.Connection, worker_id: str) -> Any:
    rows = statements.fetch(conn, _WORKER, {"b_worker": worker_id})
    if len(rows) != 1:
        raise sa.exc.NoResultFound(f"no worker {worker_id}")
    return rows[0]


def _check_not_quarantined(worker: Any) -> None:
    if worker.quarantined:
        raise refusals.QuarantinedError(
            f"cannot lease tasks: worker {worker.id} is quarantined after a proven lie; an operator "
            f"can release it (POST /v1/workers/{worker.id}/release)"
        )


def _standing(row: Any) -> reputation.Standing:
    return reputation.Standing(
        streak=row.streak, valid=row.valid, lies=row.lies, quarantined=bool(row.quarantined)
    )


def _guardian_owners(conn: sa.Connection) -> set[str]:
    """Owner keys of the live guardians that are not quarantined (who can audit whom)."""
    return {membership.owner_key(owner, wid) for wid, owner in statements.fetch(conn, _GUARDIANS_ALIVE)}


# A job's (verify, quorum) never changes after its submission, and its id is a random
# uuid: remembered here, every lease and result batch saves a query (a round trip on
# PostgreSQL). Bounded; an evicted job is read again.
_POLICY_MEMORY = 4096
_remembered_policies: dict[str, tuple[bool, int]] = {}


def _policies(
    conn: sa.Connection, cfg: settings.QueenSettings, job_ids: Iterable[str]
) -> dict[str, tuple[bool, int]]:
    """Per job: (verify, votes a replicated task needs)."""
    known = {jid: _remembered_policies.get(jid) for jid in job_ids}
    unknown = sorted(jid for jid, policy in known.items() if policy is None)
    if unknown:
        if len(_remembered_policies) + len(unknown) > _POLICY_MEMORY:
            _remembered_policies.clear()
        for jid, verify, need in conn.execute(_JOB_POLICIES, {"ids": unknown}):
            known[jid] = _remembered_policies[jid] = (bool(verify), need)
    return {jid: policy for jid, policy in known.items() if policy is not None}


def _quorum_policy(cfg: settings.QueenSettings, verify: bool, need: int) -> quorum.QuorumPolicy:
    if not verify:
        return quorum.QuorumPolicy(quorum=1, faults=0, max_replicas=max(1, cfg.max_replicas))
    return quorum.QuorumPolicy(quorum=need, faults=cfg.faults, max_replicas=cfg.max_replicas)


def _route(
    conn: sa.Connection,
    cfg: settings.QueenSettings,
    me: Any,
    warm: frozenset[str],
    request: wire.LeaseRequest,
    rows: list[Any],
    now: float,
    rng: random.Random,
    trails: routing.Trails | None,
) -> list[Any]:
    """The ready tasks this worker gets, by the configured routing strategy."""
    if not rows:
        return []
    if cfg.routing == "fifo":
        return rows[: request.max_tasks]
    asker = routing.Asker(worker=me.id, warm=warm, load=me.load)
    # Other askers that could take these tasks (not of an owner holding a replica of the
    # first offered one), sampled: the strategies compare this worker with them.
    holders = sa.select(_R.c.owner).where(_R.c.task_id == rows[0].id, _R.c.state.in_(("leased", "voted")))
    candidates = conn.execute(
        sa.select(_W.c.id, _W.c.contexts, _W.c.load, _W.c.owner).where(
            _W.c.state == "alive", ~_W.c.quarantined, _W.c.id != me.id
        )
    ).all()
    taken = set(conn.execute(holders).scalars())
    others = [
        routing.Asker(worker=wid, warm=frozenset(ctx or []), load=load)
        for wid, ctx, load, owner in candidates
        if membership.owner_key(owner, wid) not in taken
    ]
    others = rng.sample(others, min(len(others), OTHERS_SAMPLE))
    waiting = conn.execute(sa.select(sa.func.sum(_T.c.wanted)).where(_T.c.state == "ready")).scalar() or 0
    if trails is not None:
        trails.evaporate(now)
    offers = [
        routing.Offer(
            task_id=row.id, trail_key=routing.trail_key(row.context, row.kind), queued_at=row.queued_at
        )
        for row in rows
    ]
    picked = routing.choose(
        cfg.routing,
        asker,
        offers,
        request.max_tasks,
        rng=rng,
        trails=trails,
        others=others,
        params=cfg.pheromone_params(),
        waiting=int(waiting),
    )
    by_id = {row.id: row for row in rows}
    return [by_id[offer.task_id] for offer in picked]


def _accept(
    conn: sa.Connection,
    cfg: settings.QueenSettings,
    worker_id: str,
    result: wire.TaskResult,
    now: float,
    trails: routing.Trails | None,
) -> wire.ResultReceipt:
    """Check one result against its lease, then record it; every refusal comes before a write."""
    if result.error is not None and result.outputs:
        raise errors.ProgramError("cannot accept the result: send outputs or an error, not both")
    task = conn.execute(sa.select(_T).where(_T.c.id == result.task_id).with_for_update()).one_or_none()
    if task is None:
        raise refusals.NotFoundError(f"cannot accept the result: no task {result.task_id}")
    rep = conn.execute(
        sa.select(_R).where(_R.c.task_id == task.id, _R.c.attempt == result.attempt)
    ).one_or_none()
    if _check_lease(task, rep, worker_id, result, now):
        return wire.ResultReceipt(accepted=True, duplicate=True)
    if result.error is not None:
        conn.execute(sa.update(_T).where(_T.c.id == task.id).values(error=result.error))
        _end_replica(conn, cfg, rep, now, "failed", "error", result.error, trails=trails)
        return wire.ResultReceipt(accepted=True)
    _check_outputs(task, result, blobs.missing(conn, set(result.outputs.values())))
    outputs = {str(k): v for k, v in sorted(result.outputs.items())}
    conn.execute(
        sa.update(_R)
        .where(_R.c.task_id == rep.task_id, _R.c.attempt == rep.attempt)
        .values(
            state="voted",
            digest=vote_digest(result.outputs),
            outputs=outputs,
            seconds=result.seconds,
            deadline=None,
        )
    )
    events.append(
        conn,
        "task_voted",
        now,
        job_id=task.job_id,
        task_id=task.id,
        worker_id=worker_id,
        data={"worker_id": worker_id, "attempt": rep.attempt, "seconds": result.seconds},
    )
    task = conn.execute(
        sa.update(_T).where(_T.c.id == task.id).values(in_flight=_T.c.in_flight - 1).returning(_T)
    ).one()
    if task.in_flight == 0:
        _judge(conn, cfg, task, now, trails)
    return wire.ResultReceipt(accepted=True)


def _check_lease(task: Any, rep: Any, worker_id: str, result: wire.TaskResult, now: float) -> bool:
    """Refuse a result that is not for a live lease of this worker; True for a resend."""
    if rep is None or rep.worker_id != worker_id:
        raise refusals.ConflictError(
            f"cannot accept the result for task {task.id} attempt {result.attempt}: it is not leased "
            f"to this worker for that attempt (task is {task.state}, attempt {task.attempt}); "
            "drop it and lease again"
        )
    if _is_repeat(rep, result):
        return True
    if rep.state != "leased":
        raise refusals.ConflictError(
            f"cannot accept the result for task {task.id} attempt {result.attempt}: that lease ended "
            f"({rep.state}); drop it and lease again"
        )
    if rep.deadline < now:
        raise refusals.ConflictError(
            f"cannot accept the result for task {task.id}: its lease expired {now - rep.deadline:.1f} s "
            "ago; heartbeat more often than lease_ttl_s"
        )
    return False


def _check_outputs(task: Any, result: wire.TaskResult, absent: set[str]) -> None:
    """Refuse outputs that are not the task's steps, or whose blobs were not uploaded."""
    wanted = task.spec["outputs"]
    if sorted(result.outputs) != sorted(wanted):
        raise errors.ProgramError(
            f"cannot accept the result for task {task.id}: outputs must be steps {sorted(wanted)}, "
            f"got {sorted(result.outputs)}"
        )
    if absent:
        raise refusals.ConflictError(
            f"cannot accept the result for task {task.id}: output blobs {sorted(absent)} are not "
            "uploaded; PUT them before posting the result"
        )


def _is_repeat(rep: Any, result: wire.TaskResult) -> bool:
    """True for a resend of what this replica already answered; a different answer is a 409."""
    if result.error is not None:
        return rep.state == "failed" and rep.error == result.error
    if rep.state != "voted":
        return False
    if rep.digest != vote_digest(result.outputs):
        raise refusals.ConflictError(
            f"cannot accept the result for task {rep.task_id} attempt {result.attempt}: a different "
            "result was already recorded for it"
        )
    return True


# -- a batch of results, set-based ---------------------------------------------------------
# The common path (a vote that is accepted, or that waits for more replicas) costs a
# constant number of statements per batch, not per result.

_TASKS_LOCKED = sa.select(_T).where(_T.c.id.in_(_IDS)).order_by(_T.c.id).with_for_update()
_REPLICAS_OF = sa.select(_R).where(_R.c.task_id.in_(_IDS))
_BLOBS_PRESENT = sa.select(store.blobs.c.digest).where(store.blobs.c.digest.in_(_IDS))
_VOTE = (
    sa.update(_R)
    .where(_R.c.task_id == sa.bindparam("b_task"), _R.c.attempt == sa.bindparam("b_attempt"))
    .values(
        state="voted",
        digest=sa.bindparam("b_digest"),
        outputs=sa.bindparam("b_outputs", type_=_R.c.outputs.type),
        seconds=sa.bindparam("b_seconds", type_=_R.c.seconds.type),
        deadline=None,
        verdict=sa.bindparam("b_verdict", type_=_R.c.verdict.type),  # set when it wins in this batch
    )
)
# Rows by primary key: with the tables' statistics stale (PostgreSQL analyzes a growing
# table late), a filter on state may be planned as a scan of every voted replica.
_AGREE = (
    sa.update(_R)
    .where(_R.c.task_id == sa.bindparam("b_task"), _R.c.attempt == sa.bindparam("b_attempt"))
    .values(verdict="agreed")
)
_TASK_STATE = (
    sa.update(_T)
    .where(_T.c.id == sa.bindparam("b_task"))
    .values(
        state=sa.bindparam("b_state"),
        wanted=sa.bindparam("b_wanted"),
        in_flight=sa.bindparam("b_in_flight"),
        digest=sa.bindparam("b_digest", type_=_T.c.digest.type),
        error=sa.bindparam("b_error", type_=_T.c.error.type),
        queued_at=sa.bindparam("b_queued_at", type_=_T.c.queued_at.type),
    )
)
_INSERT_RESULTS = sa.insert(store.results)
_DEPENDENT_DONE = (
    sa.update(_T)
    .where(_T.c.id == sa.bindparam("b_task"), _T.c.state == "waiting")
    .values(pending=_T.c.pending - sa.bindparam("b_n"))
)
_READY_NOW = (
    sa.select(_T.c.id)
    .where(_T.c.id.in_(_IDS), _T.c.state == "waiting", _T.c.pending == 0)
    .order_by(_T.c.id)
    .with_for_update()
)
_JOB_TASKS_DONE = (
    sa.update(_J)
    .where(_J.c.id == sa.bindparam("b_job"))
    .values(tasks_done=_J.c.tasks_done + sa.bindparam("b_n"))
    .returning(_J.c.tasks_total, _J.c.tasks_done, _J.c.state)
)
_WORKERS_LOCKED = sa.select(_W).where(_W.c.id.in_(_IDS)).order_by(_W.c.id).with_for_update()
_WORKER_CREDIT = (
    sa.update(_W)
    .where(_W.c.id == sa.bindparam("b_worker"))
    .values(
        done=_W.c.done + sa.bindparam("b_n"), streak=sa.bindparam("b_streak"), valid=sa.bindparam("b_valid")
    )
)


class _Batch:
    """Results of one request, checked and applied in memory, written at :meth:`flush`.

    The rows the results touch are read once (their tasks locked, in id order). Each
    result is then checked against them exactly as :func:`_accept` would check it against
    the database, and recorded in memory, so a later result of the batch sees what an
    earlier one did; a refusal raises before anything is recorded. :meth:`flush` writes
    what was recorded with one statement per kind of change and appends the events in
    the order the per-result path would have. What the common path does not cover (an
    error result, a dispute, a liar, an undecidable task) flushes, runs the per-result
    code on the database, and reads the rows again.
    """

    def __init__(
        self,
        conn: sa.Connection,
        cfg: settings.QueenSettings,
        worker_id: str,
        now: float,
        trails: routing.Trails | None,
        results: list[wire.TaskResult],
    ) -> None:
        self.conn, self.cfg, self.worker_id, self.now, self.trails = conn, cfg, worker_id, now, trails
        self.task_ids = sorted({r.task_id for r in results})
        self._load()
        job_ids = sorted({t.job_id for t in self.tasks.values()})
        self.policies = _policies(conn, cfg, job_ids)
        digests = sorted({d for r in results for d in (r.outputs or {}).values()})
        self.present = (
            {d for (d,) in statements.fetch(conn, _BLOBS_PRESENT, {"ids": digests})} if digests else set()
        )
        self._clear()

    def _load(self) -> None:
        """Read (again) the tasks of the batch, locked, and all their replicas."""
        ids = {"ids": self.task_ids}
        self.tasks = {row.id: _Mutable(row) for row in statements.fetch(self.conn, _TASKS_LOCKED, ids)}
        self.replicas: dict[tuple[str, int], _Mutable] = {}
        self.of_task: dict[str, list[_Mutable]] = {tid: [] for tid in self.tasks}
        for row in statements.fetch(self.conn, _REPLICAS_OF, ids):
            rep = _Mutable(row)
            self.replicas[(rep.task_id, rep.attempt)] = rep
            self.of_task.setdefault(rep.task_id, []).append(rep)
        for reps in self.of_task.values():
            reps.sort(key=lambda r: r.attempt)

    def _clear(self) -> None:
        self.voted: list[dict[str, Any]] = []
        self.agreed: list[dict[str, Any]] = []
        self.changed: dict[str, _Mutable] = {}
        self.outputs: list[dict[str, Any]] = []
        # dependent task -> (its job, inputs it got, the event slot after the last one's task_done)
        self.inputs_done: dict[str, tuple[str, int, list[dict[str, Any]]]] = {}
        self.tasks_done: dict[str, tuple[int, list[dict[str, Any]]]] = {}  # job -> (n, slot)
        self.credits: dict[str, list[int]] = {}  # worker -> [results done, verified ones]
        self.log: list[dict[str, Any] | list[dict[str, Any]]] = []  # events, and slots for more

    # -- one result ---------------------------------------------------------------------

    def take(self, result: wire.TaskResult) -> wire.ResultReceipt:
        """Check and record one result, like :func:`_accept`; a refusal raises."""
        if result.error is not None:  # rare: the per-result path decides
            return self._on_store(
                lambda: _accept(self.conn, self.cfg, self.worker_id, result, self.now, self.trails)
            )
        task = self.tasks.get(result.task_id)
        if task is None:
            raise refusals.NotFoundError(f"cannot accept the result: no task {result.task_id}")
        rep = self.replicas.get((task.id, result.attempt))
        if _check_lease(task, rep, self.worker_id, result, self.now):
            return wire.ResultReceipt(accepted=True, duplicate=True)
        if task.state not in ("ready", "leased"):  # a live lease of a settled task: let _accept judge
            return self._on_store(
                lambda: _accept(self.conn, self.cfg, self.worker_id, result, self.now, self.trails)
            )
        _check_outputs(task, result, set(result.outputs.values()) - self.present)
        rep.state, rep.digest, rep.deadline, rep.seconds = (
            "voted",
            vote_digest(result.outputs),
            None,
            result.seconds,
        )
        rep.outputs = {str(k): v for k, v in sorted(result.outputs.items())}
        rep.unwritten = {
            "b_task": rep.task_id,
            "b_attempt": rep.attempt,
            "b_digest": rep.digest,
            "b_outputs": rep.outputs,
            "b_seconds": rep.seconds,
            "b_verdict": rep.verdict,
        }
        self.voted.append(rep.unwritten)
        self.log.append(
            {
                "kind": "task_voted",
                "at": self.now,
                "job_id": task.job_id,
                "task_id": task.id,
                "worker_id": self.worker_id,
                "data": {"worker_id": self.worker_id, "attempt": rep.attempt, "seconds": result.seconds},
            }
        )
        task.in_flight -= 1
        self.changed[task.id] = task
        if task.in_flight == 0:
            self._judge(task)
        return wire.ResultReceipt(accepted=True)

    def _on_store(self, step: Callable[[], wire.ResultReceipt]) -> wire.ResultReceipt:
        """Run a per-result step on the database: flush first, read again after."""
        self.flush()
        try:
            return step()
        finally:
            self._load()

    def _judge(self, task: _Mutable) -> None:
        """:func:`_judge` for the common verdicts; the others go to the database."""
        votes = [
            quorum.Vote(
                worker=r.worker_id, owner=r.owner, dclass=r.dclass, digest=r.digest, guardian=bool(r.guardian)
            )
            for r in self.of_task[task.id]
            if r.state == "voted"
        ]
        verify, need = self.policies[task.job_id]
        if len({v.digest for v in votes}) == 1:
            audited = any(r.audit and r.state == "voted" for r in self.of_task[task.id])
            if task.single and task.audit and not audited:
                self._want(task, votes, {"reason": "waiting for its audit"}, at_least=1)
                return
            verdict = quorum.judge(
                votes, _quorum_policy(self.cfg, verify, need), in_flight=0, single=task.single
            )
            if verdict.state == "accepted" and not verdict.liars:
                self._accepted(task, verdict)
                return
            if verdict.state == "pending":
                self._want(task, votes, {"reason": verdict.reason})
                return

        def judge_on_store() -> wire.ResultReceipt:
            row = self.conn.execute(sa.select(_T).where(_T.c.id == task.id)).one()
            _judge(self.conn, self.cfg, row, self.now, self.trails)
            return wire.ResultReceipt(accepted=True)

        self._on_store(judge_on_store)

    def _want(
        self, task: _Mutable, votes: list[quorum.Vote], data: dict[str, Any], at_least: int = 0
    ) -> None:
        """:func:`_want`, in memory."""
        verify, need = self.policies[task.job_id]
        verdict = quorum.judge(
            votes, _quorum_policy(self.cfg, verify, need), in_flight=task.in_flight, single=task.single
        )
        wanted = max(verdict.wanted, at_least, 0 if task.in_flight else 1)
        was = task.state
        task.wanted, task.state = wanted, "ready" if wanted else "leased"
        if wanted:
            task.queued_at = self.now
        if wanted and was != "ready":
            self.log.append(
                {
                    "kind": "task_ready",
                    "at": self.now,
                    "job_id": task.job_id,
                    "task_id": task.id,
                    "data": data,
                }
            )

    def _accepted(self, task: _Mutable, verdict: quorum.Verdict) -> None:
        """:func:`_accepted` without liars, in memory."""
        winners = [r for r in self.of_task[task.id] if r.state == "voted" and r.digest == verdict.digest]
        for rep in winners:
            rep.verdict = "agreed"
            unwritten = getattr(rep, "unwritten", None)
            if unwritten is not None:  # voted in this batch: one write for the vote and the verdict
                unwritten["b_verdict"] = "agreed"
            else:
                self.agreed.append({"b_task": rep.task_id, "b_attempt": rep.attempt})
        task.state, task.wanted, task.digest, task.error = "done", 0, verdict.digest, None
        first = winners[0]
        self.outputs += [
            {"job_id": task.job_id, "step_id": int(sid), "digest": digest, "task_id": task.id}
            for sid, digest in sorted(first.outputs.items(), key=lambda kv: int(kv[0]))
        ]
        self.log.append(
            {
                "kind": "task_done",
                "at": self.now,
                "job_id": task.job_id,
                "task_id": task.id,
                "worker_id": first.worker_id,
                "data": {
                    "worker_id": first.worker_id,
                    "attempt": first.attempt,
                    "seconds": first.seconds,
                    "votes": len(winners),
                    "single": bool(task.single),
                },
            }
        )
        if task.dependents:
            slot: list[dict[str, Any]] = []  # task_ready of the dependents it completes
            self.log.append(slot)
            for index in task.dependents:
                dependent = jobs.task_id(task.job_id, index)
                got = self.inputs_done.get(dependent, (task.job_id, 0, slot))[1]
                self.inputs_done[dependent] = (task.job_id, got + 1, slot)
        slot = []  # the job's end, if this was its last task
        self.log.append(slot)
        self.tasks_done[task.job_id] = (self.tasks_done.get(task.job_id, (0, slot))[0] + 1, slot)
        key = routing.trail_key(task.context, task.kind)
        verified = not (task.single and not task.audit)  # a lone unaudited vote earns no standing
        for rep in sorted(winners, key=lambda r: r.worker_id):
            counts = self.credits.setdefault(rep.worker_id, [0, 0])
            counts[0] += 1
            counts[1] += int(verified)
            if self.trails is not None and rep.seconds and verified:
                self.trails.deposit(rep.worker_id, key, rep.seconds, self.now)

    # -- writes -------------------------------------------------------------------------

    def flush(self) -> None:
        """Write what was recorded, in the lock order tasks -> replicas -> job -> worker."""
        conn = self.conn
        if self.voted:
            statements.execute_many(conn, _VOTE, self.voted)
        if self.agreed:
            statements.execute_many(conn, _AGREE, self.agreed)
        if self.changed:
            statements.execute_many(
                conn,
                _TASK_STATE,
                [
                    {
                        "b_task": t.id,
                        "b_state": t.state,
                        "b_wanted": t.wanted,
                        "b_in_flight": t.in_flight,
                        "b_digest": t.digest,
                        "b_error": t.error,
                        "b_queued_at": t.queued_at,
                    }
                    for t in sorted(self.changed.values(), key=lambda t: t.id)
                ],
            )
        if self.outputs:
            statements.execute_many(conn, _INSERT_RESULTS, self.outputs)
        if self.inputs_done:
            self._ready_dependents()
        if self.tasks_done:
            self._finish_jobs()
        if self.credits:
            self._credit_workers()
        log: list[dict[str, Any]] = []
        for entry in self.log:
            log.extend(entry if isinstance(entry, list) else [entry])
        events.append_many(conn, log)
        self._clear()

    def _ready_dependents(self) -> None:
        # A decrement under the row lock, then a read of the locked rows: when two
        # dependencies finish at once in two transactions (PostgreSQL), the second waits
        # for the first and sees its decrement, so exactly one of them sees zero.
        ids = sorted(self.inputs_done)
        statements.execute_many(
            self.conn, _DEPENDENT_DONE, [{"b_task": t, "b_n": self.inputs_done[t][1]} for t in ids]
        )
        complete = [tid for (tid,) in statements.fetch(self.conn, _READY_NOW, {"ids": ids})]
        if complete:
            self.conn.execute(
                sa.update(_T).where(_T.c.id.in_(complete)).values(state="ready", queued_at=self.now)
            )
        for tid in complete:
            job_id, _got, slot = self.inputs_done[tid]
            slot.append({"kind": "task_ready", "at": self.now, "job_id": job_id, "task_id": tid})

    def _finish_jobs(self) -> None:
        for job_id in sorted(self.tasks_done):  # a batch's results are of one job or a few
            finished, slot = self.tasks_done[job_id]
            params = {"b_job": job_id, "b_n": finished}
            ((total, done, state),) = statements.fetch(self.conn, _JOB_TASKS_DONE, params)
            if done == total and state == "running":
                self.conn.execute(
                    sa.update(_J).where(_J.c.id == job_id).values(state="done", finished_at=self.now)
                )
                slot.append({"kind": "done", "at": self.now, "job_id": job_id, "data": {"tasks": total}})

    def _credit_workers(self) -> None:
        rows = statements.fetch(self.conn, _WORKERS_LOCKED, {"ids": sorted(self.credits)})
        updates = []
        for row in rows:
            done, verified = self.credits[row.id]
            standing = _standing(row)
            for _ in range(verified):
                standing = reputation.credit(standing)
            updates.append(
                {"b_worker": row.id, "b_n": done, "b_streak": standing.streak, "b_valid": standing.valid}
            )
        statements.execute_many(self.conn, _WORKER_CREDIT, updates)


class _Mutable:
    """A row's values as attributes that a batch may change in memory."""

    def __init__(self, row: sa.Row[Any]) -> None:
        self.__dict__.update(row._mapping)


def _end_replica(
    conn: sa.Connection,
    cfg: settings.QueenSettings,
    rep: Any,
    now: float,
    state: str,
    reason: str,
    error: str | None = None,
    *,
    trails: routing.Trails | None,
) -> None:
    """A lease ended without a vote (lost, failed, cancelled): the task wants another replica,
    or the job fails once the task has used ``max_attempts``."""
    ended = conn.execute(
        sa.update(_R)
        .where(_R.c.task_id == rep.task_id, _R.c.attempt == rep.attempt, _R.c.state == "leased")
        .values(state=state, deadline=None, error=error)
        .returning(_R.c.task_id)
    ).first()
    if ended is None:
        return  # ended already in this transaction (its job failed, or it was cancelled)
    task = conn.execute(
        sa.update(_T)
        .where(_T.c.id == rep.task_id)
        .values(in_flight=_T.c.in_flight - 1, failures=_T.c.failures + int(state != "cancelled"))
        .returning(_T)
    ).one()
    data: dict[str, Any] = {"reason": reason, "attempt": rep.attempt, "worker_id": rep.worker_id}
    if error is not None:
        data["error"] = error
    if task.state in ("done", "failed", "waiting"):
        return
    if task.failures >= cfg.max_attempts:
        message = (
            f"task {task.index} failed {task.failures} times (last: {reason}"
            + (f": {error}" if error else "")
            + f"); max_attempts is {cfg.max_attempts}"
        )
        events.append(
            conn, "task_failed", now, job_id=task.job_id, task_id=task.id, data={**data, "final": True}
        )
        _fail_job(conn, task.job_id, message, now)
        return
    if error is not None:
        events.append(conn, "task_failed", now, job_id=task.job_id, task_id=task.id, data=data)
    votes = _votes(conn, task.id)
    if task.single and not votes:  # the trusted worker never voted: replicate it normally
        conn.execute(sa.update(_T).where(_T.c.id == task.id).values(single=False, audit=False))
        task = conn.execute(sa.select(_T).where(_T.c.id == task.id)).one()
    if task.in_flight == 0 and votes:
        _judge(conn, cfg, task, now, trails)
        return
    _want(conn, cfg, task, votes, now, data)


def _votes(conn: sa.Connection, task_id: str) -> list[quorum.Vote]:
    rows = conn.execute(
        sa.select(_R.c.worker_id, _R.c.owner, _R.c.dclass, _R.c.digest, _R.c.guardian)
        .where(_R.c.task_id == task_id, _R.c.state == "voted")
        .order_by(_R.c.attempt)
    ).all()
    return [quorum.Vote(worker=w, owner=o, dclass=d, digest=g, guardian=bool(gd)) for w, o, d, g, gd in rows]


def _want(
    conn: sa.Connection,
    cfg: settings.QueenSettings,
    task: Any,
    votes: list[quorum.Vote],
    now: float,
    data: dict[str, Any] | None = None,
    *,
    at_least: int = 0,
    single: bool | None = None,
) -> None:
    """Ask for as many replicas as the quorum still needs beyond those in flight."""
    verify, need = _policies(conn, cfg, {task.job_id})[task.job_id]
    single = task.single if single is None else single
    verdict = quorum.judge(votes, _quorum_policy(cfg, verify, need), in_flight=task.in_flight, single=single)
    wanted = max(verdict.wanted, at_least, 0 if task.in_flight else 1)
    conn.execute(
        sa.update(_T)
        .where(_T.c.id == task.id)
        .values(
            wanted=wanted, state="ready" if wanted else "leased", queued_at=now if wanted else task.queued_at
        )
    )
    if wanted and task.state != "ready":
        events.append(conn, "task_ready", now, job_id=task.job_id, task_id=task.id, data=data or {})


def _judge(
    conn: sa.Connection, cfg: settings.QueenSettings, task: Any, now: float, trails: routing.Trails | None
) -> None:
    """Every replica of the task is in: accept a digest, ask for more, or give up."""
    votes = _votes(conn, task.id)
    disputed = len({v.digest for v in votes}) > 1
    if task.single and task.audit and not disputed and not _audited(conn, task.id):
        _want(conn, cfg, task, votes, now, {"reason": "waiting for its audit"}, at_least=1)
        return
    verify, need = _policies(conn, cfg, {task.job_id})[task.job_id]
    single = task.single and not disputed  # a dispute needs f+1 votes, trust or not
    verdict = quorum.judge(votes, _quorum_policy(cfg, verify, need), in_flight=0, single=single)
    if disputed:
        events.append(
            conn,
            "task_disputed",
            now,
            job_id=task.job_id,
            task_id=task.id,
            data={"votes": len(votes), "digests": len({v.digest for v in votes}), "verdict": verdict.state},
        )
    if verdict.state == "accepted":
        _accepted(conn, cfg, task, verdict, now, trails)
    elif verdict.state == "undecidable":
        events.append(
            conn,
            "task_failed",
            now,
            job_id=task.job_id,
            task_id=task.id,
            data={"reason": verdict.reason, "final": True},
        )
        _fail_job(conn, task.job_id, f"task {task.index}: {verdict.reason}", now)
    else:
        _want(conn, cfg, task, votes, now, {"reason": verdict.reason}, single=single)


def _audited(conn: sa.Connection, task_id: str) -> bool:
    query = sa.select(_R.c.attempt).where(_R.c.task_id == task_id, _R.c.audit, _R.c.state == "voted")
    return conn.execute(query.limit(1)).first() is not None


def _accepted(
    conn: sa.Connection,
    cfg: settings.QueenSettings,
    task: Any,
    verdict: quorum.Verdict,
    now: float,
    trails: routing.Trails | None,
) -> None:
    reps = conn.execute(
        sa.select(_R).where(_R.c.task_id == task.id, _R.c.state == "voted").order_by(_R.c.attempt)
    ).all()
    winners = [r for r in reps if r.digest == verdict.digest]
    liars = [r for r in reps if r.worker_id in verdict.liars]
    conn.execute(
        sa.update(_R)
        .where(_R.c.task_id == task.id, _R.c.state == "voted", _R.c.digest == verdict.digest)
        .values(verdict="agreed")
    )
    if liars:
        conn.execute(
            sa.update(_R)
            .where(
                _R.c.task_id == task.id,
                _R.c.state == "voted",
                _R.c.worker_id.in_([r.worker_id for r in liars]),
            )
            .values(verdict="lied")
        )
    conn.execute(
        sa.update(_T)
        .where(_T.c.id == task.id)
        .values(state="done", wanted=0, digest=verdict.digest, error=None)
    )
    outputs = winners[0].outputs
    conn.execute(
        sa.insert(store.results),
        [
            {"job_id": task.job_id, "step_id": int(sid), "digest": digest, "task_id": task.id}
            for sid, digest in sorted(outputs.items(), key=lambda kv: int(kv[0]))
        ],
    )
    log: list[dict[str, Any]] = [
        {
            "kind": "task_done",
            "at": now,
            "job_id": task.job_id,
            "task_id": task.id,
            "worker_id": winners[0].worker_id,
            "data": {
                "worker_id": winners[0].worker_id,
                "attempt": winners[0].attempt,
                "seconds": winners[0].seconds,
                "votes": len(winners),
                "single": bool(task.single),
            },
        }
    ]
    if task.dependents:
        # UPDATE ... RETURNING decrements under row locks: when two dependencies finish at
        # once (PostgreSQL), the second sees the first's decrement, so one of them sees zero.
        ready = conn.execute(
            sa.update(_T)
            .where(_T.c.job_id == task.job_id, _T.c.index.in_(task.dependents), _T.c.state == "waiting")
            .values(pending=_T.c.pending - 1)
            .returning(_T.c.id, _T.c.pending)
        ).all()
        now_ready = [tid for tid, pending in ready if pending == 0]
        if now_ready:
            conn.execute(sa.update(_T).where(_T.c.id.in_(now_ready)).values(state="ready", queued_at=now))
            log += [{"kind": "task_ready", "at": now, "job_id": task.job_id, "task_id": t} for t in now_ready]
    conn.execute(sa.update(_J).where(_J.c.id == task.job_id).values(tasks_done=_J.c.tasks_done + 1))
    key = routing.trail_key(task.context, task.kind)
    verified = not (task.single and not task.audit)  # a lone unaudited vote earns no standing
    for rep in sorted(winners, key=lambda r: r.worker_id):  # one row-lock order for every request
        worker = conn.execute(sa.select(_W).where(_W.c.id == rep.worker_id)).one()
        standing = reputation.credit(_standing(worker)) if verified else _standing(worker)
        conn.execute(
            sa.update(_W)
            .where(_W.c.id == rep.worker_id)
            .values(done=_W.c.done + 1, streak=standing.streak, valid=standing.valid)
        )
        if trails is not None and rep.seconds and verified:
            trails.deposit(rep.worker_id, key, rep.seconds, now)
    events.append_many(conn, log)
    for rep in liars:  # before the job may finish: a liar's other results in it are re-run
        _caught(conn, cfg, rep, task, now, trails)
    total, done, state = conn.execute(
        sa.select(_J.c.tasks_total, _J.c.tasks_done, _J.c.state).where(_J.c.id == task.job_id)
    ).one()
    if done == total and state == "running":
        conn.execute(sa.update(_J).where(_J.c.id == task.job_id).values(state="done", finished_at=now))
        events.append(conn, "done", now, job_id=task.job_id, data={"tasks": total})


def _caught(
    conn: sa.Connection,
    cfg: settings.QueenSettings,
    rep: Any,
    task: Any,
    now: float,
    trails: routing.Trails | None,
) -> None:
    """A proven lie: quarantine the worker, zero its trails, take back its leases, and re-run
    every result of it that no one else confirmed, in jobs still open."""
    worker = conn.execute(sa.select(_W).where(_W.c.id == rep.worker_id)).one()
    standing = reputation.penalize(_standing(worker))
    conn.execute(
        sa.update(_W)
        .where(_W.c.id == worker.id)
        .values(
            streak=standing.streak,
            lies=standing.lies,
            quarantined=standing.quarantined,
            quarantined_at=worker.quarantined_at if worker.quarantined else now,
        )
    )
    if trails is not None:
        trails.zero(worker.id)
    events.append(
        conn,
        "lie",
        now,
        job_id=task.job_id,
        task_id=task.id,
        worker_id=worker.id,
        data={"worker_id": worker.id, "attempt": rep.attempt, "quarantined": not worker.quarantined},
    )
    if not worker.quarantined:
        events.append(conn, "quarantined", now, worker_id=worker.id, data={"task_id": task.id})
    # in task order: the events come out the same whatever order the rows are stored in
    held_q = sa.select(_R).where(_R.c.worker_id == worker.id, _R.c.state == "leased").order_by(_R.c.task_id)
    for held in conn.execute(held_q).all():
        _end_replica(conn, cfg, held, now, "cancelled", "worker_quarantined", trails=trails)
    unconfirmed = conn.execute(
        sa.select(_T)
        .join(_R, sa.and_(_R.c.task_id == _T.c.id, _R.c.worker_id == worker.id, _R.c.verdict == "agreed"))
        .join(_J, _J.c.id == _T.c.job_id)
        .where(_J.c.state == "running", _T.c.state == "done", _T.c.single, ~_T.c.audit)
        .order_by(_T.c.id)
    ).all()
    for row in unconfirmed:
        _rerun(conn, cfg, row, now, f"its only vote came from worker {worker.id}, caught lying")


def _rerun(conn: sa.Connection, cfg: settings.QueenSettings, task: Any, now: float, why: str) -> None:
    """Run an accepted task again, replicated, with every task that used its outputs."""
    rows = {r.index: r for r in conn.execute(sa.select(_T).where(_T.c.job_id == task.job_id)).all()}
    deps: dict[int, set[int]] = {i: set() for i in rows}
    for i, r in rows.items():
        for d in r.dependents:
            deps[d].add(i)
    redo, frontier = {task.index}, [task.index]
    while frontier:
        for d in rows[frontier.pop()].dependents:
            if d not in redo and rows[d].state in ("done", "leased", "ready"):
                redo.add(d)
                frontier.append(d)
    redo_ids = [rows[i].id for i in sorted(redo)]
    was_done = [rows[i].id for i in redo if rows[i].state == "done"]
    conn.execute(
        sa.update(_R)
        .where(_R.c.task_id.in_(redo_ids), _R.c.state.in_(("leased", "voted")))
        .values(state="cancelled", deadline=None)
    )
    conn.execute(sa.delete(store.results).where(store.results.c.task_id.in_(redo_ids)))
    _verify, need = _policies(conn, cfg, {task.job_id})[task.job_id]
    log = []
    for i in sorted(redo):
        pending = sum(1 for d in deps[i] if d in redo or rows[d].state != "done")
        state = "waiting" if pending else "ready"
        conn.execute(
            sa.update(_T)
            .where(_T.c.id == rows[i].id)
            .values(
                state=state,
                pending=pending,
                wanted=need,
                in_flight=0,
                single=False,
                audit=False,
                dclass=None,
                digest=None,
                queued_at=None if pending else now,
            )
        )
        log.append(
            {
                "kind": "task_reset",
                "at": now,
                "job_id": task.job_id,
                "task_id": rows[i].id,
                "data": {"reason": why},
            }
        )
    conn.execute(
        sa.update(_J)
        .where(_J.c.id == task.job_id)
        .values(tasks_done=_J.c.tasks_done - len(was_done), reexecuted=_J.c.reexecuted + len(redo))
    )
    events.append_many(conn, log)


def _fail_job(conn: sa.Connection, job_id: str, message: str, now: float) -> None:
    """A failed job has no live task left: its leases are cancelled, nothing more is leased."""
    conn.execute(
        sa.update(_R)
        .where(_R.c.job_id == job_id, _R.c.state == "leased")
        .values(state="cancelled", deadline=None)
    )
    conn.execute(
        sa.update(_T)
        .where(_T.c.job_id == job_id, _T.c.state.in_(("waiting", "ready", "leased")))
        .values(state="failed", wanted=0, in_flight=0)
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
    known: dict[str, dict[int, str]] = {job: {} for job in wanted}
    for job_id, step_id, digest in statements.fetch(
        conn, _KNOWN_STEPS, {"jobs": sorted(wanted), "steps": steps}
    ):
        known[job_id][step_id] = digest
    return known


def _spec(row: Any, attempt: int, deadline: float, known: dict[int, str], memory: int) -> wire.TaskSpec:
    spec = row.spec
    missing = [sid for sid in spec["inputs"] if sid not in known]
    if missing:  # a ready task's inputs all exist; anything else is a queen bug
        raise RuntimeError(f"task {row.id} is ready but steps {missing} have no digest")
    return wire.TaskSpec(
        task_id=row.id,
        job_id=row.job_id,
        attempt=attempt,
        deadline=deadline,
        context=row.context,
        context_memory=memory,
        steps=[wire.TaskStep(id=s[0], op=s[1], args=s[2], attrs=s[3]) for s in spec["steps"]],
        inputs={sid: known[sid] for sid in spec["inputs"]},
        outputs=list(spec["outputs"]),
    )
