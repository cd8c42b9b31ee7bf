"""Jobs: accepting a compiled circuit as tasks, and reporting a job's state and results.

:func:`submit` checks everything before it writes anything: the circuit parses
(:meth:`Circuit.from_json`) and its tasks form a well-founded graph (every value a task
reads is a program input or another task's output, no cycles), the context exists and
has the circuit's parameters and rotation keys, and every program input has an uploaded
blob. It then writes one row per task — ``ready`` when it reads program inputs only,
``waiting`` otherwise — the input digests as the job's first results, and the events.
Dependencies are derived from the data flow, not taken on trust from ``Task.deps``.
The rows are built before the write lock is taken, with the cyclic collector paused.

:func:`status` reports a job and its assurance, counted by the database over the job's
replicas; a running job's counts are kept for a while (see ``_COUNTS_REUSE``).

It does not schedule (``queue`` leases tasks and accepts results) and never reads the
ciphertexts behind the digests.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import sqlalchemy as sa

from hswarm import errors, wire
from hswarm.program.circuit import Circuit
from hswarm.queen import blobs, contexts, events, membership, refusals, settings, statements, store
from hswarm.swarm import assurance


def submit(
    db: store.Store, cfg: settings.QueenSettings, submission: wire.JobSubmission, now: float | None = None
) -> wire.JobAccepted:
    with _collector_paused():
        return _submit(db, cfg, submission, now)


_pauses = 0  # submissions in flight, with the cyclic garbage collector paused
_pauses_lock = threading.Lock()
_collecting = True  # whether the collector ran before the first of them


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a job is read and written: a big job
    makes objects that all live until its rows are written (a circuit of 8000 tasks
    holds about 100k), so the collector ran full collections over them again and again
    (150 ms of an 8000-task submission, measured in the queen; it holds the GIL, and the
    event loop waits). Reference counting still frees what a submission drops."""
    global _pauses, _collecting
    with _pauses_lock:
        _pauses += 1
        if _pauses == 1:
            _collecting = gc.isenabled()
            gc.disable()
    try:
        yield
    finally:
        with _pauses_lock:
            _pauses -= 1
            if _pauses == 0 and _collecting:
                gc.enable()


def _submit(
    db: store.Store, cfg: settings.QueenSettings, submission: wire.JobSubmission, now: float | None
) -> wire.JobAccepted:
    circuit = read_circuit(submission.circuit)
    verify = submission.assurance.verify
    need = max(submission.assurance.quorum, cfg.faults + 1) if verify else 1
    if need > cfg.max_replicas:
        raise errors.ProgramError(
            f"cannot submit the job: quorum {need} is more than the queen's max_replicas {cfg.max_replicas}"
        )
    plan = _plan(circuit)
    inputs = {s.id for s in circuit.steps if s.op == "input"}
    if set(submission.inputs) != inputs:
        missing, extra = sorted(inputs - set(submission.inputs)), sorted(set(submission.inputs) - inputs)
        raise errors.ProgramError(
            f"cannot submit the job: inputs must name every input step of the circuit "
            f"(missing {missing}, not input steps {extra})"
        )
    now = time.time() if now is None else now
    job_id = uuid.uuid4().hex
    outputs = sorted({c for term in circuit.outputs.values() for c in term.chunks})
    done = not plan
    # Every row is built before the write lock is taken: while a big job is written, no
    # other writer (a lease, a batch of results) can run on SQLite.
    rows = [
        {
            "id": task_id(job_id, index),
            "job_id": job_id,
            "index": index,
            "kind": entry["kind"],
            "context": submission.context,
            "state": "waiting" if entry["pending"] else "ready",
            "attempt": 0,
            "queued_at": None if entry["pending"] else now,
            "pending": entry["pending"],
            "dependents": entry["dependents"],
            "spec": entry["spec"],
            "error": None,
            "wanted": need,  # leased only once ready: a waiting task wants them later
            "in_flight": 0,
            "failures": 0,
            "single": False,
            "audit": False,
            "dclass": None,
            "digest": None,
        }
        for index, entry in plan.items()
    ]
    tasks = statements.bind_many(db.engine.dialect, _INSERT_TASKS, rows)
    given = statements.bind_many(
        db.engine.dialect,
        _INSERT_RESULTS,
        [
            {"job_id": job_id, "step_id": sid, "digest": digest, "task_id": None}
            for sid, digest in sorted(submission.inputs.items())
        ],
    )
    log = [
        {"kind": "submitted", "at": now, "job_id": job_id, "data": {"tasks": len(plan)}},
        *(
            {"kind": "task_ready", "at": now, "job_id": job_id, "task_id": row["id"]}
            for row in rows
            if row["state"] == "ready"
        ),
    ]
    if done:
        log.append({"kind": "done", "at": now, "job_id": job_id})
    with db.write() as conn:
        params, rotations = contexts.params_of(conn, submission.context)
        if dict(circuit.params) != params:
            raise refusals.ConflictError(
                f"cannot submit the job: the circuit was compiled for other parameters than context "
                f"{submission.context}; compile with the context's params"
            )
        lacking = sorted(set(circuit.rotation_indices) - set(rotations))
        if lacking:
            raise refusals.ConflictError(
                f"cannot submit the job: context {submission.context} lacks rotation keys {lacking}; "
                "generate keys with circuit.rotation_indices"
            )
        absent = blobs.missing(conn, set(submission.inputs.values()))
        if absent:
            raise refusals.NotFoundError(
                f"cannot submit the job: input blobs {sorted(absent)} are not uploaded; PUT them first"
            )
        # Values as parameters, never in the statement: SQLAlchemy's statement cache keeps
        # the first statement of each shape, and with it any values written into it (the
        # first job's circuit, 100k objects for 8000 tasks, for the collector to scan).
        job = {
            "id": job_id,
            "state": "done" if done else "running",
            "label": submission.label,
            "context": submission.context,
            "quorum": need,
            "verify": verify,
            "reexecuted": 0,
            "tasks_total": len(plan),
            "tasks_done": 0,
            "tasks_failed": 0,
            "created_at": now,
            "finished_at": now if done else None,
            "error": None,
        }
        conn.execute(_INSERT_JOB, job)
        conn.execute(_INSERT_CIRCUIT, {"job_id": job_id, "circuit": submission.circuit, "outputs": outputs})
        statements.execute_bound(conn, tasks)
        if rows:
            store.refresh_statistics(conn, store.tasks, len(rows))
        statements.execute_bound(conn, given)
        events.append_many(conn, log)
    return wire.JobAccepted(job_id=job_id, tasks=len(plan))


