"""Who may work for the queen: the enrollment token, registration, bearer credentials.

The enrollment token is a random secret written to ``DATA_DIR/enroll.token`` (mode
0600) at the queen's first start; whoever can read it may enroll workers. Registration
trades it for a worker id and a credential; the queen keeps only the credential's
SHA-256, so a copy of the database enrolls nobody. :func:`authenticate` turns a bearer
credential back into a worker id.

It does not track liveness or leases (``queue`` does) and knows nothing of HTTP
headers: the app extracts the bearer string.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from hswarm import wire
from hswarm.queen import events, refusals, settings, store


def ensure_token(path: Path) -> str:
    """The enrollment token, created (0600, never overwritten) if there is none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    while token.startswith("-"):  # `--token "$(cat enroll.token)"` would read it as an option
        token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token


def register(
    db: store.Store, cfg: settings.QueenSettings, request: wire.Registration, now: float | None = None
) -> wire.Enrollment:
    """Enroll a worker that presents the enrollment token."""
    expected = ensure_token(cfg.token_path)
    if not secrets.compare_digest(request.token.encode(), expected.encode()):
        raise refusals.UnauthorizedError(
            "cannot register the worker: the enrollment token is wrong; copy DATA_DIR/enroll.token"
        )
    if request.fault is not None and not cfg.allow_faulty_workers:
        raise refusals.ForbiddenError(
            f"cannot register the worker: it injects fault {request.fault!r} and this queen does not "
            "allow faulty workers (HSWARM_ALLOW_FAULTY_WORKERS=1, for tests and chaos only)"
        )
    now = time.time() if now is None else now
    worker_id = uuid.uuid4().hex
    credential = secrets.token_urlsafe(32)
    with db.write() as conn:
        conn.execute(
            sa.insert(store.workers).values(
                id=worker_id,
                name=request.name,
                owner=request.owner,
                role=request.role,
                determinism_class=request.determinism_class,
                executors=request.executors,
                memory_bytes=request.memory_bytes,
                credential_sha256=_fingerprint(credential),
                state="alive",
                registered_at=now,
                last_seen=now,
                load=0.0,
                contexts=[],
                done=0,
            )
        )
        events.append(
            conn,
            "registered",
            now,
            worker_id=worker_id,
            data={"name": request.name, "owner": request.owner, "role": request.role, "fault": request.fault},
        )
    return wire.Enrollment(
        worker_id=worker_id,
        credential=credential,
        heartbeat_interval_s=cfg.heartbeat_interval_s,
        lease_ttl_s=cfg.lease_ttl_s,
    )


def owner_key(owner: str, worker_id: str) -> str:
    """Replicas of a task go to distinct owners; a worker without a label is its own owner."""
    return owner if owner else f"worker:{worker_id}"


def check_operator(cfg: settings.QueenSettings, bearer: str | None) -> None:
    """Operator calls present the enrollment token (roles and JWTs come with the security work)."""
    expected = ensure_token(cfg.token_path)
    if not bearer or not secrets.compare_digest(bearer.encode(), expected.encode()):
        raise refusals.UnauthorizedError(
            "cannot authorize the operator call: send Authorization: Bearer <DATA_DIR/enroll.token>"
        )


class Credentials:
    """Bearer credential -> worker id, remembered for ``ttl_s`` so that a busy worker's
    requests do not each cost a query. Thread-safe enough: a dict of immutable tuples."""

    def __init__(self, ttl_s: float = 10.0) -> None:
        self.ttl_s = ttl_s
        self._known: dict[str, tuple[str, float]] = {}

    def remembered(self, credential: str | None) -> str | None:
        """The worker id of a credential seen less than ``ttl_s`` ago; no query."""
        hit = self._known.get(credential) if credential else None
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def authenticate(self, db: store.Store, credential: str | None) -> str:
        worker_id = self.remembered(credential)
        if worker_id is not None:
            return worker_id
        worker_id = authenticate(db, credential)
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[credential or ""] = (worker_id, time.monotonic() + self.ttl_s)
        return worker_id


def authenticate(db: store.Store, credential: str | None) -> str:
    """The worker id a bearer credential belongs to; UnauthorizedError otherwise."""
    if not credential:
        raise refusals.UnauthorizedError(
            "cannot authenticate: no bearer credential; send Authorization: Bearer <credential>"
        )
    with db.read() as conn:
        worker_id = conn.execute(
            sa.select(store.workers.c.id).where(
                store.workers.c.credential_sha256 == _fingerprint(credential),
                store.workers.c.state != "gone",
            )
        ).scalar_one_or_none()
    if worker_id is None:
        raise refusals.UnauthorizedError("cannot authenticate: unknown credential; register the worker again")
    return worker_id


def list_workers(db: store.Store, worker_id: str | None = None) -> wire.WorkerList:
    """Every worker, or the one named (NotFoundError if there is none)."""
    w, r = store.workers, store.replicas
    leases = (
        sa.select(sa.func.count()).where(r.c.worker_id == w.c.id, r.c.state == "leased").scalar_subquery()
    )
    query = sa.select(w, leases.label("leases")).order_by(w.c.registered_at)
    if worker_id is not None:
        query = query.where(w.c.id == worker_id)
    with db.read() as conn:
        rows = conn.execute(query).all()
    if worker_id is not None and not rows:
        raise refusals.NotFoundError(f"cannot find worker {worker_id}: no worker has that id")
    return wire.WorkerList(
        workers=[
            wire.WorkerInfo(
                worker_id=row.id,
                name=row.name,
                owner=row.owner,
                role=row.role,
                state=row.state,
                last_seen=row.last_seen,
                leases=row.leases,
                done=row.done,
                streak=row.streak,
                lies=row.lies,
                quarantined=bool(row.quarantined),
                quarantined_at=row.quarantined_at,
            )
            for row in rows
        ]
    )


def _fingerprint(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()
