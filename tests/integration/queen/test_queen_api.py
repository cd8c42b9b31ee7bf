"""The queen over HTTP: a whole job from enrollment to result digests, events, restart."""

from __future__ import annotations

import contextlib
import sqlite3
import stat
import threading
import time
from collections.abc import Callable

import psycopg
import pytest
import sqlalchemy as sa
from queenkit import Driver, Material, chain, digest, snapshot

from hswarm.queen import queue, store


def test_health_readiness_and_openapi(queen: Driver) -> None:
    assert queen.client.get("/healthz").json() == {"status": "ok"}
    assert queen.client.get("/readyz").json() == {"status": "ready"}
    paths = queen.client.get("/openapi.json").json()["paths"]
    assert {"/v1/blobs/{digest}", "/v1/jobs", "/v1/workers/lease", "/v1/workers/result"} <= set(paths)
    token = queen.cfg.token_path
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text().strip()) >= 32


def test_whole_job_from_enrollment_to_result_digests(queen: Driver, fhe: Material) -> None:
    worker = queen.register("w1", owner="lab")
    job_id = queen.submit(fhe, chain(fhe.circuit))
    status = queen.status(job_id)
    assert status["state"] == "running" and status["tasks_total"] == 4 and status["results"] == {}

    produced: dict[int, str] = {}
    for expected_index in range(4):
        tasks = queen.lease(worker, max_tasks=4)
        assert [t["task_id"] for t in tasks] == [f"{job_id}.{expected_index}"]  # a chain: one at a time
        task = tasks[0]
        assert task["context"] == digest(fhe.context) and task["attempt"] == 1
        for sid, d in task["inputs"].items():
            want = digest(fhe.inputs[int(sid)]) if int(sid) in fhe.inputs else produced[int(sid)]
            assert d == want
        outputs = queen.outputs(task)
        produced.update({int(k): v for k, v in outputs.items()})
        r = queen.post_result(worker, task, outputs=outputs, seconds=0.01)
        assert r.json() == {"accepted": True, "duplicate": False, "error": None}

    status = queen.status(job_id)
    assert status["state"] == "done" and status["tasks_done"] == 4 and status["finished_at"]
    wanted = {c for term in fhe.circuit.outputs.values() for c in term.chunks}
    assert {int(k) for k in status["results"]} == wanted
    assert all(status["results"][str(sid)] == produced[sid] for sid in wanted)
    # the blob behind a result digest comes back byte for byte
    d = status["results"][str(max(wanted))]
    body = queen.client.get(f"/v1/blobs/{d}")
    assert body.status_code == 200 and digest(body.content) == d
    assert queen.client.get(f"/v1/blobs/{digest(fhe.context)}").content == fhe.context

    # the event stream replays everything and ends with the job
    with queen.client.websocket_connect(f"/v1/jobs/{job_id}/events") as ws:
        kinds = []
        while not kinds or kinds[-1] != "done":
            kinds.append(ws.receive_json()["kind"])
    assert kinds[0] == "submitted" and kinds.count("task_done") == 4 and kinds.count("task_leased") == 4

    workers = queen.client.get("/v1/workers").json()["workers"]
    assert [(w["name"], w["owner"], w["done"], w["leases"]) for w in workers] == [("w1", "lab", 4, 0)]
    assert [j["job_id"] for j in queen.client.get("/v1/jobs").json()["jobs"]] == [job_id]


def test_long_poll_gets_a_task_submitted_while_it_waits(queen: Driver, fhe: Material) -> None:
    worker = queen.register()
    assert queen.lease(worker, wait_s=0.3) == []  # nothing to do: the long poll runs out
    got: list[list[dict]] = []
    poller = threading.Thread(target=lambda: got.append(queen.lease(worker, max_tasks=8, wait_s=20.0)))
    poller.start()
    time.sleep(0.3)  # the poll is waiting; the loop must still serve this submission
    job_id = queen.submit(fhe)
    poller.join()
    (task,) = got[0]
    assert task["job_id"] == job_id
    assert task["inputs"] == {str(s): digest(b) for s, b in fhe.inputs.items()}
    assert [s["op"] for s in task["steps"]] == [fhe.circuit.steps[i].op for i in fhe.circuit.tasks[0].steps]
    r = queen.post_result(worker, task, outputs=queen.outputs(task))
    assert r.status_code == 200 and queen.status(job_id)["state"] == "done"


def test_event_stream_goes_live_and_ends_with_the_job(queen: Driver, fhe: Material) -> None:
    worker = queen.register()
    job_id = queen.submit(fhe, chain(fhe.circuit))
    with queen.client.websocket_connect(f"/v1/jobs/{job_id}/events") as ws:
        assert [ws.receive_json()["kind"] for _ in range(2)] == ["submitted", "task_ready"]

        def work() -> None:
            while tasks := queen.lease(worker, wait_s=1.0):
                queen.post_result(worker, tasks[0], outputs=queen.outputs(tasks[0]))

        worker_thread = threading.Thread(target=work)
        worker_thread.start()
        seen = []
        while not seen or seen[-1]["kind"] != "done":
            seen.append(ws.receive_json())
        worker_thread.join()
    seqs = [e["seq"] for e in seen]
    assert seqs == sorted(seqs) and [e["kind"] for e in seen].count("task_done") == 4
    assert all(e["job_id"] == job_id for e in seen)


