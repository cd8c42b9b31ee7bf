"""The worker end to end: a real worker process (supervisor and executor children, real
OpenFHE) against the fake queen. It registers, leases, fetches blobs, computes, uploads
byte-identical results, heartbeats during long tasks, abandons cancelled leases,
survives a killed executor, and stops cleanly on SIGTERM (at once on a second one)."""

from __future__ import annotations

import os
import re
import signal
import time

from fake_queen import FakeQueen, digest
from worker_harness import Material, pid_alive, wait_until

EXECUTING = r"task {}: executing"
EXECUTOR_READY = r"executor (\d+) ready"


def _task_ids(job: str, material: Material, name: str) -> list[str]:
    return [f"{job}-{t.id}" for t in material.circuits[name].tasks]


def _check_outputs(queen: FakeQueen, material: Material, name: str, job: str) -> None:
    reference = material.reference(name)
    for task in material.circuits[name].tasks:
        result = queen.result_for(f"{job}-{task.id}")
        assert result is not None and result.error is None, result
        assert result.attempt == 1 and result.seconds > 0
        assert sorted(result.outputs) == sorted(task.outputs)
        for sid, d in result.outputs.items():
            assert queen.blobs[d] == reference[sid], f"step {sid}: uploaded bytes differ from local execution"
            assert d == digest(reference[sid])


def test_worker_computes_a_circuit_byte_identical_to_local_execution(
    queen: FakeQueen, material: Material, spawn_worker
) -> None:
    inputs = material.publish(queen, "batch")
    queen.add_circuit("job1", material.circuits["batch"], material.context, inputs)
    tasks = _task_ids("job1", material, "batch")
    assert len(tasks) == 3
    worker = spawn_worker(queen, executors=2)

    assert queen.wait_for(lambda: len(queen.results) == len(tasks), 90), worker.log
    _check_outputs(queen, material, "batch", "job1")

    registration = queen.registrations[0]
    assert registration.name == "test-worker" and registration.role == "worker"
    assert registration.fault is None  # an honest worker declares no fault
    assert registration.executors == 2 and registration.determinism_class.startswith("openfhe-")
    # Once the context is cached, the worker advertises it when it asks for work.
    assert queen.wait_for(lambda: material.context in queen.lease_requests[-1].contexts, 10)
    for task_id in tasks:  # one log line per task (id, ops, seconds), written after posting
        worker.wait_line(
            rf"task {task_id} attempt 1 \(job job1\): \d+ step\(s\) \[.*mul:\d.*\] done in [\d.]+ s"
        )
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log


def test_blobs_whose_bytes_do_not_match_their_digest_are_rejected(
    queen: FakeQueen, material: Material, spawn_worker, tmp_path
) -> None:
    inputs = material.publish(queen, "batch")
    bad = inputs[0]
    queen.corrupt[bad] = material.inputs["batch"][1]  # a valid ciphertext, but not this digest's
    circuit = material.circuits["batch"]
    reads_bad = [t.id for t in circuit.tasks if 0 in t.inputs]
    queen.add_circuit("job2", circuit, material.context, inputs)
    worker = spawn_worker(queen)

    assert queen.wait_for(lambda: len(queen.results) == len(circuit.tasks), 90), worker.log
    for task in circuit.tasks:
        result = queen.result_for(f"job2-{task.id}")
        assert result is not None
        if task.id in reads_bad:
            assert result.error is not None
            assert result.error.startswith("DigestMismatchError: cannot accept blob")
            assert not result.outputs
        else:
            assert result.error is None
    blobs = tmp_path / "cache-0" / "blob"
    assert not (blobs / bad.removeprefix("sha256:")).exists()
    assert not list((tmp_path / "cache-0" / "tmp").iterdir())

    # A cached file damaged on disk is caught by the executor, reported and discarded;
    # the next task that needs it downloads it again.
    good = inputs[1]
    cached = blobs / good.removeprefix("sha256:")
    cached.write_bytes(b"\x00" + cached.read_bytes()[1:])
    reads_good = [t.id for t in circuit.tasks if 1 in t.inputs]
    queen.add_circuit("job2b", circuit, material.context, inputs, tasks=reads_good)
    assert queen.wait_for(lambda: queen.result_for(f"job2b-{reads_good[0]}") is not None, 60), worker.log
    result = queen.result_for(f"job2b-{reads_good[0]}")
    assert result is not None and result.error is not None
    assert result.error.startswith(f"DigestMismatchError: cannot use input {good} of step 1")
    assert wait_until(lambda: not cached.exists(), 10)
    queen.add_circuit("job2c", circuit, material.context, inputs, tasks=reads_good)
    assert queen.wait_for(lambda: queen.result_for(f"job2c-{reads_good[0]}") is not None, 60), worker.log
    result = queen.result_for(f"job2c-{reads_good[0]}")
    assert result is not None and result.error is None, result
    assert cached.read_bytes() == material.inputs["batch"][1]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log


