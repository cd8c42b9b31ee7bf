"""The messages of the task protocol, shared by queen, worker and client (API v1).

Pydantic models only: no I/O, no OpenFHE. Every model forbids unknown fields, so a
typo is a 422, not a silently ignored setting. Ciphertexts and keys never travel inside
these messages: they are blobs, moved by digest (``sha256:<hex>``) over the blob
endpoints. A secret key has no field here, by construction.

Endpoints (all JSON unless said; errors are ``ErrorBody`` with a stable ``code``):

- ``PUT  /v1/blobs/{digest}``          raw bytes; the queen recomputes the digest
- ``GET  /v1/blobs/{digest}``          raw bytes
- ``PUT  /v1/contexts/{digest}``       raw PublicContext bytes; checked, no secret key
- ``POST /v1/jobs``                    ``JobSubmission`` -> ``JobAccepted``
- ``GET  /v1/jobs``                    ``JobList``
- ``GET  /v1/jobs/{job_id}``           ``JobStatus``
- ``WS   /v1/jobs/{job_id}/events``    ``JobEvent`` stream
- ``POST /v1/workers/register``        ``Registration`` -> ``Enrollment``
- ``POST /v1/workers/lease``           ``LeaseRequest`` -> ``LeaseGrant`` (long poll)
- ``POST /v1/workers/heartbeat``       ``Heartbeat`` -> ``HeartbeatReply``
- ``POST /v1/workers/result``          ``TaskResult`` -> ``ResultReceipt``
- ``POST /v1/workers/results``         ``ResultBatch`` -> ``ReceiptBatch``
- ``POST /v1/workers/{id}/release``    operator: end a quarantine (enrollment token)
- ``GET  /v1/workers``                 ``WorkerList``
- ``GET  /v1/traffic``                 ``Traffic``: blob bytes in and out since start
- ``GET  /healthz``, ``GET /readyz``

Workers authenticate with ``Authorization: Bearer <credential>`` from ``Enrollment``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

API_VERSION = "v1"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
_DIGEST = re.compile(DIGEST_PATTERN)

Digest = str
Role = Literal["worker", "guardian", "scout"]
JobState = Literal["running", "done", "failed"]
TaskState = Literal["waiting", "ready", "leased", "done", "failed"]


def is_digest(value: str) -> bool:
    return bool(_DIGEST.match(value))


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _digest(value: str) -> str:
    if not isinstance(value, str) or not is_digest(value):
        raise ValueError(f"not a digest (expected sha256:<64 hex>): {value!r}")
    return value


class ErrorBody(Message):
    """Every 4xx/5xx answer: a stable machine code and a human message."""

    code: str
    message: str


# -- jobs --------------------------------------------------------------------------------


class Assurance(Message):
    """How a job's results are verified (docs/verification.md).

    ``quorum`` matching replicas from distinct owners accept a task; the queen raises it
    to f+1 (its ``faults`` setting) so that f liars can never outvote the truth.
    ``verify=False`` runs every task once, unverified: the job's report says so.
    """

    quorum: int = Field(2, ge=1, le=7)
    verify: bool = True


class JobSubmission(Message):
    circuit: dict[str, Any]  # hswarm.program.Circuit.to_json()
    context: Digest
    inputs: dict[int, Digest]  # input step id -> ciphertext blob digest
    assurance: Assurance = Assurance()
    label: str = Field("", max_length=200)

    @field_validator("context")
    @classmethod
    def _check_context(cls, value: str) -> str:
        return _digest(value)

    @field_validator("inputs")
    @classmethod
    def _check_inputs(cls, value: dict[int, str]) -> dict[int, str]:
        for digest in value.values():
            _digest(digest)
        return value


class JobAccepted(Message):
    job_id: str
    tasks: int


class AssuranceReport(Message):
    """What verification a job got, and the bound on a wrong result slipping through."""

    verified: bool  # False: the job asked for verify=False
    quorum: int  # matching distinct-owner votes a replicated task needs (max(q, f+1))
    faults: int  # f, the Byzantine workers the queen assumes
    replicas: int  # executions voted (all tasks)
    unreplicated: int  # tasks accepted on one trusted worker's vote (adaptive replication)
    audits: int  # guardian re-executions of such tasks
    disagreements: int  # tasks whose replicas returned different digests
    lies: int  # votes proven wrong
    quarantined: list[str]  # workers quarantined for a lie in this job
    reexecuted: int  # tasks re-run because their worker was caught lying
    wrong_bound: float  # worst-case probability that an accepted result is wrong


class JobStatus(Message):
    job_id: str
    state: JobState
    label: str
    context: Digest
    tasks_total: int
    tasks_done: int
    tasks_failed: int
    created_at: float
    finished_at: float | None
    results: dict[int, Digest]  # output step id -> ciphertext digest, once done
    error: str | None = None
    waiting: str | None = None  # why ready tasks find no eligible worker, if they do not
    assurance: AssuranceReport


class JobList(Message):
    jobs: list[JobStatus]


class JobEvent(Message):
    seq: int
    job_id: str
    # submitted | task_ready | task_leased | task_voted | task_disputed | task_done | task_failed
    # | task_reset | lie | done | failed
    kind: str
    task_id: str | None = None
    at: float
    data: dict[str, Any] = {}


# -- workers -----------------------------------------------------------------------------


class Registration(Message):
    token: str
    name: str = Field(..., min_length=1, max_length=100)
    owner: str = Field("", max_length=100)
    role: Role = "worker"
    determinism_class: str = Field(..., min_length=1, max_length=200)
    executors: int = Field(1, ge=1, le=256)
    # Memory the worker's executors may fill with key sets (0: unknown): the queen never
    # leases it a task whose key set needs more.
    memory_bytes: int = Field(0, ge=0)
    # A fault-injection mode (tests and chaos only): the queen refuses the worker unless
    # its settings allow faulty workers. Declared, so a faulty worker is never mistaken.
    fault: str | None = Field(None, max_length=100)


class Enrollment(Message):
    worker_id: str
    credential: str
    heartbeat_interval_s: float
    lease_ttl_s: float


class TaskStep(Message):
    id: int
    op: str
    args: list[int]
    attrs: dict[str, Any]


class TaskSpec(Message):
    """One leased task: everything a worker needs, by digest."""

    task_id: str
    job_id: str
    attempt: int
    deadline: float  # queen clock; renewed by heartbeats
    context: Digest
    # Bytes an executor needs to hold the context's keys (measured by the queen when the
    # context was uploaded; 0 if unknown): the worker sizes its executors by it.
    context_memory: int = Field(0, ge=0)
    steps: list[TaskStep]
    inputs: dict[int, Digest]
    outputs: list[int]


class LeaseRequest(Message):
    max_tasks: int = Field(1, ge=1, le=64)
    wait_s: float = Field(0.0, ge=0.0, le=30.0)
    contexts: list[Digest] = []  # key sets already cached (routing hint)


class LeaseGrant(Message):
    tasks: list[TaskSpec]


class Heartbeat(Message):
    leases: list[str] = []  # task ids the worker is working on
    load: float = Field(0.0, ge=0.0)
    contexts: list[Digest] = []


class HeartbeatReply(Message):
    renewed: list[str]
    cancelled: list[str]  # leases the worker lost: stop working on them
    deadline: float


class TaskResult(Message):
    task_id: str
    attempt: int
    outputs: dict[int, Digest] = {}  # output step id -> uploaded blob digest
    error: str | None = Field(None, max_length=2000)
    seconds: float = Field(0.0, ge=0.0)


class ResultReceipt(Message):
    accepted: bool
    duplicate: bool = False
    error: ErrorBody | None = None  # in a batch: why this result was refused (nothing changed)


class ResultBatch(Message):
    """Several results in one request; each is taken or refused on its own."""

    results: list[TaskResult] = Field(..., min_length=1, max_length=256)


class ReceiptBatch(Message):
    receipts: list[ResultReceipt]  # in the order of the results


class WorkerInfo(Message):
    worker_id: str
    name: str
    owner: str
    role: Role
    state: Literal["alive", "suspect", "dead", "gone"]
    last_seen: float
    leases: int
    done: int
    streak: int  # consecutive verified results (adaptive replication trusts long streaks)
    lies: int
    quarantined: bool  # caught lying: no more leases until an operator releases it
    quarantined_at: float | None = None


class WorkerList(Message):
    workers: list[WorkerInfo]


class Traffic(Message):
    """Blob bytes the queen received and served since it started (in memory, per process)."""

    since: float  # queen clock
    bytes_received: int  # blob and context uploads
    bytes_sent: int  # blob downloads (contexts included)
    uploads: int
    downloads: int
