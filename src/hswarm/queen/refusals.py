"""The queen's refusals: domain errors that ``hswarm.errors`` does not have yet.

Each is an :class:`hswarm.errors.HSwarmError` whose docstring is its default message,
raised by the services and turned into an ``ErrorBody`` with a stable code by
:data:`ERROR_CODES`, the one table of status codes (the app uses it for answers, the
queue for refusals inside a batch of results). Candidates for ``hswarm.errors`` once
the client maps codes back to exceptions.
"""

from __future__ import annotations

import sqlalchemy as sa

from hswarm import errors


class NotFoundError(errors.HSwarmError):
    """cannot find it: no job, task, blob or context has that id or digest."""


class ConflictError(errors.HSwarmError):
    """cannot accept it: it contradicts the queen's state (lease lost or expired, other params)."""


class UnauthorizedError(errors.HSwarmError):
    """cannot authenticate: send Authorization: Bearer <credential> from the enrollment."""


class TooLargeError(errors.HSwarmError):
    """cannot accept the upload: it is larger than the queen's max_blob_bytes."""


class StoreUnavailableError(errors.HSwarmError):
    """cannot reach the store: the database does not answer; retry later."""


class ForbiddenError(errors.HSwarmError):
    """cannot allow it: the queen's settings or the worker's standing forbid it."""


class QuarantinedError(ForbiddenError):
    """cannot lease tasks: this worker is quarantined after a proven lie."""


# First match wins: subclasses before their bases. The one place where domain errors
# meet HTTP status codes and the stable error codes of docs/protocol.md.
ERROR_CODES: tuple[tuple[type[Exception], int, str], ...] = (
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (UnauthorizedError, 401, "unauthorized"),
    (QuarantinedError, 403, "quarantined"),
    (ForbiddenError, 403, "forbidden"),
    (TooLargeError, 413, "too_large"),
    (StoreUnavailableError, 503, "not_ready"),
    (errors.DigestMismatchError, 422, "digest_mismatch"),
    (errors.SecretKeyLeakError, 422, "secret_key"),
    (errors.DeserializationError, 422, "bad_context"),
    (errors.HSwarmError, 422, "invalid"),  # ProgramError, ParamsError, ...
    (sa.exc.OperationalError, 503, "not_ready"),
)


def classify(exc: Exception) -> tuple[int, str]:
    """The HTTP status and stable code of a refusal."""
    return next((status, code) for kind, status, code in ERROR_CODES if isinstance(exc, kind))