def test_sigterm_during_a_task_finishes_it_with_heartbeats_then_exits_0(
    queen: FakeQueen, material: Material, spawn_worker
) -> None:
    inputs = material.publish(queen, "slow")
    queen.add_circuit("job3", material.circuits["slow"], material.context, inputs)
    (task_id,) = _task_ids("job3", material, "slow")
    worker = spawn_worker(queen)

    worker.wait_line(EXECUTING.format(task_id))
    leases_before = len(queen.lease_requests)
    worker.signal(signal.SIGTERM)
    assert worker.wait(90) == 0, worker.log

    result = queen.result_for(task_id)
    assert result is not None and result.error is None, result
    assert sorted(result.outputs) == list(material.circuits["slow"].tasks[0].outputs)
    assert all(d in queen.blobs for d in result.outputs.values())
    assert len(queen.lease_requests) == leases_before, "the worker leased after SIGTERM"
    leased_at = queen.leased[0][0]
    posted_at = queen.results[0][0]
    during = [beat for at, beat in queen.heartbeats if leased_at < at < posted_at and task_id in beat.leases]
    assert len(during) >= 2, f"heartbeats while the task ran: {len(during)}\n{worker.log}"
    assert "SIGTERM: finishing 1 task(s)" in worker.log


def test_executor_killed_mid_task_is_replaced_and_the_task_reported_as_error(
    queen: FakeQueen, material: Material, spawn_worker
) -> None:
    inputs = material.publish(queen, "endless")
    queen.add_circuit("job4", material.circuits["endless"], material.context, inputs)
    (task_id,) = _task_ids("job4", material, "endless")
    worker = spawn_worker(queen)

    first = int(worker.wait_line(EXECUTOR_READY).group(1))
    worker.wait_line(EXECUTING.format(task_id))
    time.sleep(0.3)
    os.kill(first, signal.SIGKILL)
    assert queen.wait_for(lambda: queen.result_for(task_id) is not None, 30), worker.log
    result = queen.result_for(task_id)
    assert result is not None and result.error is not None
    assert result.error.startswith("EvaluationError: cannot execute task")
    assert "died (killed by SIGKILL)" in result.error

    # The next task gets a fresh executor and succeeds.
    queen.add_circuit("job5", material.circuits["batch"], material.context, material.publish(queen, "batch"))
    assert queen.wait_for(lambda: len(queen.results) == 1 + len(material.circuits["batch"].tasks), 90)
    _check_outputs(queen, material, "batch", "job5")
    lines = worker.lines
    second = [int(m.group(1)) for m in map(re.compile(EXECUTOR_READY).search, lines) if m]
    assert second[0] == first and len(second) == 2 and second[1] != first
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log


def test_cancelled_lease_is_abandoned_and_nothing_is_posted(
    queen: FakeQueen, material: Material, spawn_worker
) -> None:
    inputs = material.publish(queen, "endless")
    queen.add_circuit("job6", material.circuits["endless"], material.context, inputs)
    (task_id,) = _task_ids("job6", material, "endless")
    worker = spawn_worker(queen)

    pid = int(worker.wait_line(EXECUTOR_READY).group(1))
    worker.wait_line(EXECUTING.format(task_id))
    queen.cancel.add(task_id)
    worker.wait_line(rf"task {task_id} attempt 1 .* abandoned: .*the queen cancelled its lease", 30)
    assert wait_until(lambda: not pid_alive(pid), 10), "the executor of a cancelled task keeps running"
    # The worker goes on asking for work, and stops cleanly.
    count = len(queen.lease_requests)
    assert queen.wait_for(lambda: len(queen.lease_requests) > count, 10)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log
    assert queen.result_for(task_id) is None


def test_second_sigterm_exits_at_once_and_kills_the_executors(
    queen: FakeQueen, material: Material, spawn_worker
) -> None:
    inputs = material.publish(queen, "endless")
    queen.add_circuit("job7", material.circuits["endless"], material.context, inputs)
    (task_id,) = _task_ids("job7", material, "endless")
    worker = spawn_worker(queen)

    pid = int(worker.wait_line(EXECUTOR_READY).group(1))
    worker.wait_line(EXECUTING.format(task_id))
    worker.signal(signal.SIGTERM)
    worker.wait_line("SIGTERM: finishing 1 task")
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 128 + signal.SIGTERM, worker.log
    assert wait_until(lambda: not pid_alive(pid), 10)
    assert queen.result_for(task_id) is None


def test_bad_token_is_refused_with_exit_status_2(queen: FakeQueen, spawn_worker) -> None:
    worker = spawn_worker(queen, token="wrong")
    assert worker.wait(30) == 2
    assert "cannot register with the queen: the queen answered 401 unauthorized" in worker.log
