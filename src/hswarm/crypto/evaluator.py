"""The evaluator side: load a :class:`PublicContext`, deserialize untrusted ciphertext
bytes defensively, and evaluate one operation of the catalogue in ``opcodes``.

OpenFHE keeps evaluation keys in a process-global registry, so at most one public
context is loaded per process at a time: constructing an :class:`Evaluator` for another
context clears the registry and loads the new keys, and an evaluator whose context was
displaced reloads before its next use. Two key sets are never mixed.

This module evaluates single operations; running a task's subgraph is ``runtime``'s job.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import openfhe

from hswarm import errors
from hswarm.crypto import codec, context, opcodes, sandbox
from hswarm.crypto.context import native, wrapped
from hswarm.crypto.keys import clear_registry
from hswarm.crypto.params import Params
from hswarm.crypto.public import PublicContext

BINARY = openfhe.BINARY
PLAINTEXT_CACHE = 16  # encoded plaintexts kept per evaluator (each up to a ciphertext's size)


def _parse_ciphertext(data: bytes) -> Any:
    return openfhe.DeserializeCiphertextString(data, BINARY)


class Ciphertext:
    """A deserialized ciphertext bound to the evaluator that loaded it."""

    __slots__ = ("native", "owner")

    def __init__(self, native_ct: Any, owner: int) -> None:
        self.native = native_ct
        self.owner = owner

    @property
    def levels_used(self) -> int:
        """Multiplicative levels consumed (OpenFHE: level + noise scale degree - 1)."""
        return int(self.native.GetLevel() + self.native.GetNoiseScaleDeg() - 1)


class Evaluator:
    """Evaluates operations under one public context."""

    # Which load of which evaluator owns OpenFHE's registry now. A generation, not a
    # digest: a second evaluator of the same context displaces the first too (its
    # context objects are released), and ciphertexts of a displaced load are unusable.
    _loaded: ClassVar[int | None] = None
    _generations: ClassVar[Iterator[int]] = itertools.count(1)

    def __init__(self, public: PublicContext, *, allow_insecure: bool = True, sandbox: bool = True) -> None:
        # The client chose the parameters; an evaluator runs insecure ones (tests, demos)
        # but reports them: see ``params.insecure``. ``sandbox`` trial-parses untrusted
        # ciphertext bytes in a forked child first (see ``sandbox``); turn it off only
        # for bytes this process produced itself.
        self.public = public
        self.sandbox = sandbox
        self.digest = public.digest
        self.params: Params = Params.from_literal(public.params, allow_insecure=allow_insecure)
        self.cc: Any = None
        self._ring = 0
        self._load()

    def _load(self) -> None:
        clear_registry()
        Evaluator._loaded = None
        pc = self.public
        with wrapped("load the public context", errors.ContextError):
            self.cc = openfhe.DeserializeCryptoContextString(pc.context, BINARY)
            context.enable_features(self.cc, self.params)
            openfhe.DeserializeEvalMultKeyString(pc.mult_keys, BINARY)
            if pc.rotation_keys:
                openfhe.DeserializeEvalAutomorphismKeyString(pc.rotation_keys, BINARY)
            self.public_key = openfhe.DeserializePublicKeyString(pc.public_key, BINARY)
        if self.public_key.GetKeyTag() != pc.key_tag:
            raise errors.ContextError(
                "cannot load the public context: its public key does not carry its key tag"
            )
        context.setup_bootstrap(self.cc, self.params)
        self._ring = self.cc.GetRingDimension()
        self._modulus = str(self.cc.GetModulus())
        self._rotations = set(pc.rotation_indices)
        self._plaintexts: dict[tuple[Any, ...], Any] = {}  # LRU: insertion order
        self.generation = next(Evaluator._generations)
        Evaluator._loaded = self.generation
        # Every ciphertext of this context starts with the same bytes: the serialized
        # crypto parameters (the scheme's state, e.g. bootstrapping precomputations, and
        # the key tag follow; they vary with the producing process and are checked after
        # parsing). Comparing them before OpenFHE parses anything rejects foreign and
        # header-damaged bytes: a bit flipped there can crash native code (measured on
        # openfhe 1.6.1).
        reference = self._zeros()
        cut = reference.find(b"lbcrypto::Scheme")
        if cut <= 0:
            raise errors.ContextError("cannot load the public context: unexpected ciphertext layout")
        self._prefix = reference[:cut]

    def _ensure_loaded(self) -> None:
        if Evaluator._loaded != getattr(self, "generation", None):
            self._load()

    # -- bytes in, bytes out ------------------------------------------------------------

    def load(self, data: bytes) -> Ciphertext:
        """Deserialize untrusted bytes into a ciphertext of this context, or raise."""
        self._ensure_loaded()
        if not isinstance(data, (bytes, bytearray)) or len(data) <= len(self._prefix):
            raise errors.DeserializationError("cannot deserialize the ciphertext: empty or truncated")
        if not data.startswith(self._prefix):
            raise errors.ForeignContextError(
                "cannot use the ciphertext: its header does not match this crypto context "
                "(another context, another scheme, or damaged bytes)"
            )
        if self.sandbox:
            sandbox.probe(
                _parse_ciphertext,
                bytes(data),
                extra_memory=(256 << 20) + 8 * len(data),
                timeout_s=10.0 + len(data) / 1e6,
            )
        ct = native(
            "deserialize the ciphertext",
            errors.DeserializationError,
            openfhe.DeserializeCiphertextString,
            bytes(data),
            BINARY,
        )
        self._check_foreign(ct)
        return Ciphertext(ct, self.generation)

    def _check_foreign(self, ct: Any) -> None:
        try:
            tag = ct.GetKeyTag()
            ct_cc = ct.GetCryptoContext()
            same = (
                ct_cc.GetRingDimension() == self._ring
                and str(ct_cc.GetModulus()) == self._modulus
                and ct_cc.getSchemeId() == self.cc.getSchemeId()
                and ct.NumberCiphertextElements() == 2
            )
        except Exception as exc:
            raise errors.DeserializationError(
                f"cannot deserialize the ciphertext: unreadable header ({exc})"
            ) from exc
        if tag != self.public.key_tag or not same:
            raise errors.ForeignContextError(
                "cannot use the ciphertext: it belongs to another crypto context or key set "
                f"(key tag {tag[:12]}…, expected {self.public.key_tag[:12]}…)"
            )

    def dump(self, ct: Ciphertext) -> bytes:
        return native(
            "serialize the ciphertext", errors.EvaluationError, openfhe.Serialize, ct.native, BINARY
        )

    def evaluate(self, op: str, operands: Sequence[bytes], attrs: Mapping[str, Any]) -> bytes:
        """One operation on ciphertext bytes, returning ciphertext bytes."""
        cts = [self.load(data) for data in operands]
        return self.dump(self.apply(op, cts, attrs))

    def encrypt_zeros(self) -> bytes:
        """A fresh encryption of zeros under the public key (fault injection, padding)."""
        self._ensure_loaded()
        return self._zeros()

    def _zeros(self) -> bytes:
        pt = codec.plaintext(
            self.cc, self.params, np.zeros(self.params.slots), context.encryption_level(self.params)
        )
        ct = native("encrypt", errors.EvaluationError, self.cc.Encrypt, self.public_key, pt)
        return self.dump(Ciphertext(ct, self.generation))

    # -- one operation ------------------------------------------------------------------

    def apply(self, op: str, operands: Sequence[Ciphertext], attrs: Mapping[str, Any]) -> Ciphertext:
        opcodes.check(op, self.params.scheme, len(operands), attrs, self.params.slots)
        self._ensure_loaded()
        for ct in operands:
            if not isinstance(ct, Ciphertext) or ct.owner != self.generation:
                raise errors.ForeignContextError(
                    f"cannot evaluate {op}: an operand was loaded under another context, or before "
                    "another evaluator displaced this one; load it again"
                )
        needed = opcodes.rotation_indices(op, self.params.slots, attrs) - self._rotations
        if needed:
            raise errors.KeyMaterialError(
                f"cannot evaluate {op}: no rotation keys for indices {sorted(needed)}; "
                "generate keys with the program's rotation indices"
            )
        if op == "bootstrap" and not self.params.can_bootstrap:
            raise errors.KeyMaterialError(
                "cannot bootstrap: the parameters were created without bootstrapping keys"
            )
        args = [ct.native for ct in operands]
        with wrapped(f"evaluate {op}", errors.EvaluationError):
            result = getattr(self, f"_op_{op}")(*args, **dict(attrs))
        return Ciphertext(result, self.generation)

    def _plain(self, values: Any, like: Any) -> Any:
        level = like.GetLevel() if self.params.scheme == "ckks" else 0
        key = ("plain", level, tuple(values))
        return self._cached(key, lambda: codec.plaintext(self.cc, self.params, values, level))

    def _scalar(self, value: float, like: Any) -> Any:
        if self.params.scheme == "ckks":
            return float(value)
        return self._cached(("scalar", value), lambda: codec.scalar_plaintext(self.cc, self.params, value))

    def _cached(self, key: tuple[Any, ...], encode: Any) -> Any:
        # Encoding a plaintext can cost more than the operation that uses it (measured:
        # 1 ms of encoding for a 0.5 ms BFV multiplication at N=4096), and tasks reuse
        # the same weights, diagonals and coefficients: keep the last few encodings.
        found = self._plaintexts.pop(key, None)
        if found is None:
            found = encode()
            if len(self._plaintexts) >= PLAINTEXT_CACHE:
                self._plaintexts.pop(next(iter(self._plaintexts)))
        self._plaintexts[key] = found
        return found

    def _op_add(self, a: Any, b: Any) -> Any:
        return self.cc.EvalAdd(a, b)

    def _op_sub(self, a: Any, b: Any) -> Any:
        return self.cc.EvalSub(a, b)

    def _op_mul(self, a: Any, b: Any) -> Any:
        return self.cc.EvalMult(a, b)

    def _op_negate(self, a: Any) -> Any:
        return self.cc.EvalNegate(a)

    def _op_add_plain(self, a: Any, values: Any) -> Any:
        return self.cc.EvalAdd(a, self._plain(values, a))

    def _op_sub_plain(self, a: Any, values: Any) -> Any:
        return self.cc.EvalSub(a, self._plain(values, a))

    def _op_mul_plain(self, a: Any, values: Any) -> Any:
        return self.cc.EvalMult(a, self._plain(values, a))

    def _op_add_scalar(self, a: Any, value: float) -> Any:
        return self.cc.EvalAdd(a, self._scalar(value, a))

    def _op_mul_scalar(self, a: Any, value: float) -> Any:
        return self.cc.EvalMult(a, self._scalar(value, a))

    def _op_rotate(self, a: Any, steps: int) -> Any:
        k = opcodes.normal_steps(int(steps), self.params.slots)
        return self.cc.EvalRotate(a, k) if k else a

    def _op_sum_slots(self, a: Any) -> Any:
        acc = a
        for i in range(int(math.log2(self.params.slots))):
            acc = self.cc.EvalAdd(acc, self.cc.EvalRotate(acc, 1 << i))
        return acc

    def _op_dot(self, a: Any, b: Any) -> Any:
        return self._op_sum_slots(self.cc.EvalMult(a, b))

    def _op_dot_plain(self, a: Any, values: Any) -> Any:
        return self._op_sum_slots(self._op_mul_plain(a, values))

    def _op_matvec(self, a: Any, matrix: Sequence[Sequence[float]]) -> Any:
        rows, cols, slots = len(matrix), len(matrix[0]), self.params.slots
        if rows > slots or cols > slots or any(len(r) != cols for r in matrix):
            raise errors.EvaluationError(
                f"cannot evaluate matvec: a {rows}x{cols} matrix must be rectangular and fit {slots} slots"
            )
        acc = None
        for d in opcodes.matvec_diagonals(rows, cols, slots):
            diagonal = [0] * slots
            for r in range(rows):
                c = (r + d) % slots
                if c < cols:
                    diagonal[r] = matrix[r][c]
            if not any(diagonal):
                continue
            rotated = self.cc.EvalRotate(a, d) if d else a
            term = self.cc.EvalMult(rotated, self._plain(diagonal, rotated))
            acc = term if acc is None else self.cc.EvalAdd(acc, term)
        if acc is None:  # an all-zero matrix
            return self.cc.EvalMult(a, self._plain([0] * slots, a))
        return acc

    def _op_poly(self, a: Any, coefficients: Sequence[float]) -> Any:
        if self.params.scheme == "ckks":
            return self.cc.EvalPoly(a, [float(c) for c in coefficients])
        return self._integer_poly(a, [int(c) for c in coefficients])

    def _integer_poly(self, a: Any, coefficients: list[int]) -> Any:
        # BFV/BGV have no EvalPoly in OpenFHE: a power tree, x^k = x^(2^j) * x^(k-2^j),
        # gives x^k at depth ceil(log2 k); then one plaintext factor per coefficient.
        degree = opcodes.poly_degree(coefficients)
        powers: dict[int, Any] = {1: a}
        for k in range(2, degree + 1):
            high = 1 << (k.bit_length() - 1)
            powers[k] = (
                self.cc.EvalSquare(powers[high // 2])
                if high == k
                else self.cc.EvalMult(powers[high], powers[k - high])
            )
        acc = None
        for k in range(1, degree + 1):
            if coefficients[k] == 0:
                continue
            term = self.cc.EvalMult(powers[k], self._scalar(coefficients[k], powers[k]))
            acc = term if acc is None else self.cc.EvalAdd(acc, term)
        if coefficients[0]:
            acc = self.cc.EvalAdd(acc, self._scalar(coefficients[0], acc))
        return acc

    def _op_chebyshev(self, a: Any, coefficients: Sequence[float], lo: float, hi: float) -> Any:
        return self.cc.EvalChebyshevSeries(a, [float(c) for c in coefficients], float(lo), float(hi))

    def _op_bootstrap(self, a: Any) -> Any:
        return self.cc.EvalBootstrap(a)
