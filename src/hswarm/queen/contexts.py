"""Accepting a client's PublicContext: parse it, prove it holds no secret key and loads,
record it.

The bytes come from outside, so they are checked in three steps, cheapest first:

1. The container is parsed here with :meth:`PublicContext.from_bytes` (pure Python:
   magic, header, section digests) and its parameter literal is validated.
2. :func:`crypto.public.verify_public` runs in a forked child
   (:func:`crypto.sandbox.probe`, memory cap and time limit): a section that
   deserializes as a secret key is ``secret_key``. Only that fixed-text error can come
   out of this child (the container already parsed), so the uploader cannot forge it.
3. A second child loads the bundle as a worker would (``crypto.evaluator.Evaluator``:
   context, evaluation keys, public key and its tag): a section that is not what it
   claims to be, or that crashes or exhausts the native parser, is ``bad_context``.

Only then is the blob kept and the context's params recorded for job submission. The
queen's own process never imports ``openfhe`` and never holds a context object: it
moves the bytes, workers load them.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from hswarm import errors
from hswarm.crypto import params, public, sandbox
from hswarm.queen import blobs, refusals, store

_MIB = 1 << 20
# The first child only imports openfhe (~100 MiB of address space) and tries one parse
# per section; the second also builds the context and loads every key.
_VERIFY_MEMORY = 512 * _MIB
_SECRET_KEY = f"{errors.SecretKeyLeakError.__name__}: "
# An executor's peak over its trial load, and a fixed part for the interpreter and the
# task's ciphertexts (set from measurements: see docs/benchmarks.md).
EVALUATION_HEADROOM = 1.5
_EVALUATION_BASE = 128 * _MIB


def accept(
    db: store.Store,
    blob_store: blobs.BlobStore,
    upload: blobs.Upload,
    *,
    timeout_s: float = 60.0,
    memory_bytes: int = 4096 * _MIB,
    now: float | None = None,
) -> bool:
    """Check an uploaded context, keep its blob and record it; True when it is new."""
    try:
        data = upload.path.read_bytes()
        bundle = parse(data)
        resident = verify(data, timeout_s=timeout_s, memory_bytes=memory_bytes)
        now = time.time() if now is None else now
        blob_store.keep(upload)
        with db.write() as conn:
            blobs.record(conn, upload.digest, upload.size, now)
            return store.insert_absent(
                conn,
                store.contexts,
                {
                    "digest": upload.digest,
                    "size": upload.size,
                    "params": bundle.params,
                    "key_tag": bundle.key_tag,
                    "rotation_indices": list(bundle.rotation_indices),
                    "created_at": now,
                    "memory": holding_memory(resident),
                },
            )
    finally:
        blob_store.discard(upload)


def parse(data: bytes) -> public.PublicContext:
    """The container and its parameter literal, without native code."""
    try:
        bundle = public.PublicContext.from_bytes(data)
        params.Params.from_literal(bundle.params, allow_insecure=True)
    except (errors.HSwarmError, TypeError, ValueError, KeyError, AttributeError) as exc:
        # The literal is the uploader's: any way it fails to validate is a bad context.
        raise errors.DeserializationError(f"cannot accept the context: {exc}") from exc
    return bundle


def holding_memory(resident: int) -> int:
    """Bytes an executor needs to hold a key set whose trial load took ``resident`` bytes:
    evaluating (a bootstrap's temporaries, the task's ciphertexts) takes more than loading."""
    return int(resident * EVALUATION_HEADROOM) + _EVALUATION_BASE


def verify(data: bytes, *, timeout_s: float, memory_bytes: int) -> int:
    """Refuse a context with a secret-key section, or one that does not load (each
    check in a forked child; see the module docstring). Returns the resident memory the
    trial load took, in bytes."""
    timeout_s += len(data) / 50e6
    try:
        sandbox.probe(
            _holds_no_secret_key, data, extra_memory=_VERIFY_MEMORY + 4 * len(data), timeout_s=timeout_s
        )
    except errors.DeserializationError as exc:
        if _SECRET_KEY in str(exc):
            raise errors.SecretKeyLeakError(
                "cannot accept the context: a section holds a secret key; "
                "send KeySet.public_context(), never the key file"
            ) from exc
        raise errors.DeserializationError(f"cannot accept the context: {_detail(exc)}") from exc
    try:
        return sandbox.probe(_loads, data, extra_memory=memory_bytes + 4 * len(data), timeout_s=timeout_s)
    except errors.DeserializationError as exc:
        raise errors.DeserializationError(
            f"cannot accept the context: it does not load ({_detail(exc)})"
        ) from exc


def _detail(exc: Exception) -> str:
    # The sandbox words its errors for ciphertexts, its usual input.
    return str(exc).removeprefix("cannot deserialize the ciphertext: ")


def _holds_no_secret_key(data: bytes) -> None:  # in a forked child only
    public.verify_public(public.PublicContext.from_bytes(data))


def _loads(data: bytes) -> None:  # in a forked child only: it imports native code
    from hswarm.crypto import evaluator

    evaluator.Evaluator(public.PublicContext.from_bytes(data), allow_insecure=True, sandbox=False)


def params_of(conn: sa.Connection, digest: str) -> tuple[dict, list[int]]:
    """The parameter literal and rotation indices recorded for a context."""
    row = conn.execute(
        sa.select(store.contexts.c.params, store.contexts.c.rotation_indices).where(
            store.contexts.c.digest == digest
        )
    ).one_or_none()
    if row is None:
        raise refusals.NotFoundError(f"cannot find context {digest}: upload it to /v1/contexts first")
    return dict(row.params), list(row.rotation_indices)
