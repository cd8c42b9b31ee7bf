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


class QueenTransport:
    def __init__(self, base_url: str, timeout_s: float = 60.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s)

    async def close(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise errors.QueenUnreachableError(
                f"cannot reach the queen at {self._http.base_url}: {exc!r}"
            ) from exc
        if response.status_code >= 400:
            try:
                body = wire.ErrorBody.model_validate(response.json())
                code, message = body.code, body.message
            except ValueError:
                code, message = "http_error", response.text[:300]
            raise errors.QueenError(
                f"cannot {method} {path}: {message}", status=response.status_code, code=code
            )
        return response

    async def ready(self) -> None:
        await self._request("GET", "/readyz")

    async def put_blob(self, key: str, data: bytes) -> None:
        """Upload bytes whose digest the caller computed (the queen checks it again)."""
        await self._request("PUT", f"/v1/blobs/{key}", content=data)

    async def put_context(self, key: str, data: bytes) -> None:
        await self._request("PUT", f"/v1/contexts/{key}", content=data)

    async def get_blob(self, key: str) -> bytes:
        data = (await self._request("GET", f"/v1/blobs/{key}")).content
        if content_digest(data) != key:
            raise errors.DigestMismatchError(f"cannot accept blob {key}: the bytes do not match the digest")
        return data

    async def submit(self, submission: wire.JobSubmission) -> wire.JobAccepted:
        response = await self._request("POST", "/v1/jobs", json=submission.model_dump(mode="json"))
        return wire.JobAccepted.model_validate(response.json())

    async def job(self, job_id: str, *, wait_s: float = 0.0, done: int = -1) -> wire.JobStatus:
        """The job's status; with ``wait_s``, once more than ``done`` tasks are done or the
        job has ended (a long poll, at most ``wait_s`` seconds)."""
        params = {"wait_s": wait_s, "done": done} if wait_s > 0 else None
        response = await self._request("GET", f"/v1/jobs/{job_id}", params=params)
        return wire.JobStatus.model_validate(response.json())
