"""Client-side key material: generation, the secret key file, encryption and decryption.

A :class:`KeySet` holds the secret key and never lets it out: it refuses pickling and
JSON, and :meth:`KeySet.public_context` builds a :class:`PublicContext` from public
sections only. Generation normalizes every object through OpenFHE serialization
(a context built by ``GenCryptoContext`` serializes differently from a deserialized one,
measured on openfhe 1.6.1), so a key set in memory behaves exactly like one loaded from
its file and like the context a worker deserializes — ciphertexts stay byte-identical.

It does not evaluate (``evaluator``) or know programs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openfhe

from hswarm import errors
from hswarm.crypto import codec, context
from hswarm.crypto.context import native, wrapped
from hswarm.crypto.params import Params
from hswarm.crypto.public import PublicContext

KEY_FILE_MAGIC = b"HSWKEYS1"
BINARY = openfhe.BINARY


def clear_registry() -> None:
    """Forget OpenFHE's process-global evaluation keys and cached contexts."""
    openfhe.ClearEvalMultKeys()
    openfhe.CryptoContext.ClearEvalAutomorphismKeys()
    openfhe.ReleaseAllContexts()


class KeySet:
    """A secret key with its context and public key. Lives on the client only."""

    def __init__(
        self, params: Params, sections: dict[str, bytes], secret_key: bytes, rotation_indices: Sequence[int]
    ) -> None:
        self.params = params
        self.rotation_indices = tuple(sorted(set(rotation_indices)))
        self._sections = dict(sections)
        self._secret_bytes = secret_key
        clear_registry()
        with wrapped("load the key set", errors.KeyMaterialError):
            self.cc = openfhe.DeserializeCryptoContextString(sections["context"], BINARY)
            context.enable_features(self.cc, params)
            self.public_key = openfhe.DeserializePublicKeyString(sections["public_key"], BINARY)
            self._secret_key = openfhe.DeserializePrivateKeyString(secret_key, BINARY)
        self.key_tag = self.public_key.GetKeyTag()
        self._level = context.encryption_level(params)
        self._public: PublicContext | None = None

    # The secret key must not travel: no pickling, no JSON, no repr of key bytes.
    def __reduce__(self) -> Any:
        raise errors.SecretKeyLeakError(
            "refusing to pickle a KeySet: it holds the secret key; send public_context()"
        )

    def __repr__(self) -> str:
        return f"KeySet({self.params.label}, key_tag={self.key_tag[:12]}…)"

    def public_context(self) -> PublicContext:
        if self._public is None:
            self._public = PublicContext(
                params=self.params.to_literal(),
                key_tag=self.key_tag,
                rotation_indices=self.rotation_indices,
                **self._sections,
            )
        return self._public

    def with_rotations(self, rotation_indices: Iterable[int]) -> KeySet:
        """This key set plus rotation keys for more indices (same secret and public key,
        so existing ciphertexts stay valid; a new public context and digest)."""
        wanted = {int(i) % self.params.slots for i in rotation_indices} - {0}
        indices = sorted(wanted | set(self.rotation_indices))
        if len(indices) == len(self.rotation_indices):
            return self
        clear_registry()
        with wrapped("generate rotation keys", errors.KeyMaterialError):
            cc = openfhe.DeserializeCryptoContextString(self._sections["context"], BINARY)
            context.enable_features(cc, self.params)
            secret = openfhe.DeserializePrivateKeyString(self._secret_bytes, BINARY)
            if self._sections["rotation_keys"]:
                openfhe.DeserializeEvalAutomorphismKeyString(self._sections["rotation_keys"], BINARY)
            if self.params.bootstrap is not None:
                context.setup_bootstrap(cc, self.params)
            cc.EvalRotateKeyGen(secret, sorted(set(indices) - set(self.rotation_indices)))
            rotation_keys = openfhe.SerializeEvalAutomorphismKeyString(BINARY, self.key_tag)
        del cc, secret
        return KeySet(
            self.params, {**self._sections, "rotation_keys": rotation_keys}, self._secret_bytes, indices
        )

    # -- encryption ---------------------------------------------------------------------

    def encrypt(self, values: Any) -> list[bytes]:
        """Encrypt a vector of any length: one ciphertext (bytes) per chunk of ``slots``."""
        return [self.encrypt_chunk(chunk) for chunk in codec.split(values, self.params)]

    def encrypt_chunk(self, chunk: Any) -> bytes:
        pt = codec.plaintext(self.cc, self.params, chunk, self._level)
        ct = native("encrypt", errors.HSwarmError, self.cc.Encrypt, self.public_key, pt)
        return native("serialize a ciphertext", errors.HSwarmError, openfhe.Serialize, ct, BINARY)

    def decrypt(self, chunks: Iterable[bytes], length: int | None = None) -> np.ndarray:
        """Decrypt chunk ciphertexts and concatenate their values (first ``length``)."""
        parts = [self.decrypt_chunk(data) for data in chunks]
        values = np.concatenate(parts) if parts else np.zeros(0)
        return values if length is None else values[:length]

    def decrypt_chunk(self, data: bytes) -> np.ndarray:
        ct = native(
            "decrypt: the ciphertext bytes are malformed",
            errors.DeserializationError,
            openfhe.DeserializeCiphertextString,
            data,
            BINARY,
        )
        if ct.GetKeyTag() != self.key_tag:
            raise errors.ForeignContextError(
                "cannot decrypt: the ciphertext was encrypted under another key set"
            )
        pt = native("decrypt", errors.DecryptionError, self.cc.Decrypt, self._secret_key, ct)
        return codec.decode(pt, self.params)

    # -- the key file -------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the key set (secret key included) to a file readable by its owner only."""
        path = Path(path)
        head = json.dumps(
            {
                "params": self.params.to_literal(),
                "rotation_indices": list(self.rotation_indices),
                "sections": [[name, len(data)] for name, data in self._all_sections()],
            },
            sort_keys=True,
        ).encode()
        fd = os.open(path.with_suffix(path.suffix + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(KEY_FILE_MAGIC + len(head).to_bytes(4, "big") + head)
            for _, data in self._all_sections():
                out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(path.with_suffix(path.suffix + ".tmp"), path)
        os.chmod(path, 0o600)
        return path

    def _all_sections(self) -> list[tuple[str, bytes]]:
        return [*self._sections.items(), ("secret_key", self._secret_bytes)]

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, allow_insecure: bool | None = None) -> KeySet:
        data = Path(path).read_bytes()
        if not data.startswith(KEY_FILE_MAGIC):
            raise errors.KeyMaterialError(f"cannot load keys from {path}: not an hswarm key file")
        try:
            size = int.from_bytes(data[8:12], "big")
            head = json.loads(data[12 : 12 + size])
            offset = 12 + size
            parts: dict[str, bytes] = {}
            for name, length in head["sections"]:
                parts[name] = data[offset : offset + length]
                offset += length
            secret = parts.pop("secret_key")
            if offset != len(data):
                raise ValueError("size mismatch")
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.KeyMaterialError(f"cannot load keys from {path}: malformed file") from exc
        params = Params.from_literal(head["params"], allow_insecure=allow_insecure)
        return cls(params, parts, secret, head["rotation_indices"])


def generate_keys(params: Params, rotation_indices: Iterable[int] = ()) -> KeySet:
    """Generate a key set: secret, public, relinearization keys, rotation keys for exactly
    ``rotation_indices`` (normalized into [1, slots)), and bootstrapping keys when the
    parameters enable bootstrapping."""
    indices = sorted({int(i) % params.slots for i in rotation_indices} - {0})
    clear_registry()
    cc = context.create(params)
    with wrapped("generate keys", errors.KeyMaterialError):
        pair = cc.KeyGen()
        cc.EvalMultKeyGen(pair.secretKey)
        if indices:
            cc.EvalRotateKeyGen(pair.secretKey, indices)
        if params.bootstrap is not None:
            cc.EvalBootstrapKeyGen(pair.secretKey, params.slots)
        tag = pair.secretKey.GetKeyTag()
        sections = {
            "context": openfhe.Serialize(cc, BINARY),
            "public_key": openfhe.Serialize(pair.publicKey, BINARY),
            "mult_keys": openfhe.SerializeEvalMultKeyString(BINARY, tag),
            "rotation_keys": (
                openfhe.SerializeEvalAutomorphismKeyString(BINARY, tag)
                if indices or params.bootstrap is not None
                else b""
            ),
        }
        secret = openfhe.Serialize(pair.secretKey, BINARY)
    del cc, pair
    return KeySet(params, sections, secret, indices)
