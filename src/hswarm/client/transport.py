"""Asynchronous HTTP transport from a client to the queen (API v1).

One persistent ``httpx.AsyncClient``; JSON through the models of ``hswarm.wire``; blobs
as raw bytes checked against their digest. Error answers become hswarm errors carrying
the queen's code and message. It knows nothing of keys or programs.
"""

from __future__ import annotations

from typing import Any

import httpx

from hswarm import errors, wire
from hswarm.crypto.public import digest as content_digest


class QueenError(errors.HSwarmError):
    """the queen refused the request."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status}, {code})")
        self.status = status
        self.code = code


class QueenUnreachable(errors.HSwarmError):
    """cannot reach the queen: is it running, and is the URL right?"""


class QueenTransport:
    def __init__(self, base_url: str, timeout_s: float = 60.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise QueenUnreachable(f"cannot reach the queen at {self._http.base_url}: {exc!r}") from exc
        if response.status_code >= 400:
            try:
                body = wire.ErrorBody.model_validate(response.json())
                code, message = body.code, body.message
            except ValueError:
                code, message = "http_error", response.text[:300]
            raise QueenError(response.status_code, code, f"cannot {method} {path}: {message}")
        return response

    async def ready(self) -> None:
        await self._request("GET", "/readyz")

    async def put_blob(self, data: bytes) -> str:
        key = content_digest(data)
        await self._request("PUT", f"/v1/blobs/{key}", content=data)
        return key

    async def put_context(self, data: bytes) -> str:
        key = content_digest(data)
        await self._request("PUT", f"/v1/contexts/{key}", content=data)
        return key

    async def get_blob(self, key: str) -> bytes:
        data = (await self._request("GET", f"/v1/blobs/{key}")).content
        if content_digest(data) != key:
            raise errors.DigestMismatchError(f"cannot accept blob {key}: the bytes do not match the digest")
        return data

    async def submit(self, submission: wire.JobSubmission) -> wire.JobAccepted:
        response = await self._request("POST", "/v1/jobs", json=submission.model_dump(mode="json"))
        return wire.JobAccepted.model_validate(response.json())

    async def job(self, job_id: str) -> wire.JobStatus:
        return wire.JobStatus.model_validate((await self._request("GET", f"/v1/jobs/{job_id}")).json())
