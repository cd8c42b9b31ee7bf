"""Key rotation without decryption: OpenFHE proxy re-encryption (PRE).

The holder of the old secret key makes a re-encryption key towards a new public key;
anyone holding that re-encryption key (an untrusted worker included) turns ciphertexts
under the old key into ciphertexts under the new key, learning nothing. Supported for
CKKS, BFV and BGV (OpenFHE 1.6.1, INDCPA mode: secure against passive adversaries only;
the re-encryption key is one-way, old → new). Both key sets must come from equal
parameters. This module does not rotate evaluation keys: generate them for the new key
set as usual.
"""

from __future__ import annotations

import openfhe

from hswarm import errors
from hswarm.crypto.context import native, wrapped
from hswarm.crypto.evaluator import Ciphertext, Evaluator
from hswarm.crypto.keys import KeySet, clear_registry

BINARY = openfhe.BINARY


def reencryption_key(old: KeySet, new_public_key: bytes) -> bytes:
    """A key that moves ciphertexts from ``old`` to the owner of ``new_public_key``."""
    # OpenFHE insists both keys belong to one context object: reload the old secret key
    # and the new public key into a freshly deserialized context.
    clear_registry()
    with wrapped("make a re-encryption key", errors.ReEncryptionError):
        cc = openfhe.DeserializeCryptoContextString(old.public_context().context, BINARY)
        secret = openfhe.DeserializePrivateKeyString(old._secret_bytes, BINARY)
        target = openfhe.DeserializePublicKeyString(new_public_key, BINARY)
        if target.GetCryptoContext().GetRingDimension() != cc.GetRingDimension():
            raise errors.ReEncryptionError(
                "cannot make a re-encryption key: the new key set has other parameters"
            )
        return openfhe.Serialize(cc.ReKeyGen(secret, target), BINARY)


def reencrypt(evaluator: Evaluator, ciphertext: bytes, rekey: bytes) -> bytes:
    """Re-encrypt one ciphertext of the evaluator's context under the new key."""
    ct = evaluator.load(ciphertext)
    key = native(
        "read the re-encryption key",
        errors.ReEncryptionError,
        openfhe.DeserializeEvalKeyString,
        rekey,
        BINARY,
    )
    result = native("re-encrypt", errors.ReEncryptionError, evaluator.cc.ReEncrypt, ct.native, key)
    return evaluator.dump(Ciphertext(result, evaluator.generation))
