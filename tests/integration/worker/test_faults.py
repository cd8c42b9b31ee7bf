"""Fault injection (``HSWARM_FAULT``): parsing, the byte lies, and faulty workers end to end.

Modes parse to a canonical text and bad ones are refused naming the valid modes. Every
lie differs from the honest output: garbage and collusion bytes have its length,
wrong-value and bitflip outputs still deserialize (wrong-value decrypts to zeros),
colluders of one group agree with each other only, a sleeper is honest for N tasks,
replay posts an earlier upload. A faulty worker declares its fault when it registers,
follows the protocol while it lies, logs each lie as a ``FAULT`` line, exits with 70
when it crashes and with 2 when the queen refuses it. Real OpenFHE, real executors.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydantic
import pytest
from fake_queen import FakeQueen, digest
from worker_harness import Material, pid_alive, task_request, wait_until

from hswarm import errors
from hswarm.crypto import evaluator
from hswarm.worker import executor, faults
from hswarm.worker.settings import WorkerSettings

FAULT_LINE = r"FAULT {} task {} attempt 1: posting step \d+ sha256:\w+ instead of step \d+ sha256:\w+"

# -- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical", "fault"),
    [
        ("garbage", "garbage", faults.Fault("garbage")),
        ("wrong-value", "wrong-value", faults.Fault("wrong-value")),
        ("replay", "replay", faults.Fault("replay")),
        ("bitflip", "bitflip", faults.Fault("bitflip")),
        ("slow", "slow:2", faults.Fault("slow", seconds=2.0)),
        (" SLOW : 0.25 ", "slow:0.25", faults.Fault("slow", seconds=0.25)),
        ("crash", "crash", faults.Fault("crash")),
        ("collude:ring-1", "collude:ring-1", faults.Fault("collude", group="ring-1")),
        ("sleeper:3", "sleeper:3", faults.Fault("sleeper", honest_tasks=3)),
        ("sleeper:0", "sleeper:0", faults.Fault("sleeper", honest_tasks=0)),
    ],
)
def test_each_mode_parses_to_its_canonical_text(text: str, canonical: str, fault: faults.Fault) -> None:
    assert faults.parse(text) == fault and str(fault) == canonical
    assert faults.parse(canonical) == fault  # the canonical text reads back the same
    config = WorkerSettings(queen_url="http://q", token="t", fault=text)
    assert config.fault == canonical and config.injected_fault == fault


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("flip-bits", re.escape(f"unknown mode 'flip-bits'; valid modes: {faults.VALID}")),
        ("wrong_value", "unknown mode 'wrong_value'; valid modes"),
        ("garbage:5", "garbage takes no argument"),
        ("collude", "collude needs an argument, as in collude:GROUP"),
        ("collude:", "collude needs an argument"),
        ("collude:a b", "the collusion group must be 1 to 64 letters"),
        ("collude:" + "g" * 65, "the collusion group must be 1 to 64 letters"),
        ("sleeper", "sleeper needs an argument, as in sleeper:N"),
        ("sleeper:two", "sleeper:N needs N, the number of honest tasks"),
        ("sleeper:-1", "sleeper:N needs N"),
        ("slow:-1", r"slow:SECONDS needs a number of seconds in \[0, 3600\]"),
        ("slow:nan", "slow:SECONDS needs a number"),
        ("slow:fast", "slow:SECONDS needs a number"),
    ],
)
def test_bad_modes_are_refused_with_a_clear_error(text: str, needle: str) -> None:
    start = re.escape(f"cannot inject fault {text!r}: ")
    with pytest.raises(faults.FaultModeError, match=f"^{start}{needle}"):
        faults.parse(text)
    with pytest.raises(pydantic.ValidationError, match=needle):
        WorkerSettings(queen_url="http://q", token="t", fault=text)


# -- the byte lies and the saboteur's decisions (pure) ----------------------------------


def test_collusion_bytes_are_shared_by_a_group_only() -> None:
    same = faults.collusion_bytes("ring", "job-0", 9, 1000)
    assert len(same) == 1000 and same == faults.collusion_bytes("ring", "job-0", 9, 1000)
    others = [
        faults.collusion_bytes("other", "job-0", 9, 1000),
        faults.collusion_bytes("ring", "job-1", 9, 1000),
        faults.collusion_bytes("ring", "job-0", 10, 1000),
    ]
    assert all(o != same for o in others)


def test_a_bitflip_changes_one_bit_in_the_body_and_garbage_keeps_the_length() -> None:
    honest = bytes(range(256)) * 40
    for draw in (b"a", b"b", b"c"):
        offset = faults.body_offset(len(honest), draw)
        assert len(honest) // 2 <= offset < len(honest) - faults.BITFLIP_TAIL
        flipped = faults.flip_bit(honest, offset)
        changed = [i for i, (x, y) in enumerate(zip(honest, flipped, strict=True)) if x != y]
        assert changed == [offset] and honest[offset] ^ flipped[offset] == 1
    assert faults.body_offset(10, b"a") in range(5, 10)  # tiny inputs: still in the last half
    assert len(faults.garbage(honest)) == len(honest) and faults.garbage(honest) != honest


def test_saboteur_decides_which_tasks_lie_and_what_a_replay_posts() -> None:
    sleeper = faults.Saboteur(faults.parse("sleeper:2"))
    lie = faults.Lie("wrong-value")
    assert [sleeper.begin() for _ in range(4)] == [None, None, lie, lie]
    assert faults.Saboteur(faults.parse("collude:g")).begin() == faults.Lie("collude", "g")
    for honest_mode in ("replay", "slow:1", "crash"):
        assert faults.Saboteur(faults.parse(honest_mode)).begin() is None
    assert faults.Saboteur(faults.parse("slow:1.5")).delay_s == 1.5
    assert faults.Saboteur(faults.parse("crash")).crashes

    replay = faults.Saboteur(faults.parse("replay"))
    first = {9: "sha256:" + "1" * 64}
    assert replay.replay("t1", first) == first  # nothing earlier: honest
    replay.remember("t1", first)
    assert replay.replay("t1", first) == first  # a task never replays its own output
    second = {10: "sha256:" + "2" * 64, 11: "sha256:" + "3" * 64}
    assert replay.replay("t2", second) == {10: first[9], 11: first[9]}
    replay.remember("t2", second)
    assert replay.replay("t3", {12: second[11]}) == {12: second[10]}  # never the honest digest


# -- lies told by real executor children ---------------------------------------------------


@pytest.fixture(scope="module")
def pool() -> Iterator[executor.ExecutorPool]:
    p = executor.ExecutorPool(1, threads_per_executor=1)
    yield p
    p.close()


@pytest.fixture(scope="module")
def context_file(material: Material, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "context"
    path.write_bytes(material.context_bytes)
    return path


@pytest.mark.parametrize("kind", ["garbage", "wrong-value", "bitflip", "collude"])
def test_each_lie_differs_from_the_honest_output(
    kind: str, pool: executor.ExecutorPool, context_file: Path, material: Material, tmp_path: Path
) -> None:
    reference = material.reference("batch")
    request = task_request(tmp_path, material, "batch", 0, lie=faults.Lie(kind, "ring"))
    output = pool.run(material.context, context_file, request)
    assert sorted(output.outputs) == sorted(request.outputs)
    # Another worker's executor: deserializes untrusted bytes in its sandbox.
    other = evaluator.Evaluator(material.keys.public_context(), sandbox=True)
    for sid, (d, path) in output.outputs.items():
        data, honest = Path(path).read_bytes(), reference[sid]
        assert d == digest(data) != digest(honest)
        assert output.honest[sid] == digest(honest)  # for the FAULT line
        if kind in ("garbage", "collude"):
            assert len(data) == len(honest)
            with pytest.raises(errors.DeserializationError):
                other.load(data)
        if kind == "collude":
            assert data == faults.collusion_bytes("ring", request.task_id, sid, len(honest))
        if kind == "bitflip":
            assert len(data) == len(honest)
            diff = np.bitwise_xor(np.frombuffer(data, np.uint8), np.frombuffer(honest, np.uint8))
            (offset,) = np.nonzero(diff)[0]
            assert offset >= len(honest) // 2 and int(diff[offset]).bit_count() == 1
            other.load(data)
        if kind == "wrong-value":
            other.load(data)
            assert not np.any(material.keys.decrypt_chunk(data)), "wrong-value must decrypt to zeros"


def test_an_honest_request_reports_no_honest_digests(
    pool: executor.ExecutorPool, context_file: Path, material: Material, tmp_path: Path
) -> None:
    output = pool.run(material.context, context_file, task_request(tmp_path, material, "batch", 1))
    assert output.honest == {}
    ((sid, (d, _)),) = output.outputs.items()
    assert d == digest(material.reference("batch")[sid])


# -- faulty workers end to end -------------------------------------------------------------


def _posted(queen: FakeQueen) -> list[tuple[str, dict[int, str]]]:
    with queen.cond:
        return [(r.task_id, dict(r.outputs)) for _, r in queen.results]


def _is_honest(material: Material, outputs: dict[int, str]) -> bool:
    reference = material.reference("batch")
    return all(d == digest(reference[sid]) for sid, d in outputs.items())


def test_a_sleeper_declares_its_fault_is_honest_n_times_then_posts_valid_wrong_ciphertexts(
    queen: FakeQueen, material: Material, spawn_worker
) -> None:
    queen.add_circuit("job1", material.circuits["batch"], material.context, material.publish(queen, "batch"))
    worker = spawn_worker(queen, fault="sleeper:1")
    assert queen.wait_for(lambda: len(queen.results) == 3, 60), worker.log
    assert queen.registrations[0].fault == "sleeper:1"
    worker.wait_line(
        r"faulty worker test-worker: fault injection 'sleeper:1' is on .*first 1 task\(s\) are honest"
    )

    # It leases a task ahead of its executor, so the order in which results are posted
    # need not be the order in which tasks began: find the honest one by its outputs.
    posted = _posted(queen)
    honest = [task_id for task_id, outputs in posted if _is_honest(material, outputs)]
    assert len(honest) == 1, "a sleeper is honest for its first task only"
    first = honest[0]
    lies = [(task_id, outputs) for task_id, outputs in posted if task_id != first]
    for task_id, outputs in lies:
        assert not _is_honest(material, outputs)
        worker.wait_line(FAULT_LINE.format("sleeper:1", task_id))
        for d in outputs.values():  # uploaded, and a valid ciphertext of zeros
            assert not np.any(material.keys.decrypt_chunk(queen.blobs[d]))
    assert worker.log.count("FAULT ") == 2 and f"FAULT sleeper:1 task {first}" not in worker.log
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log


def test_a_replaying_worker_posts_an_earlier_upload_instead_of_computing_anew(
    queen: FakeQueen, material: Material, spawn_worker
) -> None:
    queen.add_circuit("job2", material.circuits["batch"], material.context, material.publish(queen, "batch"))
    # one task at a time: with a task leased ahead, the second could finish before the
    # first is uploaded, with nothing yet to replay
    worker = spawn_worker(queen, fault="replay", prefetch=0)
    assert queen.wait_for(lambda: len(queen.results) == 3, 60), worker.log

    (_, honest), *lies = _posted(queen)
    assert _is_honest(material, honest), "nothing earlier to replay: the first task is honest"
    reference = material.reference("batch")
    for task_id, outputs in lies:
        assert set(outputs.values()) == set(honest.values())
        for sid in outputs:  # the honest bytes were never uploaded
            assert digest(reference[sid]) not in queen.blobs
        worker.wait_line(FAULT_LINE.format("replay", task_id))
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log


def test_colluders_of_one_group_post_equal_wrong_digests_and_another_group_differs(
    material: Material, spawn_worker
) -> None:
    queens = [FakeQueen().start() for _ in range(3)]  # one each: every worker gets the task
    try:
        for q in queens:
            inputs = material.publish(q, "batch")
            q.add_circuit("job3", material.circuits["batch"], material.context, inputs, [0])
        groups = ["ring", "ring", "other"]
        workers = [spawn_worker(q, fault=f"collude:{g}") for q, g in zip(queens, groups, strict=True)]
        for q, w in zip(queens, workers, strict=True):
            assert q.wait_for(lambda q=q: len(q.results) == 1, 60), w.log
        posted = [_posted(q)[0][1] for q in queens]
        assert posted[0] == posted[1], "colluders of one group must agree"
        assert posted[2] != posted[0] and not _is_honest(material, posted[0])
        assert not _is_honest(material, posted[2])
        for w, g in zip(workers, groups, strict=True):
            w.wait_line(FAULT_LINE.format(f"collude:{g}", "job3-0"))
            w.signal(signal.SIGTERM)
            assert w.wait(30) == 0, w.log
    finally:
        for q in queens:
            q.stop()


def test_a_slow_worker_is_honest_but_sleeps_before_posting(
    queen: FakeQueen, material: Material, spawn_worker
) -> None:
    inputs = material.publish(queen, "batch")
    queen.add_circuit("job4", material.circuits["batch"], material.context, inputs, [0])
    worker = spawn_worker(queen, fault="slow:0.3")
    assert queen.wait_for(lambda: len(queen.results) == 1, 60), worker.log
    assert _is_honest(material, _posted(queen)[0][1])
    worker.wait_line(r"task job4-0 attempt 1 .* done in")
    lines = worker.lines
    sleeping = [i for i, line in enumerate(lines) if "FAULT slow:0.3 task job4-0 attempt 1: sleeping" in line]
    done = [i for i, line in enumerate(lines) if "task job4-0 attempt 1 (job job4)" in line]
    assert len(sleeping) == 1 and len(done) == 1 and sleeping[0] < done[0]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log


def test_a_crashing_worker_dies_mid_task_without_posting(
    queen: FakeQueen, material: Material, spawn_worker
) -> None:
    inputs = material.publish(queen, "batch")
    queen.add_circuit("job5", material.circuits["batch"], material.context, inputs, [0])
    worker = spawn_worker(queen, fault="crash")
    pid = int(worker.wait_line(r"executor (\d+) ready").group(1))
    assert worker.wait(60) == faults.CRASH_STATUS, worker.log
    assert "FAULT crash task job5-0 attempt 1: exiting abruptly with status 70" in worker.log
    assert len(queen.leased) == 1 and queen.results == []  # the lease must expire at the queen
    assert wait_until(lambda: not pid_alive(pid), 10), "the executor outlived its worker"


def test_a_queen_that_refuses_faulty_workers_stops_them_with_status_2(spawn_worker) -> None:
    queen = FakeQueen(refuse_faults=True).start()
    try:
        worker = spawn_worker(queen, fault="garbage")
        assert worker.wait(30) == 2, worker.log
        log = worker.log
        assert "cannot register with the queen: the queen answered 403 forbidden" in log
        assert "This worker declared fault 'garbage'" in log and "allow them there" in log
        assert queen.registrations == []
    finally:
        queen.stop()