def test_blob_upload_is_idempotent(queen: Driver) -> None:
    data = b"ciphertext bytes" * 1000
    d = digest(data)
    first = queen.client.put(f"/v1/blobs/{d}", content=data)
    again = queen.client.put(f"/v1/blobs/{d}", content=data)
    assert (first.status_code, first.json()["created"]) == (201, True)
    assert (again.status_code, again.json()) == (200, {"digest": d, "size": len(data), "created": False})
    assert queen.client.get(f"/v1/blobs/{d}").content == data


def test_readiness_reports_an_unreachable_store(queen: Driver) -> None:
    running = queen.client.app.state.queen
    running.store.engine = sa.create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:9/none", connect_args={"connect_timeout": 1}
    )
    r = queen.client.get("/readyz")
    assert (r.status_code, r.json()["code"]) == (503, "not_ready")
    assert queen.client.get("/v1/jobs").json()["code"] == "not_ready"
    assert queen.client.get("/healthz").status_code == 200


def test_a_dropped_database_connection_costs_one_refused_request(queen: Driver) -> None:
    running = queen.client.app.state.queen
    if running.store.dialect != "postgresql":
        pytest.skip("PostgreSQL only: a server that drops its connections (a restart)")
    assert queen.client.get("/v1/jobs").status_code == 200  # a connection in the pool
    url = running.store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as admin:  # the server ends the pool's sessions
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert ended is not None and ended[0] >= 1
    answers = [queen.client.get("/v1/jobs") for _ in range(4)]
    # the stale connection's request is refused as retryable; the pool is then discarded
    assert [r.status_code for r in answers] == [503, 200, 200, 200]
    assert answers[0].json()["code"] == "not_ready"


def test_repeated_result_is_a_duplicate_that_changes_nothing(queen: Driver, fhe: Material) -> None:
    worker = queen.register()
    job_id = queen.submit(fhe, chain(fhe.circuit))
    (task,) = queen.lease(worker)
    outputs = queen.outputs(task)
    assert queen.post_result(worker, task, outputs=outputs).json() == {
        "accepted": True,
        "duplicate": False,
        "error": None,
    }
    before = snapshot(queen.cfg)
    again = queen.post_result(worker, task, outputs=outputs)
    assert again.status_code == 200 and again.json() == {"accepted": True, "duplicate": True, "error": None}
    assert snapshot(queen.cfg) == before and queen.status(job_id)["tasks_done"] == 1
    # the same attempt with other bytes is not a duplicate: it contradicts the accepted one
    other = {k: queen.put_blob(b"other" + k.encode()) for k in outputs}
    assert queen.post_result(worker, task, outputs=other).json()["code"] == "conflict"


def test_error_results_requeue_then_fail_the_job(make_queen: Callable[..., Driver], fhe: Material) -> None:
    queen = make_queen(max_attempts=2)
    worker = queen.register()
    job_id = queen.submit(fhe)
    for attempt in (1, 2):
        (task,) = queen.lease(worker)
        assert task["attempt"] == attempt
        assert queen.post_result(worker, task, error="executor crashed").json()["accepted"] is True
    status = queen.status(job_id)
    assert (
        status["state"] == "failed" and "executor crashed" in status["error"] and status["tasks_failed"] == 1
    )
    assert queen.lease(worker) == []


def test_restarted_queen_resumes_the_job_and_sweeps_expired_leases(
    make_queen: Callable[..., Driver], fhe: Material
) -> None:
    first = make_queen(lease_ttl_s=0.2)
    worker = first.register()
    job_id = first.submit(fhe, chain(fhe.circuit))
    (task,) = first.lease(worker)
    first.stop()  # the queen stops while the lease is out
    time.sleep(0.3)

    second = make_queen(lease_ttl_s=5.0)
    status = second.status(job_id)
    assert status["state"] == "running" and status["tasks_total"] == 4
    (again,) = second.lease(worker)  # the enrolled worker's credential still works
    assert again["task_id"] == task["task_id"] and again["attempt"] == 2
    assert second.post_result(worker, task, outputs=second.outputs(task)).json()["code"] == "conflict"
    assert second.post_result(worker, again, outputs=second.outputs(again)).json()["accepted"] is True


def test_heartbeat_renews_held_leases_and_cancels_the_others(queen: Driver, fhe: Material) -> None:
    worker, other = queen.register("w"), queen.register("other")
    queen.submit(fhe)
    (task,) = queen.lease(worker)
    body = {"leases": [task["task_id"], "nojob.0"], "load": 0.5, "contexts": [task["context"]]}
    reply = queen.client.post("/v1/workers/heartbeat", json=body, headers=worker).json()
    assert reply["renewed"] == [task["task_id"]] and reply["cancelled"] == ["nojob.0"]
    assert reply["deadline"] >= task["deadline"]
    foreign = queen.client.post("/v1/workers/heartbeat", json={"leases": [task["task_id"]]}, headers=other)
    assert foreign.json()["cancelled"] == [task["task_id"]]