def read_circuit(doc: Mapping[str, Any]) -> Circuit:
    """Parse a circuit from the wire; any way it is malformed is a ProgramError."""
    try:
        return Circuit.from_json(doc)
    except errors.HSwarmError as exc:
        raise errors.ProgramError(str(exc)) from exc
    except Exception as exc:  # untrusted structure: a crash here must be a 422, not a 500
        raise errors.ProgramError(
            f"cannot read the circuit: malformed ({type(exc).__name__}: {exc})"
        ) from exc


def task_id(job_id: str, index: int) -> str:
    return f"{job_id}.{index}"


_INSERT_JOB = sa.insert(store.jobs)
_INSERT_CIRCUIT = sa.insert(store.circuits)
_INSERT_TASKS = sa.insert(store.tasks)
_INSERT_RESULTS = sa.insert(store.results)
_STATUS_COLUMNS = sa.select(store.jobs)
_OUTPUTS = sa.select(store.circuits.c.outputs).where(store.circuits.c.job_id == sa.bindparam("b_job"))


def status(db: store.Store, cfg: settings.QueenSettings, job_id: str) -> wire.JobStatus:
    with db.read() as conn:
        row = conn.execute(_STATUS_COLUMNS.where(store.jobs.c.id == job_id)).one_or_none()
        if row is None:
            raise refusals.NotFoundError(f"cannot find job {job_id}: no job has that id")
        return _status(conn, cfg, row)


def progress(db: store.Store, job_id: str) -> tuple[str, int] | None:
    """A job's state and tasks done, cheaply (a long-polling client's check); None if unknown."""
    with db.read() as conn:
        row = conn.execute(
            sa.select(store.jobs.c.state, store.jobs.c.tasks_done).where(store.jobs.c.id == job_id)
        ).one_or_none()
    return None if row is None else (row.state, row.tasks_done)


def list_jobs(db: store.Store, cfg: settings.QueenSettings, limit: int = 100) -> wire.JobList:
    with db.read() as conn:
        rows = conn.execute(_STATUS_COLUMNS.order_by(store.jobs.c.created_at.desc()).limit(limit)).all()
        return wire.JobList(jobs=[_status(conn, cfg, row) for row in rows])


