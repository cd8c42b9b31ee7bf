"""The store and the queue services without HTTP, on SQLite and PostgreSQL: schema,
race-free claiming, sweeping, dependencies. Time is passed in (``now``), never slept."""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from queenkit import Material, chain, enroll, fake_outputs, job_submission, seed_job, wide

from hswarm import wire
from hswarm.crypto import params
from hswarm.program import Program, compile_program
from hswarm.queen import events, jobs, membership, queue, refusals, settings, store

Settings = Callable[..., settings.QueenSettings]


def _task(db: store.Store, task_id: str) -> Any:
    with db.read() as conn:
        return conn.execute(sa.select(store.tasks).where(store.tasks.c.id == task_id)).one()


def _replica(db: store.Store, task_id: str) -> Any:
    """The task's newest replica."""
    with db.read() as conn:
        query = sa.select(store.replicas).where(store.replicas.c.task_id == task_id)
        return conn.execute(query.order_by(store.replicas.c.attempt.desc()).limit(1)).one()


def _job(db: store.Store, job_id: str) -> Any:
    with db.read() as conn:
        return conn.execute(sa.select(store.jobs).where(store.jobs.c.id == job_id)).one()


def _kinds(db: store.Store, job_id: str) -> list[str]:
    with db.read() as conn:
        return [e.kind for e in events.for_job(conn, job_id)]


def _lease(
    db: store.Store, cfg: settings.QueenSettings, worker: str, n: int = 1, now: float | None = None
) -> Any:
    return queue.lease(db, cfg, worker, wire.LeaseRequest(max_tasks=n), now=now).tasks


def _done(
    db: store.Store, cfg: settings.QueenSettings, worker: str, spec: wire.TaskSpec, now: float | None = None
) -> Any:
    result = wire.TaskResult(task_id=spec.task_id, attempt=spec.attempt, outputs=fake_outputs(db, spec))
    return queue.accept_result(db, cfg, worker, result, now=now)


def test_migrations_create_exactly_the_store_tables(db: store.Store) -> None:
    db.migrate()  # a second run changes nothing
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), store.metadata) == []
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one() == "0006"


def _alembic(db: store.Store, step: Callable[..., None], revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(store.MIGRATIONS))
    with db.engine.connect() as conn:
        config.attributes["connection"] = conn
        step(config, revision)
        conn.commit()


def test_migration_0005_moves_circuits_out_of_jobs_and_back(db: store.Store) -> None:
    _alembic(db, command.downgrade, "0004")
    circuit, outputs = {"steps": [[0, "input"]], "tasks": []}, [3, 5]
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO contexts (digest, size, params, key_tag, rotation_indices, created_at, memory) "
                "VALUES ('sha256:c', 1, '{}', 't', '[]', 0, 0)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO jobs (id, state, label, context, circuit, quorum, outputs, tasks_total, "
                "tasks_done, tasks_failed, created_at, verify, reexecuted) VALUES "
                "('j1', 'running', '', 'sha256:c', :circuit, 2, :outputs, 1, 0, 0, 0, false, 0)"
            ),
            {"circuit": json.dumps(circuit), "outputs": json.dumps(outputs)},
        )
    try:
        _alembic(db, command.upgrade, "0005")
        with db.read() as conn:
            moved = conn.execute(sa.select(store.circuits)).one()
            assert (moved.job_id, moved.circuit, moved.outputs) == ("j1", circuit, outputs)
            job = conn.execute(sa.select(store.jobs.c.state, store.jobs.c.tasks_total)).one()
            assert tuple(job) == ("running", 1)
        _alembic(db, command.downgrade, "0004")
        with db.engine.connect() as conn:
            back = conn.execute(sa.text("SELECT circuit, outputs FROM jobs WHERE id = 'j1'")).one()
            assert [json.loads(v) if isinstance(v, str) else v for v in back] == [circuit, outputs]
    finally:
        _alembic(db, command.upgrade, "head")
        with db.engine.begin() as conn:
            for table in ("circuits", "jobs", "contexts"):
                conn.execute(sa.text(f"DELETE FROM {table}"))


def test_migration_0006_indexes_a_jobs_replicas_and_back(db: store.Store) -> None:
    def indexes() -> set[str]:
        with db.engine.connect() as conn:
            return {ix["name"] for ix in sa.inspect(conn).get_indexes("replicas")}

    assert {"ix_replicas_job_id_state", "ix_replicas_lied"} <= indexes()
    assert "ix_replicas_job_id" not in indexes()
    try:
        _alembic(db, command.downgrade, "0005")
        assert "ix_replicas_job_id" in indexes()
        assert not {"ix_replicas_job_id_state", "ix_replicas_lied"} & indexes()
    finally:
        _alembic(db, command.upgrade, "head")
    assert {"ix_replicas_job_id_state", "ix_replicas_lied"} <= indexes()