def test_background_sweeper_hands_a_dead_workers_lease_to_a_live_one(
    make_queen: Callable[..., Driver], fhe: Material
) -> None:
    queen = make_queen(lease_ttl_s=60.0, sweep_interval_s=0.05, suspect_after_s=0.2, dead_after_s=0.4)
    silent, alive = queen.register("silent"), queen.register("alive")
    queen.submit(fhe)
    (task,) = queen.lease(silent)
    time.sleep(0.3)
    queen.client.post("/v1/workers/heartbeat", json={}, headers=alive)
    (taken,) = queen.lease(alive, wait_s=10.0)  # granted once the sweeper buries the silent one
    assert taken["task_id"] == task["task_id"] and taken["attempt"] == 2
    states = {w["name"]: w["state"] for w in queen.client.get("/v1/workers").json()["workers"]}
    assert states["silent"] == "dead"
    assert queen.post_result(silent, task, outputs=queen.outputs(task)).json()["code"] == "conflict"


def _checkpointed(db: store.Store, table: sa.Table) -> int:
    """Rows of ``table`` in SQLite's database file, not counting its write-ahead log."""
    path = db.engine.url.database
    with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as file:
        if not file.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table.name,)).fetchone():
            return 0  # the migrations are still in the log
        return file.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0]


def test_the_sweeper_checkpoints_sqlites_log_so_that_no_commit_has_to(
    make_queen: Callable[..., Driver], fhe: Material
) -> None:
    queen = make_queen(sweep_interval_s=0.05)
    db = queen.client.app.state.queen.store
    if db.dialect != "sqlite":
        pytest.skip("PostgreSQL has no write-ahead log of SQLite's")
    with db.read() as conn:
        backstop = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
    assert backstop == store.WAL_BACKSTOP_PAGES  # commits leave the log to the sweeper
    queen.submit(fhe)
    deadline = time.monotonic() + 10.0
    while _checkpointed(db, store.jobs) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _checkpointed(db, store.jobs) == 1


def test_a_checkpoint_copies_committed_pages_into_the_database_file(db: store.Store) -> None:
    if db.dialect != "sqlite":
        db.checkpoint()  # a no-op
        return
    db.checkpoint()  # the migrations
    with db.write() as conn:
        store.insert_absent(conn, store.blobs, {"digest": digest(b"x"), "size": 1, "created_at": 0.0})
    assert _checkpointed(db, store.blobs) == 0  # committed, in the log only
    db.checkpoint()
    assert _checkpointed(db, store.blobs) == 1


def test_a_lease_waiting_for_the_write_lock_holds_up_no_other_request(queen: Driver, fhe: Material) -> None:
    """On SQLite a lease runs on the event loop only while no thread writes: one that
    would wait for the lock waits in a worker thread, and the queen keeps answering."""
    db = queen.client.app.state.queen.store
    if db.dialect != "sqlite":
        pytest.skip("on PostgreSQL every store call runs in a worker thread, and writers lock rows only")
    headers = queen.register()
    queen.submit(fhe)
    granted: list[dict[str, object]] = []
    answered: list[int] = []
    with db.write():  # a long write in progress (a big job's submission, say)
        lessee = threading.Thread(target=lambda: granted.extend(queen.lease(headers)), daemon=True)
        lessee.start()
        time.sleep(0.3)
        assert lessee.is_alive() and not granted  # it waits for the lock ...
        probe = threading.Thread(
            target=lambda: answered.append(queen.client.get("/healthz").status_code), daemon=True
        )
        probe.start()
        probe.join(5)
        assert answered == [200]  # ... and the event loop is free meanwhile
    lessee.join(10)
    assert len(granted) == 1


def test_a_result_that_readies_a_task_wakes_a_long_polling_lessee(
    queen: Driver, fhe: Material, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the doorbell can wake it here: the long poll's own look-again interval is
    longer than the wait."""
    monkeypatch.setattr(queue, "POLL_INTERVAL_S", 60.0)
    first, second = queen.register("a", owner="a"), queen.register("b", owner="b")
    queen.submit(fhe, chain(fhe.circuit))
    (task,) = queen.lease(first)
    woken: list[list[dict[str, object]]] = []
    lessee = threading.Thread(target=lambda: woken.append(queen.lease(second, wait_s=20.0)), daemon=True)
    lessee.start()
    time.sleep(0.3)  # the lessee is waiting: nothing else is ready
    assert lessee.is_alive()
    assert queen.post_result(first, task, outputs=queen.outputs(task)).status_code == 200
    lessee.join(15)
    assert len(woken) == 1 and len(woken[0]) == 1  # the next task of the chain
