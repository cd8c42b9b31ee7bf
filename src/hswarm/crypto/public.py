"""The :class:`PublicContext` bundle: what a client hands to the swarm.

It holds the serialized crypto context, the public key and the evaluation keys
(relinearization, rotation, bootstrapping) — never a secret key. It serializes to one
canonical byte string (a magic, a canonical JSON header with the size and SHA-256 of
each section, then the sections) whose SHA-256 is the context digest.

Reading the container (:meth:`PublicContext.from_bytes`) is pure byte parsing. The
native check that no section is a secret key, :func:`verify_public`, deserializes
sections with OpenFHE and is run by whoever accepts a bundle from elsewhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from hswarm import errors

MAGIC = b"HSWPCTX1"
SECTIONS = ("context", "public_key", "mult_keys", "rotation_keys")
_MAX_HEADER = 1 << 20


def digest(data: bytes) -> str:
    """The content digest hswarm uses everywhere: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclasses.dataclass(frozen=True)
class PublicContext:
    """Crypto context + public and evaluation keys, as bytes. No secret key, ever."""

    params: dict[str, Any]
    key_tag: str
    rotation_indices: tuple[int, ...]
    context: bytes
    public_key: bytes
    mult_keys: bytes
    rotation_keys: bytes

    def __post_init__(self) -> None:
        for name in SECTIONS:
            value = getattr(self, name)
            if not isinstance(value, bytes):
                raise errors.SecretKeyLeakError(
                    f"refusing to build a PublicContext: section {name} must be serialized "
                    f"public bytes, got {type(value).__name__}"
                )
        if not isinstance(self.params, dict) or not isinstance(self.key_tag, str):
            raise errors.DeserializationError(
                "cannot build a PublicContext: params must be a dict and key_tag a string"
            )

    def header(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "key_tag": self.key_tag,
            "rotation_indices": list(self.rotation_indices),
            "sections": [
                {
                    "name": name,
                    "size": len(getattr(self, name)),
                    "sha256": hashlib.sha256(getattr(self, name)).hexdigest(),
                }
                for name in SECTIONS
            ],
        }

    def to_bytes(self) -> bytes:
        head = json.dumps(self.header(), sort_keys=True, separators=(",", ":")).encode()
        return b"".join(
            [MAGIC, len(head).to_bytes(4, "big"), head, *(getattr(self, name) for name in SECTIONS)]
        )

    @property
    def digest(self) -> str:
        return digest(self.to_bytes())

    @property
    def size(self) -> int:
        return sum(len(getattr(self, name)) for name in SECTIONS)

    @classmethod
    def from_bytes(cls, data: bytes, expected_digest: str | None = None) -> PublicContext:
        """Parse a bundle; check its structure, section digests and overall digest."""
        if expected_digest is not None and digest(data) != expected_digest:
            raise errors.DigestMismatchError(
                f"cannot accept the public context: digest {digest(data)} != {expected_digest}"
            )
        if not isinstance(data, bytes) or not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
            raise errors.DeserializationError(
                "cannot read the public context: not an hswarm PublicContext (bad magic)"
            )
        size = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 4], "big")
        start = len(MAGIC) + 4
        if size > _MAX_HEADER or start + size > len(data):
            raise errors.DeserializationError("cannot read the public context: truncated header")
        try:
            head = json.loads(data[start : start + size])
            sections = {s["name"]: s for s in head["sections"]}
            params, key_tag = head["params"], head["key_tag"]
            rotations = tuple(int(i) for i in head["rotation_indices"])
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.DeserializationError(
                f"cannot read the public context: malformed header ({exc})"
            ) from exc
        if sorted(sections) != sorted(SECTIONS):
            raise errors.DeserializationError(
                f"cannot read the public context: sections must be {list(SECTIONS)}, got {sorted(sections)}"
            )
        offset = start + size
        parts: dict[str, bytes] = {}
        for name in SECTIONS:
            length = sections[name].get("size")
            if not isinstance(length, int) or length < 0 or offset + length > len(data):
                raise errors.DeserializationError(
                    f"cannot read the public context: section {name} is truncated"
                )
            part = data[offset : offset + length]
            if hashlib.sha256(part).hexdigest() != sections[name].get("sha256"):
                raise errors.DigestMismatchError(
                    f"cannot accept the public context: section {name} does not match its digest"
                )
            parts[name] = part
            offset += length
        if offset != len(data):
            raise errors.DeserializationError(
                "cannot read the public context: trailing bytes after the last section"
            )
        return cls(params=params, key_tag=key_tag, rotation_indices=rotations, **parts)


def verify_public(bundle: PublicContext) -> None:
    """Raise SecretKeyLeakError if any section deserializes as an OpenFHE secret key."""
    import openfhe  # local: keeps this module's parsing usable without native code

    for name in SECTIONS:
        data = getattr(bundle, name)
        try:
            openfhe.DeserializePrivateKeyString(data, openfhe.BINARY)
        except Exception:
            continue
        raise errors.SecretKeyLeakError(f"refusing the public context: section {name} holds a secret key")
