"""The queen's refusals: domain errors that ``hswarm.errors`` does not have yet.

Each is an :class:`hswarm.errors.HSwarmError` whose docstring is its default message,
raised by the services and turned into an ``ErrorBody`` with a stable code in one place
(``app``). The services know nothing of HTTP; the status codes live in ``app`` only.
Candidates for ``hswarm.errors`` once the client maps codes back to exceptions.
"""

from __future__ import annotations

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
