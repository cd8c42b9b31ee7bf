"""A batch of results, on SQLite and PostgreSQL: the set-based path leaves exactly the
rows and events that taking its results one by one (the per-result path it falls back
on) leaves, including disputes, liars caught mid-batch, errors, duplicates, refusals and
dependents. Time and randomness are passed in."""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from queenkit import Material, chain, digest, enroll, seed_job, wide

from hswarm import errors, wire
from hswarm.crypto import params
from hswarm.program import Program, compile_program
from hswarm.queen import events, membership, queue, refusals, settings, store

VERIFIED = wire.Assurance(quorum=2, verify=True)
UNVERIFIED = wire.Assurance(verify=False)


class Draws(random.Random):
    """A random source that draws the given values, in order."""

    def __init__(self, values: tuple[float, ...]) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def _diamond() -> dict[str, Any]:
    """Tasks 0 and 1 read the inputs; task 2 reads both of their outputs."""
    p = Program()
    x, y = p.input("x", 8), p.input("y", 8)
    p.output("c", (x * y) * (x + y))
    doc = chain(compile_program(p, params.preset("insecure-bfv", allow_insecure=True)))
    assert [t["deps"] for t in doc["tasks"]] == [[], [], [0, 1]]
    return doc


def _outputs(db: store.Store, spec: wire.TaskSpec, lie: str = "") -> dict[int, str]:
    """The same digests for every honest replica (of any job with this task index)."""
    index = spec.task_id.rsplit(".", 1)[1]
    out = {sid: digest(f"{index}/{sid}{lie}".encode()) for sid in spec.outputs}
    with db.write() as conn:
        for d in out.values():
            store.insert_absent(conn, store.blobs, {"digest": d, "size": 1, "created_at": 0.0})
    return out


def _result(db: store.Store, spec: wire.TaskSpec, lie: str = "") -> wire.TaskResult:
    return wire.TaskResult(task_id=spec.task_id, attempt=spec.attempt, outputs=_outputs(db, spec, lie))


def _lease(db: store.Store, cfg: settings.QueenSettings, worker: str, n: int, **kw: Any) -> list[Any]:
    return queue.lease(db, cfg, worker, wire.LeaseRequest(max_tasks=n), **kw).tasks


def _one_by_one(
    db: store.Store, cfg: settings.QueenSettings, worker: str, results: list[wire.TaskResult], now: float
) -> list[wire.ResultReceipt]:
    """The reference: every result through the per-result path, in one transaction, as
    ``accept_results`` took them before it had a set-based path."""
    order = sorted(range(len(results)), key=lambda i: results[i].task_id)

    def record(conn: sa.Connection) -> list[wire.ResultReceipt]:
        receipts: dict[int, wire.ResultReceipt] = {}
        for i in order:
            try:
                receipts[i] = queue._accept(conn, cfg, worker, results[i], now, None)
            except errors.HSwarmError as exc:
                body = wire.ErrorBody(code=refusals.classify(exc)[1], message=str(exc))
                receipts[i] = wire.ResultReceipt(accepted=False, error=body)
        if any(r.accepted and not r.duplicate for r in receipts.values()):
            queue._touch(conn, worker, now)
        return [receipts[i] for i in range(len(results))]

    return db.run_write(record)


def _scenario(
    db: store.Store,
    cfg: settings.QueenSettings,
    fhe: Material,
    job: tuple[dict[str, Any], wire.Assurance],
    batched: bool,
    seed: int,
) -> dict[str, Any]:
    """A seeded swarm of honest workers, a liar and a guardian working on one job (one:
    tasks of two jobs queued at one instant are ordered by their random ids); returns
    the answers and the store, ids replaced by names."""
    script = random.Random(seed)
    names = ["a", "b", "c", "liar", "guardian"]
    token = membership.ensure_token(cfg.token_path)
    ids = {}
    for name in names:
        request = wire.Registration(
            token=token,
            name=name,
            owner=name,
            role="guardian" if name == "guardian" else "worker",
            determinism_class="test",
        )
        ids[name] = membership.register(db, cfg, request, now=0.0).worker_id
    jobs = [seed_job(db, fhe, job[0], cfg, job[1])]
    held: dict[str, list[wire.TaskSpec]] = {name: [] for name in names}
    answers: list[Any] = []
    now = 1000.0
    for step in range(80):
        now += 1.0
        name = script.choice(names[:4] if script.random() < 0.8 else names)
        try:
            held[name] += _lease(
                db, cfg, ids[name], script.randint(1, 4), now=now, rng=random.Random(script.random())
            )
        except refusals.QuarantinedError:
            answers.append((name, "quarantined"))
        if not held[name] or script.random() < 0.3:
            continue
        specs = script.sample(held[name], script.randint(1, len(held[name])))
        results = []
        for spec in specs:
            roll = script.random()
            if roll < 0.08:
                results.append(wire.TaskResult(task_id=spec.task_id, attempt=spec.attempt, error="boom"))
            elif roll < 0.12:
                results.append(wire.TaskResult(task_id=spec.task_id, attempt=99, outputs=_outputs(db, spec)))
            else:
                lie = "lie" if name == "liar" and step > 10 and script.random() < 0.5 else ""  # trusted first
                results.append(_result(db, spec, lie))
        if script.random() < 0.3:
            results.append(results[0])  # a resend inside the batch
        if script.random() < 0.8:
            held[name] = [s for s in held[name] if s not in specs]
        if batched:
            receipts = queue.accept_results(db, cfg, ids[name], results, now=now)
        else:
            receipts = _one_by_one(db, cfg, ids[name], results, now)
        answers.append(
            (name, [(r.accepted, r.duplicate, r.error and (r.error.code, r.error.message)) for r in receipts])
        )
    return _normalized(db, jobs, ids, answers)


