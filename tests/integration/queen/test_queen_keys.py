"""Key sets and the queen, on SQLite and PostgreSQL: the memory a key set needs is
measured at upload, no worker gets a key set its memory budget cannot hold, workers get
tasks of the key sets they hold first; blob traffic is counted; job status long-polls."""

from __future__ import annotations

import dataclasses
import threading
import time

import sqlalchemy as sa
from queenkit import Driver, Material, digest, enroll, seed_job

from hswarm import wire
from hswarm.queen import jobs, membership, queue, settings, store

GIB = 1 << 30


def _enroll(db: store.Store, cfg: settings.QueenSettings, name: str, memory: int) -> str:
    token = membership.ensure_token(cfg.token_path)
    request = wire.Registration(
        token=token, name=name, owner=name, determinism_class="test", memory_bytes=memory
    )
    return membership.register(db, cfg, request).worker_id


def _needs(db: store.Store, context: str, memory: int) -> None:
    with db.write() as conn:
        conn.execute(
            sa.update(store.contexts).where(store.contexts.c.digest == context).values(memory=memory)
        )


def test_no_worker_gets_a_key_set_its_memory_budget_cannot_hold(
    db: store.Store, make_settings, fhe: Material
) -> None:
    cfg = make_settings()
    job_id = seed_job(db, fhe, fhe.circuit.to_json(), cfg)
    context = digest(fhe.context)
    _needs(db, context, 2 * GIB)
    small = _enroll(db, cfg, "small", 1 * GIB)
    request = wire.LeaseRequest(max_tasks=8)
    assert queue.lease(db, cfg, small, request).tasks == []
    waiting = jobs.status(db, cfg, job_id).waiting
    assert waiting is not None and "2048 MiB" in waiting and "--memory-budget" in waiting

    big = _enroll(db, cfg, "big", 4 * GIB)
    granted = queue.lease(db, cfg, big, request).tasks
    assert granted and all(t.context_memory == 2 * GIB for t in granted)
    assert jobs.status(db, cfg, job_id).waiting is None


def test_a_worker_that_declares_no_budget_is_not_held_back(
    db: store.Store, make_settings, fhe: Material
) -> None:
    cfg = make_settings()
    seed_job(db, fhe, fhe.circuit.to_json(), cfg)
    _needs(db, digest(fhe.context), 64 * GIB)
    unknown = enroll(db, cfg, "old-worker")  # memory_bytes 0: an older worker
    assert queue.lease(db, cfg, unknown, wire.LeaseRequest(max_tasks=1)).tasks


def test_workers_get_tasks_of_the_key_sets_they_hold_first(
    db: store.Store, make_settings, fhe: Material
) -> None:
    cfg = make_settings()
    first = seed_job(db, fhe, fhe.circuit.to_json(), cfg)
    other = dataclasses.replace(fhe, context=fhe.context + b"another key set")
    time.sleep(0.01)
    second = seed_job(db, other, other.circuit.to_json(), cfg)
    warm = _enroll(db, cfg, "warm", 0)
    cold = _enroll(db, cfg, "cold", 0)
    held = [digest(other.context)]
    got = queue.lease(db, cfg, warm, wire.LeaseRequest(max_tasks=1, contexts=held)).tasks
    assert [t.job_id for t in got] == [second]  # younger, but its keys are at hand
    got = queue.lease(db, cfg, cold, wire.LeaseRequest(max_tasks=1)).tasks
    assert [t.job_id for t in got] == [first]  # no keys at hand: the oldest


def test_the_queen_measures_the_memory_a_key_set_takes(queen: Driver, fhe: Material) -> None:
    context = queen.put_context(fhe.context)
    db = store.Store(queen.cfg.db_url)
    try:
        with db.read() as conn:
            memory = conn.execute(
                sa.select(store.contexts.c.memory).where(store.contexts.c.digest == context)
            ).scalar_one()
    finally:
        db.dispose()
    # at least the keys themselves, and the evaluation headroom on top
    assert memory > len(fhe.context)


def test_blob_traffic_is_counted(queen: Driver) -> None:
    before = wire.Traffic.model_validate(queen.client.get("/v1/traffic").json())
    data = b"some ciphertext bytes" * 100
    d = queen.put_blob(data)
    assert queen.client.get(f"/v1/blobs/{d}").content == data
    after = wire.Traffic.model_validate(queen.client.get("/v1/traffic").json())
    assert after.bytes_received - before.bytes_received == len(data)
    assert after.bytes_sent - before.bytes_sent == len(data)
    assert (after.uploads - before.uploads, after.downloads - before.downloads) == (1, 1)


def test_job_status_long_polls_until_a_task_is_done(queen: Driver, fhe: Material) -> None:
    job_id = queen.submit(fhe)
    worker = queen.register("w")
    assert queen.client.get(f"/v1/jobs/{job_id}", params={"wait_s": 0.3, "done": 0}).status_code == 200
    task = queen.lease(worker)[0]
    finish = threading.Timer(0.5, lambda: queen.post_result(worker, task, outputs=queen.outputs(task)))
    began = time.monotonic()
    finish.start()
    try:
        r = queen.client.get(f"/v1/jobs/{job_id}", params={"wait_s": 20, "done": 0})
    finally:
        finish.join()
    waited = time.monotonic() - began
    assert r.status_code == 200 and r.json()["tasks_done"] >= 1
    assert waited < 15  # woken by the result, not by its 20 s limit
    bad = queen.client.get(f"/v1/jobs/{job_id}", params={"wait_s": 99})
    assert bad.status_code == 422
