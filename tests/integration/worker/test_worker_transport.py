"""The worker's HTTP transport against the fake queen: bearer auth after registration,
wire models both ways, streamed blobs checked against their digest, bounded retries on
5xx and connection errors, and hswarm errors carrying the queen's code on 4xx."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_queen import TOKEN, FakeQueen, digest

from hswarm import errors, wire
from hswarm.worker import transport


def _registration(token: str = TOKEN) -> wire.Registration:
    return wire.Registration(token=token, name="t", determinism_class="openfhe-test/x86_64")


@pytest.fixture
def conn(queen: FakeQueen) -> Iterator[transport.QueenConnection]:
    with transport.QueenConnection(queen.url, retries=3, backoff_s=0.01) as c:
        yield c


def test_register_then_authenticated_calls(queen: FakeQueen, conn: transport.QueenConnection) -> None:
    enrollment = conn.register(_registration())
    assert enrollment.worker_id == "w1" and enrollment.heartbeat_interval_s == queen.heartbeat_interval_s
    reply = conn.heartbeat(wire.Heartbeat(leases=["a", "b"], load=0.5))
    assert reply.renewed == ["a", "b"] and reply.cancelled == []
    assert conn.lease(wire.LeaseRequest(max_tasks=2, wait_s=0.1)).tasks == []
    assert queen.heartbeats[0][1].load == 0.5


def test_calls_without_registration_and_bad_tokens_are_refused(
    queen: FakeQueen, conn: transport.QueenConnection
) -> None:
    with pytest.raises(transport.QueenError, match="cannot send a heartbeat: the queen answered 401") as info:
        conn.heartbeat(wire.Heartbeat())
    assert info.value.status == 401 and info.value.code == "unauthorized"
    with pytest.raises(transport.QueenError, match=r"cannot register with the queen: .*bad enrollment token"):
        conn.register(_registration("wrong"))


def test_blobs_stream_both_ways_and_are_checked(
    queen: FakeQueen, conn: transport.QueenConnection, tmp_path: Path
) -> None:
    conn.register(_registration())
    data = bytes(range(256)) * 9000  # several chunks
    d = digest(data)
    source = tmp_path / "up"
    source.write_bytes(data)
    conn.upload(d, source)
    assert queen.blobs[d] == data
    dest = tmp_path / "down"
    assert conn.download(d, dest) == len(data) and dest.read_bytes() == data

    queen.corrupt[d] = data[:-1] + b"\x00"
    with pytest.raises(errors.DigestMismatchError, match=f"cannot accept blob {d} from the queen"):
        conn.download(d, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()

    other = digest(b"something else")
    with pytest.raises(errors.DigestMismatchError, match="the queen answered 422 digest_mismatch"):
        conn.upload(other, source)
    with pytest.raises(transport.QueenError, match="answered 404 not_found") as info:
        conn.download(other, tmp_path / "missing")
    assert info.value.code == "not_found" and not (tmp_path / "missing").exists()
    with pytest.raises(errors.DigestMismatchError, match="not a digest"):
        conn.download("sha256:nope", tmp_path / "x")


def test_server_errors_are_retried_a_bounded_number_of_times(
    queen: FakeQueen, conn: transport.QueenConnection
) -> None:
    queen.fail_next["/v1/workers/register"] = 2
    assert conn.register(_registration()).worker_id == "w1"
    assert queen.requests.count(("POST", "/v1/workers/register")) == 3

    queen.fail_next["/v1/workers/heartbeat"] = 10
    with pytest.raises(transport.QueenUnreachableError, match=r"cannot send a heartbeat: .* after 4 tries"):
        conn.heartbeat(wire.Heartbeat())
    assert queen.requests.count(("POST", "/v1/workers/heartbeat")) == 4


def test_an_unreachable_queen_is_a_clear_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        transport.QueenConnection(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01) as c,
        pytest.raises(
            transport.QueenUnreachableError, match=r"cannot register with the queen: .*3 tries"
        ) as info,
    ):
        c.register(_registration())
    assert "HSWARM_QUEEN_URL" in str(info.value)
