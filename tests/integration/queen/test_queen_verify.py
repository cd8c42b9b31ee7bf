"""Verification in the queue, on SQLite and PostgreSQL: replicas on distinct owners, a
digest quorum, escalation, quarantine, adaptive replication, audits, re-execution after a
caught lie, and the job's assurance report. Time and randomness are passed in."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from queenkit import Material, chain, digest, enroll, seed_job, wide

from hswarm import wire
from hswarm.queen import events, jobs, membership, queue, refusals, settings, store

Settings = Callable[..., settings.QueenSettings]
VERIFIED = wire.Assurance(quorum=2, verify=True)


class Fixed(random.Random):
    """A random source that always draws ``u``: 0.99 skips replication, 0.0 audits."""

    def __init__(self, u: float) -> None:
        super().__init__(0)
        self.u = u

    def random(self) -> float:
        return self.u


def _outputs(db: store.Store, spec: wire.TaskSpec, lie: str = "") -> dict[int, str]:
    """The task's outputs: the same bytes for every honest replica, other bytes for a lie."""
    out = {sid: digest(f"{spec.task_id}/{sid}{lie}".encode()) for sid in spec.outputs}
    with db.write() as conn:
        for d in out.values():
            store.insert_absent(conn, store.blobs, {"digest": d, "size": 1, "created_at": 0.0})
    return out


def _lease(db: store.Store, cfg: settings.QueenSettings, worker: str, n: int = 1, **kw: Any) -> list[Any]:
    return queue.lease(db, cfg, worker, wire.LeaseRequest(max_tasks=n), **kw).tasks


def _answer(
    db: store.Store, cfg: settings.QueenSettings, worker: str, spec: wire.TaskSpec, lie: str = ""
) -> wire.ResultReceipt:
    result = wire.TaskResult(task_id=spec.task_id, attempt=spec.attempt, outputs=_outputs(db, spec, lie))
    return queue.accept_result(db, cfg, worker, result)


def _status(db: store.Store, cfg: settings.QueenSettings, job_id: str) -> wire.JobStatus:
    return jobs.status(db, cfg, job_id)


def _kinds(db: store.Store, job_id: str) -> list[str]:
    with db.read() as conn:
        return [e.kind for e in events.for_job(conn, job_id)]


def _one_task_job(db: store.Store, cfg: settings.QueenSettings, fhe: Material, copies: int = 1) -> str:
    doc = wide(fhe.circuit, copies)
    assert len(doc["tasks"]) == copies * len(fhe.circuit.tasks)
    return seed_job(db, fhe, doc, cfg, VERIFIED)


def _warm_up(db: store.Store, cfg: settings.QueenSettings, fhe: Material, *workers: str) -> None:
    """Two verified results each: a streak of 2, so 1/streak lets a task skip replication."""
    job_id = _one_task_job(db, cfg, fhe, copies=2)
    for _ in range(2):
        for w in workers:
            (spec,) = _lease(db, cfg, w, rng=Fixed(0.0))
            _answer(db, cfg, w, spec)
    assert _status(db, cfg, job_id).state == "done"