def _normalized(
    db: store.Store, job_ids: list[str], worker_ids: dict[str, str], answers: list[Any]
) -> dict[str, Any]:
    """Answers, rows and events of these jobs and workers, with names for ids."""
    name = {wid: n for n, wid in worker_ids.items()} | {jid: f"job{i}" for i, jid in enumerate(job_ids)}

    def plain(value: Any) -> Any:
        if isinstance(value, float) and value > 1e8:
            return "wall clock"  # submitted with time.time(); the scenario's own clock is small
        if isinstance(value, str):
            for old, new in name.items():
                value = value.replace(old, new)
            return value
        if isinstance(value, dict):
            return {plain(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    t, r, j, w, res = store.tasks, store.replicas, store.jobs, store.workers, store.results
    snapshot: dict[str, Any] = {"answers": plain(answers)}
    with db.read() as conn:
        for i, job_id in enumerate(job_ids):
            snapshot[f"job{i}"] = plain(
                {
                    "job": conn.execute(
                        sa.select(
                            j.c.state, j.c.tasks_done, j.c.tasks_failed, j.c.reexecuted, j.c.error
                        ).where(j.c.id == job_id)
                    )
                    .one()
                    ._asdict(),
                    "tasks": [
                        {**row._asdict(), "single": bool(row.single), "audit": bool(row.audit)}
                        for row in conn.execute(sa.select(t).where(t.c.job_id == job_id).order_by(t.c.index))
                    ],
                    "replicas": [
                        {**row._asdict(), "guardian": bool(row.guardian), "audit": bool(row.audit)}
                        for row in conn.execute(
                            sa.select(r).where(r.c.job_id == job_id).order_by(r.c.task_id, r.c.attempt)
                        )
                    ],
                    "results": [
                        tuple(row)
                        for row in conn.execute(
                            sa.select(res).where(res.c.job_id == job_id).order_by(res.c.step_id)
                        )
                    ],
                    "events": [
                        (e.kind, e.task_id, e.at, e.data) for e in events.for_job(conn, job_id, limit=100_000)
                    ],
                }
            )
        snapshot["workers"] = plain(
            [
                (
                    row.name,
                    row.state,
                    row.last_seen,
                    row.done,
                    row.streak,
                    row.valid,
                    row.lies,
                    bool(row.quarantined),
                )
                for row in conn.execute(
                    sa.select(w).where(w.c.id.in_(list(worker_ids.values()))).order_by(w.c.name)
                )
            ]
        )
        snapshot["worker_events"] = plain(
            [
                (row.kind, row.worker_id, row.at, row.data)
                for row in conn.execute(
                    sa.select(store.events)
                    .where(
                        store.events.c.job_id.is_(None),
                        store.events.c.worker_id.in_(list(worker_ids.values())),
                    )
                    .order_by(store.events.c.seq)
                )
            ]
        )
    return snapshot


@pytest.fixture
def reference_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A second, empty store of the same backend (ordering ties differ between backends)."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'reference.db'}"
        return
    import psycopg

    name = f"hswarm_ref_{secrets.token_hex(4)}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{db_url.rsplit('/', 1)[0]}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_batch_leaves_what_its_results_one_by_one_leave(
    db: store.Store, make_settings: Any, fhe: Material, reference_url: str
) -> None:
    cfg = make_settings(trust_after=2, max_skip=0.9, audit_rate=0.3, lease_ttl_s=1000.0)
    reference = store.Store(reference_url)
    reference.migrate()
    ref_cfg = settings.QueenSettings(**{**cfg.model_dump(), "db_url": reference.url})
    try:
        jobs = [(wide(fhe.circuit, 16), VERIFIED)] * 3 + [(_diamond(), VERIFIED), (_diamond(), UNVERIFIED)]
        kinds: set[str] = set()
        for seed, job in enumerate(jobs):
            expected = _scenario(reference, ref_cfg, fhe, job, batched=False, seed=seed)
            got = _scenario(db, cfg, fhe, job, batched=True, seed=seed)
            assert got["answers"] == expected["answers"]
            assert got == expected
            kinds |= {e[0] for e in got["job0"]["events"]}
        # the scenarios reach the paths a batch takes on its own and those it hands back
        assert {"task_done", "task_ready", "task_disputed", "lie", "task_failed", "task_reset"} <= kinds
    finally:
        reference.dispose()


def test_a_worker_caught_lying_mid_batch_loses_the_rest_of_it(
    db: store.Store, make_settings: Any, fhe: Material
) -> None:
    cfg = make_settings(trust_after=1, max_skip=0.9, audit_rate=0.5)
    sly, honest = enroll(db, cfg, "sly", "sly"), enroll(db, cfg, "honest", "honest")
    token = membership.ensure_token(cfg.token_path)
    guardian = membership.register(
        db,
        cfg,
        wire.Registration(token=token, name="g", owner="g", role="guardian", determinism_class="test"),
    ).worker_id
    warm = seed_job(db, fhe, wide(fhe.circuit, 2), cfg, VERIFIED)  # a streak of 2 each
    for _ in range(2):
        for w in (sly, honest):
            (spec,) = _lease(db, cfg, w, 1, rng=Draws((0.0,)))
            assert queue.accept_results(db, cfg, w, [_result(db, spec)])[0].accepted
    assert jobs_state(db, warm) == "done"
    job_id = seed_job(db, fhe, wide(fhe.circuit, 3), cfg, VERIFIED)
    # alone and unaudited, alone and audited, replicated
    first, second, third = _lease(db, cfg, sly, 3, rng=Draws((0.99, 0.99, 0.99, 0.0, 0.0)))
    (audit,) = _lease(db, cfg, guardian, 1)
    assert audit.task_id == second.task_id
    assert queue.accept_results(db, cfg, guardian, [_result(db, audit)])[0].accepted
    receipts = queue.accept_results(
        db, cfg, sly, [_result(db, third), _result(db, second, "lie"), _result(db, first, "lie")]
    )
    # first is accepted on its lone vote, second's lie is caught by the guardian's audit:
    # first is run again, third's lease is cancelled before its result is looked at
    assert [(r.accepted, r.error.code if r.error else None) for r in receipts] == [
        (False, "conflict"),
        (True, None),
        (True, None),
    ]
    assert receipts[0].error is not None and "cancelled" in receipts[0].error.message
    with db.read() as conn:
        query = sa.select(store.tasks.c.id, store.tasks.c.state).where(store.tasks.c.job_id == job_id)
        states = dict(conn.execute(query).tuples().all())
        kinds = [e.kind for e in events.for_job(conn, job_id)]
    assert (states[first.task_id], states[second.task_id], states[third.task_id]) == (
        "ready",
        "done",
        "ready",
    )
    assert kinds.count("task_done") == 2 and "lie" in kinds and kinds.count("task_reset") == 1
    assert kinds.index("task_reset") > kinds.index("lie") > kinds.index("task_done")
    worker = next(w for w in membership.list_workers(db).workers if w.name == "sly")
    assert worker.quarantined and worker.lies == 1


def test_a_dependent_of_a_batch_gets_ready_once_right_after_its_last_input(
    db: store.Store, make_settings: Any, fhe: Material
) -> None:
    cfg = make_settings()
    worker = enroll(db, cfg)
    job_id = seed_job(db, fhe, _diamond())
    specs = _lease(db, cfg, worker, 4)
    assert [s.task_id for s in specs] == [f"{job_id}.0", f"{job_id}.1"]
    results = [_result(db, s) for s in specs]
    receipts = queue.accept_results(db, cfg, worker, results + results[:1])
    assert [(r.accepted, r.duplicate) for r in receipts] == [(True, False), (True, False), (True, True)]
    with db.read() as conn:
        log = [(e.kind, e.task_id) for e in events.for_job(conn, job_id)]
        pending = conn.execute(sa.select(store.tasks.c.pending).where(store.tasks.c.id == f"{job_id}.2"))
        assert pending.scalar_one() == 0
    t0, t1, t2 = (f"{job_id}.{i}" for i in range(3))
    assert log[log.index(("task_voted", t0)) :] == [
        ("task_voted", t0),
        ("task_done", t0),
        ("task_voted", t1),
        ("task_done", t1),
        ("task_ready", t2),
    ]
    (last,) = _lease(db, cfg, worker, 4)
    assert queue.accept_results(db, cfg, worker, [_result(db, last)])[0].accepted
    assert jobs_state(db, job_id) == "done"


def jobs_state(db: store.Store, job_id: str) -> str:
    with db.read() as conn:
        return conn.execute(sa.select(store.jobs.c.state).where(store.jobs.c.id == job_id)).scalar_one()