def test_concurrent_lessees_never_get_the_same_task(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    cfg = make_settings()
    job_id = seed_job(db, fhe, wide(fhe.circuit, 48))
    workers = [enroll(db, cfg, f"w{i}") for i in range(4)]
    start = threading.Barrier(len(workers))
    granted: dict[str, list[str]] = {w: [] for w in workers}
    failures: list[BaseException] = []

    def work(worker: str) -> None:
        try:
            start.wait()
            while batch := _lease(db, cfg, worker, n=1 + len(granted[worker]) % 3):
                granted[worker] += [t.task_id for t in batch]
        except BaseException as exc:  # surfaced below: a thread cannot fail the test itself
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    every = [tid for ids in granted.values() for tid in ids]
    assert len(every) == len(set(every)) == 48
    assert sum(1 for ids in granted.values() if ids) >= 2  # they really competed
    with db.read() as conn:
        rows = conn.execute(
            sa.select(store.tasks.c.state, store.tasks.c.attempt).where(store.tasks.c.job_id == job_id)
        )
        assert {tuple(r) for r in rows} == {("leased", 1)}


def test_sweeper_returns_an_expired_lease_and_refuses_its_late_result(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    cfg = make_settings(lease_ttl_s=30.0)
    worker = enroll(db, cfg)
    job_id = seed_job(db, fhe, chain(fhe.circuit))
    t0 = 1_000_000.0
    (spec,) = _lease(db, cfg, worker, now=t0)
    assert spec.deadline == t0 + 30.0
    assert queue.sweep(db, cfg, now=t0 + 29.0)["expired"] == 0
    assert queue.sweep(db, cfg, now=t0 + 31.0)["expired"] == 1
    row = _task(db, spec.task_id)
    assert (row.state, row.attempt, row.in_flight, row.wanted) == ("ready", 1, 0, 1)
    assert _replica(db, spec.task_id).state == "lost"
    with pytest.raises(refusals.ConflictError):
        _done(db, cfg, worker, spec, now=t0 + 32.0)
    (again,) = _lease(db, cfg, worker, now=t0 + 33.0)
    assert again.task_id == spec.task_id and again.attempt == 2
    assert _kinds(db, job_id)[-3:] == ["task_leased", "task_ready", "task_leased"]


def test_a_big_submission_refreshes_the_planner_statistics_on_postgresql(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    if db.dialect != "postgresql":
        pytest.skip("SQLite plans without statistics")
    seed_job(db, fhe, wide(fhe.circuit, 60), make_settings())
    with db.read() as conn:
        known = "SELECT reltuples FROM pg_class WHERE relname = 'tasks'"
        assert conn.exec_driver_sql(known).scalar_one() == 60  # analyzed with the new rows


def test_a_submission_keeps_nothing_of_its_circuit_and_turns_the_collector_back_on(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    """SQLAlchemy's statement cache keeps the first statement of each shape with the values
    written into it: the first job's circuit stayed alive, for every full collection to
    scan (100k objects for 8000 tasks)."""
    cfg = make_settings()
    submission = job_submission(db, fhe, wide(fhe.circuit, 3))
    jobs.submit(db, cfg, submission)  # the first of this store's engine
    holders = [r for r in gc.get_referrers(submission.circuit) if r is not submission.__dict__]
    assert holders == []
    assert gc.isenabled()
    with pytest.raises(refusals.NotFoundError):
        jobs.submit(db, cfg, submission.model_copy(update={"context": "sha256:" + "0" * 64}))
    assert gc.isenabled()


def test_last_attempt_expiring_fails_the_job(db: store.Store, make_settings: Settings, fhe: Material) -> None:
    cfg = make_settings(lease_ttl_s=10.0, max_attempts=1)
    worker = enroll(db, cfg)
    job_id = seed_job(db, fhe, chain(fhe.circuit))
    _lease(db, cfg, worker, now=100.0)
    queue.sweep(db, cfg, now=111.0)
    job = _job(db, job_id)
    assert job.state == "failed" and "lease_expired" in job.error and job.tasks_failed == 4
    assert _kinds(db, job_id)[-2:] == ["task_failed", "failed"]
    assert _lease(db, cfg, worker, now=112.0) == []


def test_silent_worker_turns_suspect_then_dead_and_loses_its_leases(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    cfg = make_settings(lease_ttl_s=1000.0, suspect_after_s=15.0, dead_after_s=45.0)
    t0 = 2_000_000.0
    silent, busy = enroll(db, cfg, "silent"), enroll(db, cfg, "busy")
    seed_job(db, fhe, chain(fhe.circuit))
    (spec,) = _lease(db, cfg, silent, now=t0)
    queue.heartbeat(db, cfg, busy, wire.Heartbeat(), now=t0 + 40.0)
    report = queue.sweep(db, cfg, now=t0 + 16.0)
    assert report["suspect"] >= 1 and report["dead"] == 0
    report = queue.sweep(db, cfg, now=t0 + 46.0)
    assert (report["dead"], report["requeued"]) == (1, 1)
    states = {w.name: w.state for w in _workers(db)}
    assert states == {"silent": "dead", "busy": "alive"}
    (taken,) = _lease(db, cfg, busy, now=t0 + 47.0)
    assert taken.task_id == spec.task_id and taken.attempt == 2
    # the dead worker comes back: alive again, but its old lease is gone
    reply = queue.heartbeat(db, cfg, silent, wire.Heartbeat(leases=[spec.task_id]), now=t0 + 48.0)
    assert reply.cancelled == [spec.task_id] and reply.renewed == []
    assert {w.name: w.state for w in _workers(db)}["silent"] == "alive"


def _workers(db: store.Store) -> list[Any]:
    with db.read() as conn:
        return conn.execute(sa.select(store.workers)).all()


def test_dependent_becomes_ready_once_when_its_inputs_finish_together(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    cfg = make_settings()
    p = Program()
    x, y = p.input("x", 8), p.input("y", 8)
    p.output("c", (x * y) * (x + y))
    diamond = chain(compile_program(p, params.preset("insecure-bfv", allow_insecure=True)))
    assert [t["deps"] for t in diamond["tasks"]] == [[], [], [0, 1]]
    w1, w2 = enroll(db, cfg, "w1"), enroll(db, cfg, "w2")
    for _ in range(4):
        job_id = seed_job(db, fhe, diamond)
        first, second = _lease(db, cfg, w1), _lease(db, cfg, w2)
        assert len(first) == len(second) == 1
        start = threading.Barrier(2)

        def finish(worker: str, spec: wire.TaskSpec, start: threading.Barrier = start) -> None:
            start.wait()
            _done(db, cfg, worker, spec)

        threads = [threading.Thread(target=finish, args=a) for a in ((w1, first[0]), (w2, second[0]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        last = _task(db, f"{job_id}.2")
        assert (last.state, last.pending) == ("ready", 0)
        assert _kinds(db, job_id).count("task_ready") == 3
        (spec,) = _lease(db, cfg, w1)
        assert set(spec.inputs) == {2, 3}
        _done(db, cfg, w1, spec)
        job = _job(db, job_id)
        assert (job.state, job.tasks_done) == ("done", 3)


def test_a_result_reports_work_made_ready_only_when_it_made_some(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    """``on_ready`` wakes the idle lessees: after a result that readied a dependent or asked
    for another replica, never after one that readied nothing."""
    cfg = make_settings()
    worker = enroll(db, cfg)
    calls: list[str] = []

    def finish(spec: wire.TaskSpec, tag: str, error: str | None = None) -> None:
        outputs = {} if error else fake_outputs(db, spec)
        result = wire.TaskResult(task_id=spec.task_id, attempt=spec.attempt, outputs=outputs, error=error)
        queue.accept_results(db, cfg, worker, [result], on_ready=lambda: calls.append(tag))

    seed_job(db, fhe, wide(fhe.circuit, 2))  # independent tasks: nothing waits on them
    for spec in _lease(db, cfg, worker, n=10):
        finish(spec, "wide")
    assert calls == []
    seed_job(db, fhe, chain(fhe.circuit))  # each task readies the next
    (spec,) = _lease(db, cfg, worker)
    finish(spec, "chain")
    assert calls == ["chain"]
    (spec,) = _lease(db, cfg, worker)
    finish(spec, "error", error="executor crashed")  # the task is ready again, for a retry
    assert calls == ["chain", "error"]


def test_a_worker_that_can_take_nothing_polls_without_the_write_lock(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    """Its empty answer comes from a read: an idle fleet's polls never queue behind writers."""
    cfg = make_settings()
    seed_job(db, fhe, wide(fhe.circuit, 2))
    with db.write() as conn:
        conn.execute(sa.update(store.contexts).values(memory=1 << 40))  # a key set of 1 TiB
    token = membership.ensure_token(cfg.token_path)
    small = wire.Registration(
        token=token, name="small", owner="", determinism_class="test", memory_bytes=1 << 30
    )
    worker = membership.register(db, cfg, small).worker_id
    answers: list[Any] = []
    with db.write():  # another request is writing
        poll = threading.Thread(target=lambda: answers.append(_lease(db, cfg, worker)), daemon=True)
        poll.start()
        poll.join(5)
        assert answers == [[]]


def test_heartbeat_renews_only_unexpired_leases_of_the_caller(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    cfg = make_settings(lease_ttl_s=10.0)
    worker = enroll(db, cfg)
    seed_job(db, fhe, wide(fhe.circuit, 2))
    first, second = _lease(db, cfg, worker, n=2, now=100.0)
    reply = queue.heartbeat(db, cfg, worker, wire.Heartbeat(leases=[first.task_id]), now=108.0)
    assert (reply.renewed, reply.cancelled, reply.deadline) == ([first.task_id], [], 118.0)
    assert _replica(db, second.task_id).deadline == 110.0  # not listed: not renewed
    late = queue.heartbeat(db, cfg, worker, wire.Heartbeat(leases=[first.task_id, second.task_id]), now=111.0)
    assert (late.renewed, late.cancelled) == ([first.task_id], [second.task_id])
    _done(db, cfg, worker, first, now=117.0)  # within the renewed deadline
    with pytest.raises(refusals.ConflictError, match="expired"):
        _done(db, cfg, worker, second, now=112.0)