def _status(conn: sa.Connection, cfg: settings.QueenSettings, row: Any) -> wire.JobStatus:
    results: dict[int, str] = {}
    outputs = conn.execute(_OUTPUTS, {"b_job": row.id}).scalar_one() if row.state == "done" else None
    if outputs:
        query = sa.select(store.results.c.step_id, store.results.c.digest).where(
            store.results.c.job_id == row.id, store.results.c.step_id.in_(outputs)
        )
        results = {sid: digest for sid, digest in conn.execute(query)}
    return wire.JobStatus(
        job_id=row.id,
        state=row.state,
        label=row.label,
        context=row.context,
        tasks_total=row.tasks_total,
        tasks_done=row.tasks_done,
        tasks_failed=row.tasks_failed,
        created_at=row.created_at,
        finished_at=row.finished_at,
        results=results,
        error=row.error,
        waiting=_waiting(conn, row) if row.state == "running" else None,
        assurance=_assurance(conn, cfg, row),
    )


def _assurance(conn: sa.Connection, cfg: settings.QueenSettings, job: Any) -> wire.AssuranceReport:
    """The job's verification so far, from its replicas (cancelled ones are history)."""
    counts = _counts(conn, job)
    faults = cfg.faults if job.verify else 0
    bound = assurance.wrong_result_bound(faults, counts.unaudited, cfg.audit_rate) if job.verify else 1.0
    return wire.AssuranceReport(
        verified=bool(job.verify),
        quorum=job.quorum,
        faults=faults,
        replicas=counts.replicas,
        unreplicated=counts.unreplicated,
        audits=counts.audits,
        disagreements=counts.disagreements,
        lies=sum(counts.lied.values()),
        quarantined=sorted(counts.lied),
        reexecuted=job.reexecuted,
        wrong_bound=bound,
    )


class _Counts(NamedTuple):
    replicas: int  # voted
    audits: int  # voted as audits of unreplicated tasks
    disagreements: int  # tasks whose voted replicas differ
    lied: dict[str, int]  # worker id -> its replicas judged lies
    unreplicated: int  # tasks done on one vote
    unaudited: int  # ... and not audited


# A job's counts are over its replicas (23 ms for 30000 verified tasks on SQLite), and
# every client that follows the job asks for them. While the job runs they are kept for
# _COUNTS_REUSE times as long as they took to count, so that they cost at most about
# 1/_COUNTS_REUSE of the queen's time however many clients follow the job and however
# often: a running job's report may lag its replicas by that long. An ended job's counts
# are always fresh.
_COUNTS_REUSE = 20
_COUNTS_MEMORY = 1024  # running jobs whose counts are kept; past it, all are forgotten
_kept: dict[str, tuple[float, _Counts]] = {}  # job id -> (kept until, counts)


def _counts(conn: sa.Connection, job: Any) -> _Counts:
    if job.state != "running":
        _kept.pop(job.id, None)
        return _count(conn, job.id)
    started = time.monotonic()
    kept = _kept.get(job.id)
    if kept is not None and started < kept[0]:
        return kept[1]
    counts = _count(conn, job.id)
    ended = time.monotonic()
    if len(_kept) >= _COUNTS_MEMORY:
        _kept.clear()
    _kept[job.id] = (ended + _COUNTS_REUSE * (ended - started), counts)
    return counts


def _count(conn: sa.Connection, job_id: str) -> _Counts:
    """Counted by the database from two indexes of the job's replicas (see
    ``store.replicas``), never a row per replica in Python."""
    r, t = store.replicas, store.tasks
    voted = sa.and_(r.c.job_id == job_id, r.c.state == "voted")
    replicas, audits = conn.execute(
        sa.select(sa.func.count(), sa.func.count(sa.case((r.c.audit, 1)))).where(voted)
    ).one()
    split = (
        sa.select(r.c.task_id)
        .where(voted)
        .group_by(r.c.task_id)
        .having(sa.func.count(r.c.digest.distinct()) > 1)
    )
    disagreements = conn.execute(sa.select(sa.func.count()).select_from(split.subquery())).scalar_one()
    lied = dict(
        conn.execute(
            sa.select(r.c.worker_id, sa.func.count())
            .where(r.c.job_id == job_id, store.LIED)  # as the partial index says it
            .group_by(r.c.worker_id)
        )
        .tuples()
        .all()
    )
    unreplicated, unaudited = conn.execute(
        sa.select(sa.func.count(), sa.func.count(sa.case((~t.c.audit, 1)))).where(
            t.c.job_id == job_id, t.c.state == "done", t.c.single
        )
    ).one()
    return _Counts(replicas, audits, disagreements, lied, unreplicated, unaudited)


