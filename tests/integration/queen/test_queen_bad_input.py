"""Every bad input of docs/protocol.md gets its status and code, changes nothing in the
store (rows and blob files compared before and after) and leaves the queen answering."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from queenkit import Driver, Material, chain, digest, snapshot

from hswarm.crypto import public


def _refused(queen: Driver, response: Any, status: int, code: str, before: dict[str, Any]) -> str:
    """Check the answer, that nothing changed and that the queen still answers; the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["message"].startswith("cannot"), body
    assert snapshot(queen.cfg) == before
    assert queen.client.get("/healthz").status_code == 200
    return body["message"]


@pytest.fixture
def ready(make_queen: Callable[..., Driver], fhe: Material) -> Iterator[tuple[Driver, dict[str, str], str]]:
    """A queen with a worker, an uploaded context and inputs, and a submitted job."""
    queen = make_queen(max_blob_bytes=4 << 20)
    worker = queen.register()
    job_id = queen.submit(fhe, chain(fhe.circuit))
    yield queen, worker, job_id


def _submission(queen: Driver, fhe: Material, circuit: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "circuit": circuit or fhe.circuit.to_json(),
        "context": digest(fhe.context),
        "inputs": {str(sid): digest(data) for sid, data in fhe.inputs.items()},
    }


def test_malformed_json_and_bodies_that_do_not_match_the_model(ready: Any) -> None:
    queen, worker, _ = ready
    before = snapshot(queen.cfg)
    jobs = "/v1/jobs"
    _refused(
        queen, queen.client.post(jobs, content=b'{"circuit": ', headers=_json()), 400, "bad_request", before
    )
    _refused(queen, queen.client.post(jobs, content=b"\xff\x00 not json"), 400, "bad_request", before)
    _refused(queen, queen.client.post(jobs, json={"circuit": {}}), 422, "invalid", before)
    lease = queen.client.post("/v1/workers/lease", json={"max_tasks": 1000}, headers=worker)
    _refused(queen, lease, 422, "invalid", before)
    typo = queen.client.post("/v1/workers/lease", json={"max_task": 1}, headers=worker)
    _refused(queen, typo, 422, "invalid", before)
    _refused(queen, queen.client.put("/v1/blobs/sha256:nothex", content=b"x"), 422, "invalid", before)


def test_circuits_that_do_not_parse_or_cannot_run(ready: Any, fhe: Material) -> None:
    queen, _, _ = ready
    before = snapshot(queen.cfg)
    doc = fhe.circuit.to_json()
    bad_schema = {**doc, "schema": "hswarm.circuit/0"}
    forward = copy.deepcopy(doc)
    forward["steps"][2][2] = [0, 5]  # a step that reads a later one
    unknown_op = copy.deepcopy(doc)
    unknown_op["steps"][2][1] = "teleport"
    orphan = chain(fhe.circuit)
    orphan["tasks"] = orphan["tasks"][1:]  # step 2 is computed by no task
    for circuit in (bad_schema, forward, unknown_op, {"schema": "hswarm.circuit/1", "steps": "x"}, orphan):
        response = queen.client.post("/v1/jobs", json=_submission(queen, fhe, circuit))
        _refused(queen, response, 422, "invalid", before)
    missing_input = _submission(queen, fhe)
    missing_input["inputs"].pop("0")
    _refused(queen, queen.client.post("/v1/jobs", json=missing_input), 422, "invalid", before)
    other_params = _submission(queen, fhe, fhe.other_params_circuit)
    _refused(queen, queen.client.post("/v1/jobs", json=other_params), 409, "conflict", before)
    unknown_context = {**_submission(queen, fhe), "context": digest(b"no such context")}
    _refused(queen, queen.client.post("/v1/jobs", json=unknown_context), 404, "not_found", before)
    no_blob = _submission(queen, fhe)
    no_blob["inputs"]["0"] = digest(b"never uploaded")
    _refused(queen, queen.client.post("/v1/jobs", json=no_blob), 404, "not_found", before)


def test_cyclic_task_graph_is_refused(ready: Any, fhe: Material) -> None:
    queen, _, _ = ready
    before = snapshot(queen.cfg)
    doc = chain(fhe.circuit)
    # task 0 also computes step 4 (reading task 1's step 3), task 1 reads task 0's step 2
    doc["tasks"][0] = {**doc["tasks"][0], "steps": [2, 4], "inputs": [0, 1, 3], "outputs": [2, 4]}
    doc["tasks"][2] = {**doc["tasks"][2], "steps": [], "inputs": [], "outputs": []}
    doc["tasks"][3]["inputs"] = [4]
    response = queen.client.post("/v1/jobs", json=_submission(queen, fhe, doc))
    assert "cycle" in _refused(queen, response, 422, "invalid", before)


def test_unknown_job_task_and_blob(ready: Any) -> None:
    queen, worker, _ = ready
    before = snapshot(queen.cfg)
    _refused(queen, queen.client.get("/v1/jobs/0123456789abcdef"), 404, "not_found", before)
    _refused(queen, queen.client.get(f"/v1/blobs/{digest(b'absent')}"), 404, "not_found", before)
    ghost = {"task_id": "nojob.0", "attempt": 1, "outputs": {}}
    _refused(
        queen, queen.client.post("/v1/workers/result", json=ghost, headers=worker), 404, "not_found", before
    )
    with pytest.raises(Exception) as closed, queen.client.websocket_connect("/v1/jobs/nojob/events") as ws:
        ws.receive_json()
    assert getattr(closed.value, "code", None) == 4404


