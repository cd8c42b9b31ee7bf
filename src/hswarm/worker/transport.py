"""Synchronous HTTP transport from a worker to the queen (API v1, ``docs/protocol.md``).

One persistent ``httpx.Client`` (a connection pool shared by the supervisor's threads);
JSON through the models of ``hswarm.wire``; blobs streamed between files and the network,
downloads checked against their digest while they stream. Connection errors and 5xx
answers are retried a bounded number of times with exponential backoff (the protocol is
at-least-once: a repeated lease only claims tasks whose leases then expire, a repeated
result is answered as a duplicate). A 4xx answer becomes a :class:`QueenError` carrying
the queen's ``ErrorBody`` code and message, or ``DigestMismatchError`` for
``digest_mismatch``.

It knows nothing of tasks, caches or FHE: callers pass paths and messages.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import httpx
import pydantic

from hswarm import errors, wire

T = TypeVar("T")
M = TypeVar("M", bound=pydantic.BaseModel)
CHUNK = 1 << 20


# Shared with the client; named here too because the supervisor catches them from here.
QueenError = errors.QueenError
QueenUnreachableError = errors.QueenUnreachableError


class _Retryable(Exception):
    """A 5xx answer: worth another try."""


def _version() -> str:
    try:
        return metadata.version("hswarm")
    except metadata.PackageNotFoundError:
        return "0"


class QueenConnection:
    """The worker's side of the queen's HTTP API."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 5,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        connections: int = 8,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            headers={"User-Agent": f"hswarm-worker/{_version()}"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> QueenConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- workers ------------------------------------------------------------------------

    def register(self, registration: wire.Registration) -> wire.Enrollment:
        """Enroll with the token; later calls carry the credential it returns."""
        enrollment = self._json(
            "register with the queen", "/v1/workers/register", registration, wire.Enrollment
        )
        self._http.headers["Authorization"] = f"Bearer {enrollment.credential}"
        return enrollment

    def lease(self, request: wire.LeaseRequest) -> wire.LeaseGrant:
        """Claim ready tasks, long-polling up to ``request.wait_s`` when there are none."""
        return self._json(
            "lease tasks",
            "/v1/workers/lease",
            request,
            wire.LeaseGrant,
            timeout_s=self.timeout_s + request.wait_s,
        )

    def heartbeat(self, beat: wire.Heartbeat) -> wire.HeartbeatReply:
        return self._json("send a heartbeat", "/v1/workers/heartbeat", beat, wire.HeartbeatReply)

    def result(self, result: wire.TaskResult) -> wire.ResultReceipt:
        return self._json(
            f"post the result of task {result.task_id}", "/v1/workers/result", result, wire.ResultReceipt
        )

    # -- blobs --------------------------------------------------------------------------

    def download(self, digest: str, dest: Path) -> int:
        """Stream blob ``digest`` into the file ``dest`` while hashing it; returns its size.
        Raises DigestMismatchError (and removes ``dest``) when the bytes do not match."""
        action = f"download blob {digest}"
        _check_digest(action, digest)

        def attempt() -> int:
            with self._http.stream("GET", f"/v1/blobs/{digest}") as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(action, response)
                sha, size = hashlib.sha256(), 0
                with open(dest, "wb") as out:
                    for chunk in response.iter_bytes(CHUNK):
                        sha.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
            got = "sha256:" + sha.hexdigest()
            if got != digest:
                dest.unlink(missing_ok=True)
                raise errors.DigestMismatchError(
                    f"cannot accept blob {digest} from the queen: its {size} bytes hash to {got}"
                )
            return size

        try:
            return self._retrying(action, attempt)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    def upload(self, digest: str, source: Path) -> None:
        """PUT the file ``source`` as blob ``digest`` (idempotent on the queen)."""
        action = f"upload blob {digest}"
        _check_digest(action, digest)
        size = source.stat().st_size

        def chunks() -> Iterator[bytes]:
            with open(source, "rb") as data:
                while block := data.read(CHUNK):
                    yield block

        def attempt() -> None:
            response = self._http.put(
                f"/v1/blobs/{digest}",
                content=chunks(),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
            self._raise_for(action, response)

        self._retrying(action, attempt)

    # -- plumbing -----------------------------------------------------------------------

    def _json(
        self,
        action: str,
        path: str,
        message: pydantic.BaseModel,
        answer: type[M],
        *,
        timeout_s: float | None = None,
    ) -> M:
        body = message.model_dump_json().encode()

        def attempt() -> M:
            response = self._http.post(
                path,
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=timeout_s if timeout_s is not None else self.timeout_s,
            )
            self._raise_for(action, response)
            try:
                return answer.model_validate_json(response.content)
            except pydantic.ValidationError as exc:
                raise QueenError(
                    f"cannot {action}: the queen's answer is not a {answer.__name__} "
                    f"({exc.error_count()} errors: {exc.errors()[0]['msg']}); are queen and worker "
                    "the same version?",
                    status=response.status_code,
                    code="bad_answer",
                ) from exc

        return self._retrying(action, attempt)

    def _retrying(self, action: str, attempt: Callable[[], T]) -> T:
        delay = self.backoff_s
        for tries in range(1, self.retries + 2):
            try:
                return attempt()
            except (httpx.TransportError, _Retryable) as exc:
                failure: Exception = exc
            if tries > self.retries:
                break
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self.max_backoff_s)
        detail = str(failure) or type(failure).__name__
        raise QueenUnreachableError(
            f"cannot {action}: no usable answer from the queen at {self.base_url} after {tries} tries "
            f"({detail}); check HSWARM_QUEEN_URL and that the queen is running",
            code="unreachable",
        ) from failure

    def _raise_for(self, action: str, response: httpx.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        try:
            body = wire.ErrorBody.model_validate_json(response.content)
            code, text = body.code, body.message
        except pydantic.ValidationError:
            code, text = f"http_{status}", response.text[:200] or response.reason_phrase
        if status >= 500:
            raise _Retryable(f"HTTP {status} {code}: {text}")
        message = f"cannot {action}: the queen answered {status} {code}: {text}"
        if code == "digest_mismatch":
            raise errors.DigestMismatchError(message)
        raise QueenError(message, status=status, code=code)


def _check_digest(action: str, digest: str) -> None:
    if not wire.is_digest(digest):
        raise errors.DigestMismatchError(f"cannot {action}: not a digest (expected sha256:<64 hex>)")
