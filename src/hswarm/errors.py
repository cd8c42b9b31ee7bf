"""The exception hierarchy of hswarm: one root, one subclass per kind of failure.

Each class's docstring is its default message. Messages start with what could not be
done and say what to do. Native (OpenFHE) errors are wrapped with ``raise ... from exc``
so the original text is kept. This module imports nothing from the rest of the package.
"""

from __future__ import annotations


class HSwarmError(Exception):
    """hswarm failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or " ".join((self.__doc__ or "").split()))


class ParamsError(HSwarmError):
    """cannot build parameters: the literal is invalid; see the message for the field."""


class InsecureParamsError(ParamsError):
    """cannot use insecure parameters: pass allow_insecure=True (CLI: --allow-insecure) or set
    HSWARM_ALLOW_INSECURE=1 (tests and demos only)."""


class ContextError(HSwarmError):
    """cannot create or load the crypto context."""


class KeyMaterialError(HSwarmError):
    """cannot use the keys: a required evaluation key is missing or belongs to another key set."""


class SecretKeyLeakError(HSwarmError):
    """refusing to serialize a secret key into a public bundle or a wire message."""


class DeserializationError(HSwarmError):
    """cannot deserialize: the bytes are malformed, truncated or of the wrong kind."""


class ForeignContextError(DeserializationError):
    """cannot use the ciphertext: it belongs to another crypto context or key set."""


class DigestMismatchError(HSwarmError):
    """cannot accept the data: its content digest does not match the expected one."""


class EvaluationError(HSwarmError):
    """cannot evaluate the operation."""


class UnsupportedOperationError(EvaluationError):
    """cannot evaluate: the operation is unknown or not supported by this scheme."""


class ProgramError(HSwarmError):
    """cannot build the program: the expression is invalid."""


class DepthExceededError(ProgramError):
    """cannot compile: the program needs more multiplicative depth than the parameters give."""


class SchemaVersionError(ProgramError):
    """cannot read the document: its schema version is not supported by this hswarm."""


class EncodingError(HSwarmError):
    """cannot encode the values: they do not fit the scheme (type, range or length)."""


class QueenError(HSwarmError):
    """cannot complete the request: the queen refused it."""

    def __init__(self, message: str | None = None, *, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class QueenUnreachableError(QueenError):
    """cannot reach the queen: check its URL and that it is running."""


class DecryptionError(HSwarmError):
    """cannot decrypt the ciphertext."""


class ReEncryptionError(HSwarmError):
    """cannot re-encrypt: proxy re-encryption failed or is not supported for this scheme."""
