"""The catalogue of ciphertext operations: names, operands, attributes, depth cost and the
rotation keys each needs.

It is the contract between the pure program compiler (which plans levels and keys
from it) and the evaluator (which implements every entry with OpenFHE). It is pure: it
must not import ``openfhe``. The depth costs are those measured on openfhe 1.6.1 and a
contract test checks them against real ciphertexts.

Slot semantics: a ciphertext holds ``slots`` values; ``rotate(k)`` moves slot ``i + k``
(mod ``slots``) to slot ``i``, as ``numpy.roll(v, -k)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from hswarm import errors


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One ciphertext operation: how many ciphertext operands, which attributes, where."""

    name: str
    operands: int
    attrs: frozenset[str]
    schemes: frozenset[str]
    summary: str


ALL = frozenset({"ckks", "bfv", "bgv"})
CKKS = frozenset({"ckks"})

SPECS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        OpSpec("add", 2, frozenset(), ALL, "a + b"),
        OpSpec("sub", 2, frozenset(), ALL, "a - b"),
        OpSpec("mul", 2, frozenset(), ALL, "a * b, relinearized"),
        OpSpec("negate", 1, frozenset(), ALL, "-a"),
        OpSpec("add_plain", 1, frozenset({"values"}), ALL, "a + plaintext vector"),
        OpSpec("sub_plain", 1, frozenset({"values"}), ALL, "a - plaintext vector"),
        OpSpec("mul_plain", 1, frozenset({"values"}), ALL, "a * plaintext vector"),
        OpSpec("add_scalar", 1, frozenset({"value"}), ALL, "a + scalar"),
        OpSpec("mul_scalar", 1, frozenset({"value"}), ALL, "a * scalar"),
        OpSpec("rotate", 1, frozenset({"steps"}), ALL, "slot i <- slot i+steps"),
        OpSpec("sum_slots", 1, frozenset(), ALL, "every slot <- sum of all slots"),
        OpSpec("dot", 2, frozenset(), ALL, "every slot <- sum(a * b)"),
        OpSpec("dot_plain", 1, frozenset({"values"}), ALL, "every slot <- sum(a * plaintext)"),
        OpSpec("matvec", 1, frozenset({"matrix"}), ALL, "plaintext matrix x a (diagonals)"),
        OpSpec("poly", 1, frozenset({"coefficients"}), ALL, "sum c_i a^i (power basis)"),
        OpSpec("chebyshev", 1, frozenset({"coefficients", "lo", "hi"}), CKKS, "Chebyshev series on [lo, hi]"),
        OpSpec("bootstrap", 1, frozenset(), CKKS, "refresh the levels of a"),
    )
}

# Depth of OpenFHE's Chebyshev series on [-1, 1] by degree (FUNCTION_EVALUATION.md; measured).
_CHEBYSHEV_DEPTH = ((5, 3), (13, 4), (27, 5), (59, 6), (119, 7), (247, 8), (495, 9), (1007, 10), (2031, 11))


_CKKS_SMALL_POLY_DEPTH = {1: 1, 2: 2, 3: 3, 4: 3, 5: 3}


def spec(op: str) -> OpSpec:
    try:
        return SPECS[op]
    except KeyError:
        raise errors.UnsupportedOperationError(
            f"cannot evaluate: unknown operation {op!r}; known: {', '.join(SPECS)}"
        ) from None


def check(op: str, scheme: str, operands: int, attrs: Mapping[str, Any], slots: int | None = None) -> OpSpec:
    """Raise UnsupportedOperationError unless the op exists for ``scheme`` with this shape
    and its attribute values are well formed (and fit ``slots``, when given)."""
    s = spec(op)
    if not isinstance(attrs, Mapping):
        raise errors.UnsupportedOperationError(f"cannot evaluate {op}: attributes must be a mapping")
    if scheme not in s.schemes:
        raise errors.UnsupportedOperationError(
            f"cannot evaluate {op}: not supported by {scheme.upper()} "
            f"(only {', '.join(sorted(x.upper() for x in s.schemes))})"
        )
    if operands != s.operands:
        raise errors.UnsupportedOperationError(
            f"cannot evaluate {op}: needs {s.operands} ciphertext operand(s), got {operands}"
        )
    missing = s.attrs - set(attrs)
    extra = set(attrs) - s.attrs
    if missing or extra:
        raise errors.UnsupportedOperationError(
            f"cannot evaluate {op}: attributes must be {sorted(s.attrs)}, got {sorted(attrs)}"
        )
    for name in s.attrs:
        problem = _ATTR_CHECKS[name](attrs[name], scheme != "ckks", slots)
        if problem:
            raise errors.UnsupportedOperationError(f"cannot evaluate {op}: attribute {name} {problem}")
    if op == "chebyshev" and not float(attrs["lo"]) < float(attrs["hi"]):
        raise errors.UnsupportedOperationError("cannot evaluate chebyshev: attribute lo must be below hi")
    return s


def _number_problem(value: Any, exact: bool) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must hold numbers, got {type(value).__name__}"
    if not math.isfinite(value):
        return "must hold finite numbers"
    if exact and not float(value).is_integer():
        return "must hold integers for BFV/BGV"
    return None


def _numbers_problem(values: Any, exact: bool, limit: int | None, what: str = "values") -> str | None:
    if not isinstance(values, (list, tuple)) or not values:
        return f"must be a non-empty list of {what}"
    if limit is not None and len(values) > limit:
        return f"has {len(values)} entries, more than {limit}"
    # Vectorized: a per-element Python check cost ~0.5 ms per 1024-value plaintext, more
    # than the homomorphic addition it guards (benchmarks/ops.py).
    try:
        array = np.asarray(values) if not any(type(v) is bool for v in values) else None
    except (ValueError, TypeError):  # ragged nesting
        array = None
    if array is None or array.ndim != 1 or array.dtype.kind not in "iuf":
        bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))), None)
        if bad is None:
            return "must hold numbers that fit in 64 bits"
        return f"must hold numbers, got {type(bad).__name__}"
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            return "must hold finite numbers"
        if exact and not np.all(array == np.round(array)):
            return "must hold integers for BFV/BGV"
    return None


def _check_matrix(matrix: Any, exact: bool, slots: int | None) -> str | None:
    if not isinstance(matrix, (list, tuple)) or not matrix:
        return "must be a non-empty list of rows"
    if slots is not None and len(matrix) > slots:
        return f"has {len(matrix)} rows, more than {slots} slots"
    width = len(matrix[0]) if isinstance(matrix[0], (list, tuple)) else -1
    for row in matrix:
        if not isinstance(row, (list, tuple)) or len(row) != width:
            return "must be a rectangular list of rows"
        problem = _numbers_problem(row, exact, slots, "numbers")
        if problem:
            return problem
    return None


_ATTR_CHECKS: dict[str, Any] = {
    "values": lambda v, exact, slots: _numbers_problem(v, exact, slots),
    "value": lambda v, exact, slots: _number_problem(v, exact),
    "steps": lambda v, exact, slots: (
        None if isinstance(v, int) and not isinstance(v, bool) else "must be an integer"
    ),
    "matrix": _check_matrix,
    "coefficients": lambda v, exact, slots: _numbers_problem(v, exact, 2032, "coefficients"),
    "lo": lambda v, exact, slots: _number_problem(v, False),
    "hi": lambda v, exact, slots: _number_problem(v, False),
}


def poly_degree(coefficients: list[Any]) -> int:
    degree = len(coefficients) - 1
    while degree > 0 and coefficients[degree] == 0:
        degree -= 1
    return degree


def chebyshev_depth(degree: int) -> int:
    for top, depth in _CHEBYSHEV_DEPTH:
        if degree <= top:
            return depth
    raise errors.ProgramError(f"cannot evaluate chebyshev: degree {degree} exceeds 2031")


def poly_depth(scheme: str, degree: int) -> int:
    """Levels consumed by ``poly`` of this degree (power basis)."""
    if degree == 0:
        return 0 if scheme == "bfv" else 1
    if scheme == "ckks":
        # OpenFHE's EvalPoly, measured: linear method up to degree 5, then
        # Paterson-Stockmeyer with the same depth as a Chebyshev series.
        return _CKKS_SMALL_POLY_DEPTH[degree] if degree <= 5 else chebyshev_depth(degree)
    # BFV/BGV: hswarm's own power tree; x^k needs ceil(log2 k) ct x ct levels, and BGV
    # spends one more level on the plaintext coefficients.
    powers = math.ceil(math.log2(degree)) if degree > 1 else 0
    return powers + (1 if scheme == "bgv" else 0)


def depth_cost(op: str, scheme: str, attrs: Mapping[str, Any]) -> int:
    """Multiplicative levels the op consumes on top of its deepest operand."""
    if op in (
        "add",
        "sub",
        "negate",
        "add_plain",
        "sub_plain",
        "add_scalar",
        "rotate",
        "sum_slots",
        "bootstrap",
    ):
        return 0
    if op in ("mul", "dot"):
        return 1
    if op in ("mul_plain", "mul_scalar", "dot_plain", "matvec"):
        # CKKS and BGV (FLEXIBLEAUTO) rescale after any multiplication, a plaintext or
        # scalar factor included (even 1.0); in BFV a plaintext factor costs no level.
        return 0 if scheme == "bfv" else 1
    if op == "poly":
        return poly_depth(scheme, poly_degree(list(attrs["coefficients"])))
    if op == "chebyshev":
        # OpenFHE maps [lo, hi] onto [-1, 1] with a scalar multiplication first (measured:
        # one more level unless the interval is already [-1, 1]).
        linear_map = 0 if (float(attrs["lo"]), float(attrs["hi"])) == (-1.0, 1.0) else 1
        return chebyshev_depth(len(attrs["coefficients"]) - 1) + linear_map
    spec(op)  # raises for an unknown op
    raise AssertionError(f"no depth cost defined for {op}")


def normal_steps(steps: int, slots: int) -> int:
    """The rotation index in [0, slots) equivalent to ``steps``."""
    return steps % slots


def matvec_diagonals(rows: int, cols: int, slots: int) -> list[int]:
    """Rotation amounts d (mod slots) whose generalized diagonal of a rows x cols matrix
    is not identically outside the matrix: d = col - row for some row, col."""
    return sorted({d % slots for d in range(-(rows - 1), cols)})


def rotation_indices(op: str, slots: int, attrs: Mapping[str, Any]) -> set[int]:
    """Rotation key indices the op needs, each in [1, slots)."""
    if op == "rotate":
        k = normal_steps(int(attrs["steps"]), slots)
        return {k} if k else set()
    if op in ("sum_slots", "dot", "dot_plain"):
        return {1 << i for i in range(int(math.log2(slots)))}
    if op == "matvec":
        matrix = attrs["matrix"]
        return {d for d in matvec_diagonals(len(matrix), len(matrix[0]), slots) if d}
    return set()