def _waiting(conn: sa.Connection, job: Any) -> str | None:
    """Why the job's ready tasks may find no worker: no worker has the memory for the key
    set, or too few distinct owners are eligible."""
    t, w, c = store.tasks, store.workers, store.contexts
    ready = conn.execute(sa.select(t.c.id).where(t.c.job_id == job.id, t.c.state == "ready").limit(1)).first()
    if ready is None:
        return None
    need = conn.execute(sa.select(c.c.memory).where(c.c.digest == job.context)).scalar() or 0
    alive = conn.execute(
        sa.select(w.c.id, w.c.owner, w.c.memory_bytes).where(w.c.state == "alive", ~w.c.quarantined)
    ).all()
    fits = [(wid, owner) for wid, owner, budget in alive if not need or not budget or budget >= need]
    if alive and not fits:
        return (
            f"its key set needs {need / 2**20:.0f} MiB of memory in an executor and no live worker has "
            "that much in its memory budget (--memory-budget); start a worker on a bigger machine"
        )
    owners = {membership.owner_key(owner, wid) for wid, owner in fits}
    if len(owners) >= job.quorum:
        return None
    held = " that can hold its key set" if len(fits) < len(alive) else ""
    return (
        f"its tasks need {job.quorum} matching results from workers of distinct owners; "
        f"{len(owners)} owner(s) have a live worker{held} that is not quarantined"
    )


def _plan(circuit: Circuit) -> dict[int, dict[str, Any]]:
    """Per task index: kind, spec, number of tasks it waits for, tasks that wait for it."""
    bad = errors.ProgramError
    ids = [t.id for t in circuit.tasks]
    if sorted(ids) != list(range(len(ids))):
        raise bad(f"cannot read the circuit: task ids must be 0..{len(ids) - 1}, got {ids}")
    producer: dict[int, int] = {}
    for task in circuit.tasks:
        for sid in task.outputs:
            if sid not in task.steps:
                raise bad(f"cannot read the circuit: task {task.id} outputs step {sid} it does not compute")
            if sid in producer:
                raise bad(
                    f"cannot read the circuit: step {sid} is output by tasks {producer[sid]} and {task.id}"
                )
            producer[sid] = task.id
    needs: dict[int, set[int]] = {}
    for task in circuit.tasks:
        needs[task.id] = set()
        for sid in task.inputs:
            if 0 <= sid < len(circuit.steps) and circuit.steps[sid].op == "input":
                continue
            if producer.get(sid, task.id) == task.id:
                raise bad(
                    f"cannot read the circuit: task {task.id} reads step {sid}, which no other task outputs"
                )
            needs[task.id].add(producer[sid])
    for name, term in circuit.outputs.items():
        for sid in term.chunks:
            if sid not in producer and not (
                0 <= sid < len(circuit.steps) and circuit.steps[sid].op == "input"
            ):
                raise bad(f"cannot read the circuit: output {name!r} step {sid} is computed by no task")
    _check_acyclic(needs)
    dependents: dict[int, list[int]] = {t: [] for t in needs}
    for task, deps in needs.items():
        for dep in deps:
            dependents[dep].append(task)
    return {
        task.id: {
            "kind": task.kind,
            "pending": len(needs[task.id]),
            "dependents": sorted(dependents[task.id]),
            "spec": {
                "steps": [
                    [s.id, s.op, list(s.args), dict(s.attrs)] for s in (circuit.steps[i] for i in task.steps)
                ],
                "inputs": list(task.inputs),
                "outputs": list(task.outputs),
            },
        }
        for task in circuit.tasks
    }


def _check_acyclic(needs: Mapping[int, set[int]]) -> None:
    left = {task: set(deps) for task, deps in needs.items()}
    ready = [task for task, deps in left.items() if not deps]
    waiting_on: dict[int, list[int]] = {}
    for task, deps in left.items():
        for dep in deps:
            waiting_on.setdefault(dep, []).append(task)
    seen = 0
    while ready:
        task = ready.pop()
        seen += 1
        for other in waiting_on.get(task, []):
            left[other].discard(task)
            if not left[other]:
                ready.append(other)
    if seen != len(left):
        stuck = sorted(task for task, deps in left.items() if deps)
        raise errors.ProgramError(f"cannot read the circuit: tasks {stuck} depend on each other in a cycle")
