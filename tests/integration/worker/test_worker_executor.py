"""Executor children and their pool, in this process: outputs byte-identical to local
execution, errors returned as their hswarm class, a child killed mid-task replaced,
tasks routed to the executor holding their context, least recently used contexts
evicted, and abandoned tasks stopped."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_queen import digest
from worker_harness import Material, batch, make_material, pid_alive, task_request, wait_until

from hswarm import errors
from hswarm.worker import executor


@pytest.fixture
def pool() -> Iterator[executor.ExecutorPool]:
    p = executor.ExecutorPool(2, threads_per_executor=1)
    yield p
    p.close()


def _files(tmp_path: Path, material: Material) -> Path:
    path = tmp_path / "context"
    path.write_bytes(material.context_bytes)
    return path


_request = task_request


def test_outputs_are_byte_identical_to_local_execution(
    pool: executor.ExecutorPool, material: Material, tmp_path: Path
) -> None:
    context = _files(tmp_path, material)
    reference = material.reference("batch")
    environ = dict(os.environ)
    pids = set()
    for index in range(len(material.circuits["batch"].tasks)):
        request = _request(tmp_path, material, "batch", index)
        output = pool.run(material.context, context, request)
        pids.add(output.pid)
        assert sorted(output.outputs) == sorted(request.outputs) and output.seconds > 0
        for sid, (d, path) in output.outputs.items():
            data = Path(path).read_bytes()
            assert data == reference[sid] and d == digest(data)
            assert Path(path).parent == tmp_path / "out"
    assert len(pids) == 1, "tasks of one context, one after another, reuse one executor"
    # The child had OMP_NUM_THREADS=1 from its start; this process's environment is as it was.
    assert b"OMP_NUM_THREADS=1" in Path(f"/proc/{pids.pop()}/environ").read_bytes().split(b"\0")
    assert dict(os.environ) == environ
    assert pool.contexts() == [material.context]


def test_task_errors_come_back_as_their_hswarm_class(
    pool: executor.ExecutorPool, material: Material, tmp_path: Path
) -> None:
    context = _files(tmp_path, material)
    request = _request(tmp_path, material, "batch")
    ((sid, (d, path)),) = request.inputs.items()
    Path(path).write_bytes(b"\x00" + Path(path).read_bytes()[1:])  # damaged after caching
    with pytest.raises(errors.DigestMismatchError, match=f"cannot use input {d} of step {sid}"):
        pool.run(material.context, context, request)

    other = make_material({"batch": batch()})  # a ciphertext of another key set
    Path(path).write_bytes(other.inputs["batch"][sid])
    foreign = executor.TaskRequest(
        request.task_id,
        request.steps,
        {sid: (digest(other.inputs["batch"][sid]), path)},
        request.outputs,
        request.out_dir,
    )
    with pytest.raises(errors.ForeignContextError, match="cannot use the ciphertext"):
        pool.run(material.context, context, foreign)
    assert list((tmp_path / "out").iterdir()) == []

    with pytest.raises(errors.DigestMismatchError, match="cannot accept the public context"):
        pool.run(other.context, context, request)  # the file holds another context
    assert len(pool.pids()) == 1  # the failed start left no executor behind


def test_executor_killed_mid_task_is_reported_and_replaced(
    pool: executor.ExecutorPool, material: Material, tmp_path: Path
) -> None:
    context = _files(tmp_path, material)
    outcome: list[BaseException] = []

    def endless() -> None:
        try:
            pool.run(material.context, context, _request(tmp_path, material, "endless"))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=endless)
    thread.start()
    assert wait_until(lambda: len(pool.pids()) == 1)  # listed once its context is loaded
    (pid,) = pool.pids()
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], errors.EvaluationError), outcome
    assert "died (killed by SIGKILL)" in str(outcome[0]) and "endless-0" in str(outcome[0])
    assert pool.pids() == []

    output = pool.run(material.context, context, _request(tmp_path, material, "batch"))
    assert output.pid != pid and pool.pids() == [output.pid]


def test_abandoned_task_kills_its_executor(
    pool: executor.ExecutorPool, material: Material, tmp_path: Path
) -> None:
    context = _files(tmp_path, material)
    cancel = threading.Event()
    threading.Timer(2.0, cancel.set).start()
    with pytest.raises(executor.TaskAbandoned, match="cannot finish execute task endless-0: cancelled"):
        pool.run(
            material.context,
            context,
            _request(tmp_path, material, "endless"),
            should_stop=lambda: "cancelled" if cancel.is_set() else None,
        )
    assert pool.pids() == []


def test_tasks_go_to_their_context_and_the_least_recently_used_is_evicted(
    pool: executor.ExecutorPool, tmp_path: Path
) -> None:
    sets = [make_material({"batch": batch()}) for _ in range(3)]
    dirs = [tmp_path / f"m{i}" for i in range(len(sets))]
    for d in dirs:
        d.mkdir()

    def run(i: int) -> int:
        m = sets[i]
        return pool.run(m.context, _files(dirs[i], m), _request(dirs[i], m, "batch", 2)).pid

    a, b = run(0), run(1)
    assert a != b and run(0) == a  # routed to the executor holding context 0
    c = run(2)  # no room: context 1's executor was used least recently
    assert c not in (a, b)
    assert wait_until(lambda: not pid_alive(b), 10) and pid_alive(a)
    assert pool.contexts() == sorted([sets[0].context, sets[2].context])


def _cores(pid: int) -> str:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Cpus_allowed_list"))


def test_pinned_executors_run_on_their_own_cores(material: Material, tmp_path: Path) -> None:
    cores = tuple(sorted(os.sched_getaffinity(0)))[-1:]  # the last core this process may use
    p = executor.ExecutorPool(1, threads_per_executor=1, cpus=cores)
    try:
        output = p.run(material.context, _files(tmp_path, material), _request(tmp_path, material, "batch"))
        assert _cores(output.pid) == str(cores[0])
    finally:
        p.close()


def test_auto_runs_fewer_executors_of_a_key_set_that_memory_cannot_hold_twice(
    material: Material, tmp_path: Path
) -> None:
    # two cores, but a budget for one copy of the keys: one executor with both threads
    p = executor.ExecutorPool(2, executors=None, memory_budget=3 << 30)
    context = _files(tmp_path, material)
    pids: list[int] = []
    try:

        def run(index: int) -> None:
            request = _request(tmp_path, material, "batch", index)
            pids.append(p.run(material.context, context, request, need=2 << 30).pid)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(pids) == 2 and len(set(pids)) == 1, "the second task waited for the only executor"
        assert b"OMP_NUM_THREADS=2" in Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0")
        # with room for both copies, the same pool runs them side by side, single-threaded
        assert p.plan(1 << 30) == executor.Plan(executors=2, threads=1, slots=1)
    finally:
        p.close()


@pytest.mark.parametrize(("budget_gib", "both_held"), [(5, False), (8, True)])
def test_key_sets_together_stay_within_the_memory_budget(
    budget_gib: int, both_held: bool, material: Material, tmp_path: Path
) -> None:
    # two cores, 3 GiB of keys per key set: a 5 GiB budget holds one key set at a time,
    # so the idle executor of the first is stopped although a core is free; 8 GiB holds both
    other = make_material({"batch": batch()})
    p = executor.ExecutorPool(2, threads_per_executor=1, memory_budget=budget_gib << 30)
    try:
        first = p.run(
            material.context, _files(tmp_path, material), _request(tmp_path, material, "batch"), need=3 << 30
        )
        there = tmp_path / "other"
        there.mkdir()
        second = p.run(other.context, _files(there, other), _request(there, other, "batch"), need=3 << 30)
        assert second.pid != first.pid
        if both_held:
            assert p.contexts() == sorted([material.context, other.context])
            assert pid_alive(first.pid)
        else:
            assert p.contexts() == [other.context]
            assert wait_until(lambda: not pid_alive(first.pid), 10)
    finally:
        p.close()
