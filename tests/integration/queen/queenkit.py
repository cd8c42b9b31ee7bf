"""Helpers for the queen's tests: FHE material, circuits with dependencies, a store
seeded without HTTP, snapshots of the store, and a protocol driver over a TestClient."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from hswarm import wire
from hswarm.program import Circuit
from hswarm.queen import jobs, membership, settings, store


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def snapshot(cfg: settings.QueenSettings) -> dict[str, Any]:
    """Every row of every table and every file under the blob directory."""
    s = store.Store(cfg.db_url)
    try:
        with s.read() as conn:
            rows = {
                t.name: sorted(repr(tuple(r)) for r in conn.execute(sa.select(t)))
                for t in store.metadata.sorted_tables
            }
    finally:
        s.dispose()
    files = sorted(str(p.relative_to(cfg.blob_dir)) for p in cfg.blob_dir.rglob("*") if p.is_file())
    return {"rows": rows, "files": files}


# -- FHE material -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Material:
    """A real compiled program, its real public context and encrypted inputs."""

    circuit: Circuit
    context: bytes
    secret_context: bytes  # a bundle whose public_key section is the secret key
    inputs: dict[int, bytes]  # input step id -> ciphertext bytes
    other_params_circuit: dict[str, Any]  # the same program compiled for BGV


def chain(circuit: Circuit) -> dict[str, Any]:
    """The circuit re-partitioned into one task per step: a graph with dependencies."""
    doc = circuit.to_json()
    producer: dict[int, int] = {}
    tasks = []
    for step in circuit.steps:
        if step.op == "input":
            continue
        index = len(tasks)
        deps = sorted({producer[a] for a in step.args if a in producer})
        tasks.append(
            {
                "id": index,
                "kind": "compute",
                "steps": [step.id],
                "inputs": sorted(set(step.args)),
                "outputs": [step.id],
                "deps": deps,
            }
        )
        producer[step.id] = index
    doc["tasks"] = tasks
    Circuit.from_json(doc)  # still a valid circuit
    return doc


def wide(circuit: Circuit, copies: int) -> dict[str, Any]:
    """The circuit with its tasks repeated: many independent ready tasks."""
    doc = circuit.to_json()
    inputs = [s for s in doc["steps"] if s[1] == "input"]
    body = [s for s in doc["steps"] if s[1] != "input"]
    steps, tasks, outputs = list(inputs), [], {}
    for copy in range(copies):
        shift = {s[0]: s[0] for s in inputs}
        for s in body:
            shift[s[0]] = len(steps)
            steps.append([len(steps), s[1], [shift[a] for a in s[2]], s[3], s[4], s[5]])
        for t in doc["tasks"]:
            tasks.append(
                {
                    "id": len(tasks),
                    "kind": t["kind"],
                    "steps": [shift[i] for i in t["steps"]],
                    "inputs": [shift[i] for i in t["inputs"]],
                    "outputs": [shift[i] for i in t["outputs"]],
                    "deps": [],
                }
            )
        for name, term in doc["outputs"].items():
            outputs[f"{name}{copy}"] = {**term, "chunks": [shift[c] for c in term["chunks"]]}
    doc.update(steps=steps, tasks=tasks, outputs=outputs)
    Circuit.from_json(doc)
    return doc


# -- a store seeded without HTTP --------------------------------------------------------

UNVERIFIED = wire.Assurance(verify=False)


def seed_job(
    db: store.Store,
    fhe: Material,
    circuit_doc: dict[str, Any],
    cfg: settings.QueenSettings | None = None,
    assurance: wire.Assurance = UNVERIFIED,
) -> str:
    """Record the context and input blobs directly, then submit a job through the service
    (unverified unless told: one replica per task keeps queue tests about the queue)."""
    submission = job_submission(db, fhe, circuit_doc, assurance)
    return jobs.submit(db, cfg or settings.QueenSettings(), submission).job_id


def job_submission(
    db: store.Store, fhe: Material, circuit_doc: dict[str, Any], assurance: wire.Assurance = UNVERIFIED
) -> wire.JobSubmission:
    """Record the context and input blobs directly; the submission of a job of them."""
    ctx = digest(fhe.context)
    with db.write() as conn:
        store.insert_absent(
            conn,
            store.contexts,
            {
                "digest": ctx,
                "size": len(fhe.context),
                "params": dict(fhe.circuit.params),
                "key_tag": "test",
                "rotation_indices": list(fhe.circuit.rotation_indices),
                "created_at": 0.0,
            },
        )
        for data in fhe.inputs.values():
            store.insert_absent(
                conn, store.blobs, {"digest": digest(data), "size": len(data), "created_at": 0.0}
            )
    return wire.JobSubmission(
        circuit=circuit_doc,
        context=ctx,
        inputs={sid: digest(data) for sid, data in fhe.inputs.items()},
        assurance=assurance,
    )


def fake_outputs(db: store.Store, spec: wire.TaskSpec, tag: str = "") -> dict[int, str]:
    """Record made-up output blobs for a task (the queen never looks inside them)."""
    outputs = {sid: digest(f"{spec.task_id}/{spec.attempt}/{sid}{tag}".encode()) for sid in spec.outputs}
    with db.write() as conn:
        for d in outputs.values():
            store.insert_absent(conn, store.blobs, {"digest": d, "size": 1, "created_at": 0.0})
    return outputs


def enroll(db: store.Store, cfg: settings.QueenSettings, name: str = "w", owner: str = "") -> str:
    token = membership.ensure_token(cfg.token_path)
    request = wire.Registration(token=token, name=name, owner=owner, determinism_class="test")
    return membership.register(db, cfg, request).worker_id


# -- the app over HTTP ------------------------------------------------------------------


class Driver:
    """A TestClient speaking the protocol as a client and as workers."""

    def __init__(self, client: TestClient, cfg: settings.QueenSettings) -> None:
        self.client = client
        self.cfg = cfg
        self.running = True

    def stop(self) -> None:
        """Shut the app down (its lifespan ends) as a stopped queen process would."""
        if self.running:
            self.running = False
            self.client.__exit__(None, None, None)

    def register(self, name: str = "w", owner: str = "") -> dict[str, str]:
        token = self.cfg.token_path.read_text().strip()
        body = {"token": token, "name": name, "owner": owner, "determinism_class": "test/x86_64"}
        r = self.client.post("/v1/workers/register", json=body)
        assert r.status_code == 201, r.text
        return {"Authorization": f"Bearer {r.json()['credential']}"}

    def put_blob(self, data: bytes) -> str:
        d = digest(data)
        r = self.client.put(f"/v1/blobs/{d}", content=data)
        assert r.status_code in (200, 201), r.text
        return d

    def put_context(self, data: bytes) -> str:
        d = digest(data)
        r = self.client.put(f"/v1/contexts/{d}", content=data)
        assert r.status_code in (200, 201), r.text
        return d

    def submit(self, fhe: Material, circuit_doc: dict[str, Any] | None = None, verify: bool = False) -> str:
        ctx = self.put_context(fhe.context)
        inputs = {str(sid): self.put_blob(data) for sid, data in fhe.inputs.items()}
        body = {
            "circuit": circuit_doc or fhe.circuit.to_json(),
            "context": ctx,
            "inputs": inputs,
            "assurance": {"verify": verify},
        }
        r = self.client.post("/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        return r.json()["job_id"]

    def lease(self, headers: dict[str, str], max_tasks: int = 1, wait_s: float = 0.0) -> list[dict[str, Any]]:
        r = self.client.post(
            "/v1/workers/lease", json={"max_tasks": max_tasks, "wait_s": wait_s}, headers=headers
        )
        assert r.status_code == 200, r.text
        return r.json()["tasks"]

    def outputs(self, task: dict[str, Any]) -> dict[str, str]:
        return {str(sid): self.put_blob(f"{task['task_id']}/{sid}".encode()) for sid in task["outputs"]}

    def post_result(self, headers: dict[str, str], task: dict[str, Any], **body: Any) -> Any:
        payload = {"task_id": task["task_id"], "attempt": task["attempt"], **body}
        return self.client.post("/v1/workers/result", json=payload, headers=headers)

    def status(self, job_id: str) -> dict[str, Any]:
        r = self.client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()