def test_blob_bytes_that_do_not_match_the_digest(ready: Any) -> None:
    queen, _, _ = ready
    before = snapshot(queen.cfg)
    response = queen.client.put(f"/v1/blobs/{digest(b'claimed')}", content=b"actual bytes")
    _refused(queen, response, 422, "digest_mismatch", before)
    response = queen.client.put(f"/v1/contexts/{digest(b'claimed')}", content=b"actual bytes")
    _refused(queen, response, 422, "digest_mismatch", before)


def test_oversized_upload_is_refused_while_streaming(ready: Any) -> None:
    queen, _, _ = ready
    before = snapshot(queen.cfg)
    big = b"\x01" * ((4 << 20) + 1)
    _refused(queen, queen.client.put(f"/v1/blobs/{digest(big)}", content=big), 413, "too_large", before)

    def chunks() -> Iterator[bytes]:  # no Content-Length: only the stream can tell
        for _ in range(5):
            yield b"\x02" * (1 << 20)

    streamed = digest(b"\x02" * (5 << 20))
    _refused(queen, queen.client.put(f"/v1/blobs/{streamed}", content=chunks()), 413, "too_large", before)
    _refused(queen, queen.client.put(f"/v1/contexts/{streamed}", content=chunks()), 413, "too_large", before)


def test_contexts_with_a_secret_key_or_garbage(ready: Any, fhe: Material) -> None:
    queen, _, _ = ready
    before = snapshot(queen.cfg)
    leak = queen.client.put(f"/v1/contexts/{digest(fhe.secret_context)}", content=fhe.secret_context)
    assert "secret key" in _refused(queen, leak, 422, "secret_key", before)
    bundle = public.PublicContext.from_bytes(fhe.context)
    sections = {name: getattr(bundle, name) for name in public.SECTIONS}
    header = {"params": bundle.params, "key_tag": bundle.key_tag, "rotation_indices": bundle.rotation_indices}
    well_formed_garbage = [  # the container parses; a section is not what it claims to be
        public.PublicContext(**header, **{**sections, name: b"\x00garbage" * 64}).to_bytes()
        for name in ("context", "public_key", "mult_keys")
    ]
    wrong_tag = public.PublicContext(**{**header, "key_tag": "0" * 64}, **sections).to_bytes()
    wrong_params = public.PublicContext(**{**header, "params": {"scheme": "rot13"}}, **sections).to_bytes()
    for garbage in (
        b"not a context",
        fhe.context[:-100],
        fhe.context[:20] + b"\x00" * 50 + fhe.context[70:],
        wrong_tag,
        wrong_params,
        *well_formed_garbage,
    ):
        response = queen.client.put(f"/v1/contexts/{digest(garbage)}", content=garbage)
        _refused(queen, response, 422, "bad_context", before)


def test_results_the_queen_must_not_accept(make_queen: Callable[..., Driver], fhe: Material) -> None:
    queen = make_queen(lease_ttl_s=2.0)
    holder, other = queen.register("holder"), queen.register("other")
    queen.submit(fhe, chain(fhe.circuit))
    (task,) = queen.lease(holder)
    outputs = queen.outputs(task)
    before = snapshot(queen.cfg)
    _refused(queen, queen.post_result(other, task, outputs=outputs), 409, "conflict", before)
    stale = {**task, "attempt": task["attempt"] + 1}
    _refused(queen, queen.post_result(holder, stale, outputs=outputs), 409, "conflict", before)
    unknown_blob = {k: digest(b"never uploaded" + k.encode()) for k in outputs}
    _refused(queen, queen.post_result(holder, task, outputs=unknown_blob), 409, "conflict", before)
    _refused(queen, queen.post_result(holder, task, outputs={}), 422, "invalid", before)
    both = queen.post_result(holder, task, outputs=outputs, error="and also failed")
    _refused(queen, both, 422, "invalid", before)
    time.sleep(max(0.0, task["deadline"] - time.time() + 0.1))  # the result itself notices the expiry
    late = _refused(queen, queen.post_result(holder, task, outputs=outputs), 409, "conflict", before)
    assert "expired" in late


def test_bad_token_and_missing_or_unknown_credentials(ready: Any) -> None:
    queen, _, _ = ready
    before = snapshot(queen.cfg)
    body = {"token": "wrong", "name": "w", "determinism_class": "x"}
    _refused(queen, queen.client.post("/v1/workers/register", json=body), 401, "unauthorized", before)
    lease = {"max_tasks": 1}
    for headers in ({}, {"Authorization": "Bearer not-a-credential"}, {"Authorization": "Basic abc"}):
        response = queen.client.post("/v1/workers/lease", json=lease, headers=headers)
        _refused(queen, response, 401, "unauthorized", before)
        assert response.headers["www-authenticate"] == "Bearer"
    response = queen.client.post("/v1/workers/heartbeat", json={}, headers={})
    _refused(queen, response, 401, "unauthorized", before)


def _json() -> dict[str, str]:
    return {"Content-Type": "application/json"}
