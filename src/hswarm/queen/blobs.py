"""Content-addressed blob files: ciphertexts, keys and contexts, by ``sha256:<hex>``.

A blob lives at ``blobs/<first two hex>/<hex>`` under the data directory. An upload is
streamed into a temporary file while it is hashed and counted: it is refused as soon as
it passes ``max_bytes`` (the rest is never read) and refused if its SHA-256 is not the
digest it was sent under; only then is it renamed into place (atomic, so a reader never
sees half a blob) and recorded in the ``blobs`` table. Bytes never sit whole in memory.

It does not look inside blobs: the queen never deserializes a ciphertext. Contexts are
checked by ``contexts`` before they are kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import sqlalchemy as sa

from hswarm import errors, wire
from hswarm.queen import refusals, store


@dataclasses.dataclass(frozen=True)
class Upload:
    """Bytes received and verified, waiting in a temporary file to be kept or discarded."""

    digest: str
    size: int
    path: Path


class BlobStore:
    """The blob directory: paths by digest, streamed receiving, atomic keeping."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / "incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        for stale in self.incoming.iterdir():  # left by a queen that died mid-upload
            stale.unlink(missing_ok=True)

    def path(self, digest: str) -> Path:
        hexdigest = _hex(digest)
        return self.root / hexdigest[:2] / hexdigest

    def open_path(self, digest: str) -> Path:
        """The file of a stored blob; NotFoundError if there is none."""
        path = self.path(digest)
        if not path.is_file():
            raise refusals.NotFoundError(f"cannot find blob {digest}: upload it first")
        return path

    async def receive(
        self, digest: str, chunks: AsyncIterator[bytes], max_bytes: int, declared: int | None = None
    ) -> Upload:
        """Stream ``chunks`` into a temporary file; refuse oversized or mismatching bytes."""
        _hex(digest)
        if declared is not None and declared > max_bytes:
            raise refusals.TooLargeError(
                f"cannot accept blob {digest}: {declared} bytes declared, the limit is {max_bytes}"
            )
        temp = self.incoming / f"{secrets.token_hex(8)}.part"
        hasher = hashlib.sha256()
        size = 0
        try:
            with open(temp, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise refusals.TooLargeError(
                            f"cannot accept blob {digest}: it exceeds the limit of {max_bytes} bytes"
                        )
                    hasher.update(chunk)
                    out.write(chunk)
            got = "sha256:" + hasher.hexdigest()
            if got != digest:
                raise errors.DigestMismatchError(
                    f"cannot accept blob {digest}: the bytes hash to {got}; upload under their digest"
                )
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return Upload(digest, size, temp)

    def keep(self, upload: Upload) -> None:
        """Move a verified upload into place (a blob already there is left as it is)."""
        final = self.path(upload.digest)
        final.parent.mkdir(exist_ok=True)
        if final.is_file():
            upload.path.unlink(missing_ok=True)
            return
        os.replace(upload.path, final)

    def discard(self, upload: Upload) -> None:
        upload.path.unlink(missing_ok=True)


def commit(db: store.Store, blob_store: BlobStore, upload: Upload, now: float | None = None) -> bool:
    """Keep a verified upload and record it; True when the blob is new to the store."""
    try:
        blob_store.keep(upload)
        with db.write() as conn:
            return record(conn, upload.digest, upload.size, now)
    finally:
        blob_store.discard(upload)


def record(conn: sa.Connection, digest: str, size: int, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    return store.insert_absent(conn, store.blobs, {"digest": digest, "size": size, "created_at": now})


def missing(conn: sa.Connection, digests: set[str]) -> set[str]:
    """The digests among ``digests`` that no uploaded blob has."""
    if not digests:
        return set()
    query = sa.select(store.blobs.c.digest).where(store.blobs.c.digest.in_(sorted(digests)))
    return digests - set(conn.execute(query).scalars())


def _hex(digest: str) -> str:
    if not wire.is_digest(digest):
        raise errors.DigestMismatchError(f"cannot address blob {digest!r}: not a sha256:<64 hex> digest")
    return digest.removeprefix("sha256:")