def test_two_owners_agreeing_accept_a_task_and_one_owner_alone_waits_saying_why(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    cfg = make_settings()
    a, a2, b = enroll(db, cfg, "a", "acme"), enroll(db, cfg, "a2", "acme"), enroll(db, cfg, "b", "bolt")
    job_id = _one_task_job(db, cfg, fhe)
    (first,) = _lease(db, cfg, a)
    assert _lease(db, cfg, a2) == []  # same owner: its vote would not count twice
    _answer(db, cfg, a, first)
    status = _status(db, cfg, job_id)
    assert (status.state, status.tasks_done) == ("running", 0)  # one vote is not a quorum
    (second,) = _lease(db, cfg, b)
    assert second.task_id == first.task_id and second.attempt == 2
    _answer(db, cfg, b, second)
    status = _status(db, cfg, job_id)
    assert status.state == "done" and status.results
    report = status.assurance
    assert (report.verified, report.quorum, report.replicas, report.disagreements, report.lies) == (
        True,
        2,
        2,
        0,
        0,
    )
    assert report.wrong_bound == 0.0


def test_job_says_why_it_waits_when_too_few_owners_are_alive(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    cfg = make_settings()
    enroll(db, cfg, "only", "acme")
    job_id = _one_task_job(db, cfg, fhe)
    waiting = _status(db, cfg, job_id).waiting
    assert waiting is not None and "2 matching results" in waiting and "1 owner" in waiting


def test_a_disagreement_escalates_and_the_liar_is_quarantined(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    cfg = make_settings()
    honest, liar, third = (enroll(db, cfg, n, n) for n in ("honest", "liar", "third"))
    job_id = _one_task_job(db, cfg, fhe)
    (h,) = _lease(db, cfg, honest)
    (lie,) = _lease(db, cfg, liar)
    _answer(db, cfg, honest, h)
    _answer(db, cfg, liar, lie, lie="x")
    assert _status(db, cfg, job_id).state == "running"  # 1 vs 1: no digest has f+1 votes
    (tie_break,) = _lease(db, cfg, third)
    assert tie_break.attempt == 3
    _answer(db, cfg, third, tie_break)
    status = _status(db, cfg, job_id)
    assert status.state == "done"
    assert status.results == {
        int(k): v for k, v in _outputs(db, h).items() if int(k) in status.results
    }  # the honest outputs
    report = status.assurance
    assert (report.disagreements, report.lies, report.quarantined) == (1, 1, [liar])
    kinds = _kinds(db, job_id)
    assert "task_disputed" in kinds and "lie" in kinds
    with pytest.raises(refusals.QuarantinedError):
        _lease(db, cfg, liar)
    standing = {w.name: (w.quarantined, w.lies, w.streak) for w in membership.list_workers(db).workers}
    assert standing == {"honest": (False, 0, 1), "liar": (True, 1, 0), "third": (False, 0, 1)}
    queue.release(db, liar)
    assert not next(w for w in membership.list_workers(db).workers if w.name == "liar").quarantined


def test_colluders_of_one_owner_cannot_outvote_the_truth(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    cfg = make_settings()
    c1, c2 = enroll(db, cfg, "c1", "cartel"), enroll(db, cfg, "c2", "cartel")
    h1, h2 = enroll(db, cfg, "h1", "h1"), enroll(db, cfg, "h2", "h2")
    job_id = _one_task_job(db, cfg, fhe)
    (x,) = _lease(db, cfg, c1)
    assert _lease(db, cfg, c2) == []  # its owner already holds a replica
    (y,) = _lease(db, cfg, h1)
    _answer(db, cfg, c1, x, lie="cartel")
    _answer(db, cfg, h1, y)
    (z,) = _lease(db, cfg, h2)
    _answer(db, cfg, h2, z)
    status = _status(db, cfg, job_id)
    assert status.state == "done" and status.assurance.quarantined == [c1]


def test_adaptive_replication_runs_a_trusted_worker_alone_and_a_guardian_audits_it(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    cfg = make_settings(trust_after=1, max_skip=0.9, audit_rate=1.0)
    a, b = enroll(db, cfg, "a", "a"), enroll(db, cfg, "b", "b")
    guardian = membership.register(
        db,
        cfg,
        wire.Registration(
            token=membership.ensure_token(cfg.token_path),
            name="g",
            owner="data-owner",
            role="guardian",
            determinism_class="test",
        ),
    ).worker_id
    _warm_up(db, cfg, fhe, a, b)
    job_id = _one_task_job(db, cfg, fhe)
    (alone,) = _lease(db, cfg, a, rng=Fixed(0.99))  # u=0.99: not replicated; then audited
    assert _lease(db, cfg, b, rng=Fixed(0.99)) == []  # the audit slot is the guardian's
    (audit,) = _lease(db, cfg, guardian, rng=Fixed(0.99))
    assert audit.task_id == alone.task_id
    _answer(db, cfg, a, alone, lie="sly")
    assert _status(db, cfg, job_id).state == "running"  # waits for its audit
    _answer(db, cfg, guardian, audit)
    status = _status(db, cfg, job_id)
    assert status.state == "done" and status.assurance.quarantined == [a]
    assert (status.assurance.unreplicated, status.assurance.audits) == (1, 1)


def test_a_caught_liar_has_its_unconfirmed_results_in_open_jobs_run_again(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    cfg = make_settings(trust_after=1, max_skip=0.9, audit_rate=0.0)
    a, b, c = enroll(db, cfg, "a", "a"), enroll(db, cfg, "b", "b"), enroll(db, cfg, "c", "c")
    _warm_up(db, cfg, fhe, a, b)
    copies = 2
    job_id = _one_task_job(db, cfg, fhe, copies)
    (alone,) = _lease(db, cfg, a, rng=Fixed(0.99))  # trusted, unreplicated, unaudited
    _answer(db, cfg, a, alone, lie="sly")  # accepted on its own vote for now
    assert _status(db, cfg, job_id).tasks_done == 1
    (replicated,) = _lease(db, cfg, a, rng=Fixed(0.0))  # u=0: replicated this time
    (other,) = _lease(db, cfg, b, rng=Fixed(0.0))
    assert other.task_id == replicated.task_id
    _answer(db, cfg, a, replicated, lie="sly")
    _answer(db, cfg, b, other)
    (third,) = _lease(db, cfg, c, rng=Fixed(0.0))
    _answer(db, cfg, c, third)  # a is caught: its lonely result in this open job is redone
    status = _status(db, cfg, job_id)
    assert (status.state, status.tasks_done, status.assurance.reexecuted) == ("running", 1, 1)
    assert "task_reset" in _kinds(db, job_id)
    for w in (b, c):
        (redo,) = _lease(db, cfg, w, rng=Fixed(0.0))
        assert redo.task_id == alone.task_id
        _answer(db, cfg, w, redo)
    status = _status(db, cfg, job_id)
    assert status.state == "done" and status.assurance.quarantined == [a]
    with db.read() as conn:
        accepted = conn.execute(
            sa.select(store.results.c.digest).where(store.results.c.task_id == alone.task_id)
        ).scalars()
        assert set(accepted) == set(_outputs(db, alone).values())  # the honest result


def test_a_batch_of_results_takes_each_on_its_own(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    cfg = make_settings()
    worker = enroll(db, cfg)
    seed_job(db, fhe, wide(fhe.circuit, 3), cfg)  # unverified
    specs = _lease(db, cfg, worker, n=3)
    results = [wire.TaskResult(task_id=s.task_id, attempt=s.attempt, outputs=_outputs(db, s)) for s in specs]
    results[1] = wire.TaskResult(task_id=specs[1].task_id, attempt=99, outputs=_outputs(db, specs[1]))
    receipts = queue.accept_results(db, cfg, worker, results)
    assert [r.accepted for r in receipts] == [True, False, True]
    assert receipts[1].error is not None and receipts[1].error.code == "conflict"
    again = queue.accept_results(db, cfg, worker, results[:1])
    assert again[0].duplicate


def test_a_faulty_worker_registers_only_where_the_queen_allows_it(
    db: store.Store, make_settings: Settings
) -> None:
    strict, lax = make_settings(), make_settings(allow_faulty_workers=True)
    token = membership.ensure_token(strict.token_path)
    request = wire.Registration(token=token, name="f", determinism_class="test", fault="garbage")
    with pytest.raises(refusals.ForbiddenError, match="does not allow faulty workers"):
        membership.register(db, strict, request)
    assert membership.register(db, lax, request).worker_id


def _guardian(db: store.Store, cfg: settings.QueenSettings, owner: str) -> str:
    token = membership.ensure_token(cfg.token_path)
    request = wire.Registration(token=token, name="g", owner=owner, role="guardian", determinism_class="test")
    return membership.register(db, cfg, request).worker_id


def test_a_guardian_settles_a_fresh_task_alone(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    cfg = make_settings(audit_rate=1.0)
    guardian = _guardian(db, cfg, "data-owner")
    enroll(db, cfg, "a", "a")
    job_id = _one_task_job(db, cfg, fhe)
    (spec,) = _lease(db, cfg, guardian, rng=Fixed(0.99))
    _answer(db, cfg, guardian, spec)
    status = _status(db, cfg, job_id)
    assert status.state == "done" and status.assurance.replicas == 1  # no audit of a guardian


def test_no_audit_slot_waits_for_a_guardian_of_the_audited_workers_own_owner(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    cfg = make_settings(trust_after=1, max_skip=0.9, audit_rate=1.0)
    a, b = enroll(db, cfg, "a", "lab"), enroll(db, cfg, "b", "b")
    _guardian(db, cfg, "lab")  # the only guardian shares a's owner: it may not audit a
    _warm_up(db, cfg, fhe, a, b)
    job_id = _one_task_job(db, cfg, fhe)
    (first,) = _lease(db, cfg, a, rng=Fixed(0.99))  # trusted and drawn for an audit ...
    (second,) = _lease(db, cfg, b, rng=Fixed(0.99))  # ... so it is replicated instead
    assert second.task_id == first.task_id
    _answer(db, cfg, a, first)
    _answer(db, cfg, b, second)
    assert _status(db, cfg, job_id).state == "done"


def test_a_dependent_that_becomes_ready_wants_its_full_quorum_at_once(
    db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    cfg = make_settings()
    a, b = enroll(db, cfg, "a", "a"), enroll(db, cfg, "b", "b")
    job_id = seed_job(db, fhe, chain(fhe.circuit), cfg, VERIFIED)
    for _ in range(len(chain(fhe.circuit)["tasks"])):
        (x,) = _lease(db, cfg, a)
        (y,) = _lease(db, cfg, b)  # both replicas of each task are out together
        assert x.task_id == y.task_id
        _answer(db, cfg, a, x)
        _answer(db, cfg, b, y)
    status = _status(db, cfg, job_id)
    assert status.state == "done" and status.assurance.disagreements == 0


def test_a_running_jobs_counts_are_kept_a_while_and_an_ended_jobs_are_fresh(
    db: store.Store, make_settings: Settings, fhe: Material, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_settings()
    a, b = enroll(db, cfg, "a", "a"), enroll(db, cfg, "b", "b")
    job_id = _one_task_job(db, cfg, fhe, copies=2)
    monkeypatch.setattr(jobs, "_COUNTS_REUSE", 1e9)  # kept until the job ends
    for spec in _lease(db, cfg, a, n=2):
        _answer(db, cfg, a, spec)
    assert _status(db, cfg, job_id).assurance.replicas == 2
    (y,) = _lease(db, cfg, b)
    _answer(db, cfg, b, y)
    status = _status(db, cfg, job_id)
    assert (status.tasks_done, status.assurance.replicas) == (1, 2)  # the kept counts
    monkeypatch.setattr(jobs, "_COUNTS_REUSE", 0.0)
    jobs._kept.clear()
    assert _status(db, cfg, job_id).assurance.replicas == 3  # counted again
    monkeypatch.setattr(jobs, "_COUNTS_REUSE", 1e9)
    (z,) = _lease(db, cfg, b)
    _answer(db, cfg, b, z)
    status = _status(db, cfg, job_id)
    assert (status.state, status.assurance.replicas) == ("done", 4)  # an ended job: fresh
    assert job_id not in jobs._kept


def test_a_jobs_counts_read_its_own_replicas_through_their_indexes(db: store.Store) -> None:
    """Not every voted replica in the store: SQLite's planner, without statistics, read
    them all through ``(state, deadline)`` before ``ix_replicas_job_id_state``."""
    if db.dialect != "sqlite":
        pytest.skip("PostgreSQL plans from statistics; a small table is read whole")
    plans: list[str] = []
    with db.read() as conn:
        raw = conn.connection.driver_connection
        original = conn.execute

        def explain(statement: Any, *args: Any, **kw: Any) -> Any:
            compiled = statement.compile(conn, compile_kwargs={"literal_binds": True})
            plans.append(" ".join(row[-1] for row in raw.execute(f"EXPLAIN QUERY PLAN {compiled}")))
            return original(statement, *args, **kw)

        conn.execute = explain  # type: ignore[method-assign]
        jobs._count(conn, "j")
    replica_plans = [p for p in plans if "replicas" in p]
    assert len(replica_plans) == 3, plans
    assert all("ix_replicas_job_id_state" in p or "ix_replicas_lied" in p for p in replica_plans), plans
    assert "ix_replicas_lied" in replica_plans[2] and "COVERING INDEX" in replica_plans[0], plans
