"""A fake queen for the worker's tests: just enough of ``docs/protocol.md``, in a thread.

A ``ThreadingHTTPServer`` on 127.0.0.1 (port 0) speaking the wire models: register,
lease (long-poll; each prepared ``TaskSpec`` handed out once), heartbeat (recorded;
task ids in ``cancel`` are answered as cancelled), result (recorded; unknown output
digests are a 409), blob get/put (put checks the digest). Tasks of a compiled circuit
become ready as their inputs appear, like the real queen's dependency tracking. Knobs
for failures: ``corrupt`` serves other bytes under a digest, ``fail_next`` answers 503
a number of times per path, ``refuse_faults`` refuses workers that declare a fault
injection mode (403, as a queen that does not allow faulty workers). It decides nothing
about correctness: tests do.
"""

from __future__ import annotations

import collections
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hswarm import wire
from hswarm.program import Circuit

TOKEN = "enroll-me"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeQueen:
    def __init__(
        self, *, heartbeat_interval_s: float = 0.1, lease_ttl_s: float = 30.0, refuse_faults: bool = False
    ) -> None:
        self.heartbeat_interval_s = heartbeat_interval_s
        self.lease_ttl_s = lease_ttl_s
        self.refuse_faults = refuse_faults
        self.blobs: dict[str, bytes] = {}
        self.corrupt: dict[str, bytes] = {}
        self.fail_next: collections.Counter[str] = collections.Counter()
        self.cancel: set[str] = set()
        self.pending: list[wire.TaskSpec] = []
        self.leased: list[tuple[float, wire.TaskSpec]] = []
        self.results: list[tuple[float, wire.TaskResult]] = []
        self.heartbeats: list[tuple[float, wire.Heartbeat]] = []
        self.registrations: list[wire.Registration] = []
        self.requests: list[tuple[str, str]] = []
        self.lease_requests: list[wire.LeaseRequest] = []
        self._jobs: list[dict[str, Any]] = []
        self._credentials: set[str] = set()
        self.cond = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeQueen:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- preparing work -----------------------------------------------------------------

    def add_blob(self, data: bytes) -> str:
        d = digest(data)
        with self.cond:
            self.blobs[d] = data
        return d

    def add_task(self, spec: wire.TaskSpec) -> None:
        with self.cond:
            self.pending.append(spec)
            self.cond.notify_all()

    def add_circuit(
        self,
        job_id: str,
        circuit: Circuit,
        context: str,
        inputs: Mapping[int, str],
        tasks: list[int] | None = None,
    ) -> None:
        """Queue the circuit's tasks (or those listed), each once its inputs exist."""
        with self.cond:
            job = {
                "id": job_id,
                "circuit": circuit,
                "context": context,
                "values": dict(inputs),
                "waiting": [t for t in circuit.tasks if tasks is None or t.id in tasks],
            }
            self._jobs.append(job)
            self._release(job)

    def _release(self, job: dict[str, Any]) -> None:
        circuit: Circuit = job["circuit"]
        for task in list(job["waiting"]):
            if all(sid in job["values"] for sid in task.inputs):
                job["waiting"].remove(task)
                self.pending.append(
                    wire.TaskSpec(
                        task_id=f"{job['id']}-{task.id}",
                        job_id=job["id"],
                        attempt=1,
                        deadline=time.time() + self.lease_ttl_s,
                        context=job["context"],
                        steps=[
                            wire.TaskStep(id=s.id, op=s.op, args=list(s.args), attrs=dict(s.attrs))
                            for s in (circuit.steps[sid] for sid in task.steps)
                        ],
                        inputs={sid: job["values"][sid] for sid in task.inputs},
                        outputs=list(task.outputs),
                    )
                )
        self.cond.notify_all()

    # -- waiting ------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 60.0) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout_s)

    def result_for(self, task_id: str) -> wire.TaskResult | None:
        with self.cond:
            for _, result in self.results:
                if result.task_id == task_id:
                    return result
        return None

    # -- the API ------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        with self.cond:
            self.requests.append((method, path))
            if self.fail_next[path] > 0:
                self.fail_next[path] -= 1
                return _error(503, "not_ready", "injected failure")
        if path.startswith("/v1/blobs/"):
            return self._blob(method, path.removeprefix("/v1/blobs/"), body)
        if method != "POST":
            return _error(404, "not_found", f"no route {method} {path}")
        if path == "/v1/workers/register":
            registration = wire.Registration.model_validate_json(body)
            if registration.token != TOKEN:
                return _error(401, "unauthorized", "bad enrollment token")
            if registration.fault is not None and self.refuse_faults:
                refusal = f"faulty workers are not allowed (fault {registration.fault!r})"
                return _error(403, "forbidden", refusal)
            with self.cond:
                self.registrations.append(registration)
                credential = f"cred-{len(self.registrations)}"
                self._credentials.add(credential)
            return _ok(
                wire.Enrollment(
                    worker_id=f"w{len(self.registrations)}",
                    credential=credential,
                    heartbeat_interval_s=self.heartbeat_interval_s,
                    lease_ttl_s=self.lease_ttl_s,
                )
            )
        auth = headers.get("Authorization", "")
        if auth.removeprefix("Bearer ") not in self._credentials:
            return _error(401, "unauthorized", "unknown credential")
        if path == "/v1/workers/lease":
            return self._lease(wire.LeaseRequest.model_validate_json(body))
        if path == "/v1/workers/heartbeat":
            beat = wire.Heartbeat.model_validate_json(body)
            with self.cond:
                self.heartbeats.append((time.monotonic(), beat))
                cancelled = [t for t in beat.leases if t in self.cancel]
                self.cond.notify_all()
            return _ok(
                wire.HeartbeatReply(
                    renewed=[t for t in beat.leases if t not in cancelled],
                    cancelled=cancelled,
                    deadline=time.time() + self.lease_ttl_s,
                )
            )
        if path == "/v1/workers/result":
            result = wire.TaskResult.model_validate_json(body)
            with self.cond:
                unknown = [d for d in result.outputs.values() if d not in self.blobs]
                if unknown:
                    return _error(409, "conflict", f"outputs not uploaded: {unknown}")
                self.results.append((time.monotonic(), result))
                for job in self._jobs:
                    if result.task_id.startswith(f"{job['id']}-") and result.error is None:
                        job["values"].update(result.outputs)
                        self._release(job)
                self.cond.notify_all()
            return _ok(wire.ResultReceipt(accepted=True))
        return _error(404, "not_found", f"no route {method} {path}")

    def _lease(self, request: wire.LeaseRequest) -> tuple[int, bytes]:
        deadline = time.monotonic() + request.wait_s
        with self.cond:
            self.lease_requests.append(request)
            while not self.pending and time.monotonic() < deadline:
                self.cond.wait(max(0.0, deadline - time.monotonic()))
            granted = self.pending[: request.max_tasks]
            del self.pending[: request.max_tasks]
            now = time.monotonic()
            self.leased.extend((now, spec) for spec in granted)
            self.cond.notify_all()
        return _ok(wire.LeaseGrant(tasks=granted))

    def _blob(self, method: str, name: str, body: bytes) -> tuple[int, bytes]:
        if method == "GET":
            with self.cond:
                data = self.corrupt.get(name, self.blobs.get(name))
            if data is None:
                return _error(404, "not_found", f"no blob {name}")
            return 200, data
        if method == "PUT":
            if digest(body) != name:
                return _error(422, "digest_mismatch", f"bytes hash to {digest(body)}, not {name}")
            with self.cond:
                self.blobs[name] = body
                self.cond.notify_all()
            return 200, json.dumps({"digest": name, "size": len(body)}).encode()
        return _error(404, "not_found", f"no route {method}")


def _ok(message: wire.Message) -> tuple[int, bytes]:
    return 200, message.model_dump_json().encode()


def _error(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, wire.ErrorBody(code=code, message=message).model_dump_json().encode()


def _handler(queen: FakeQueen) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real queen

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, payload = queen.handle(self.command, self.path, dict(self.headers), body)
            self.send_response(status)
            binary = status == 200 and self.path.startswith("/v1/blobs/") and self.command == "GET"
            self.send_header("Content-Type", "application/octet-stream" if binary else "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler
