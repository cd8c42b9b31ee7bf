"""The expression graph a client builds over encrypted vectors.

A :class:`Program` owns a list of :class:`Node` (pure frozen data, in topological order);
an :class:`Expr` is a handle on one node with operator overloading, so that
``x * x + 3 * y`` reads naturally. Operands may be other expressions, Python scalars or
plaintext vectors (lists or numpy arrays). This module builds and checks shapes only; it
knows nothing of ciphertexts, levels or keys (``compiler`` does) and never imports
``openfhe``.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hswarm import errors
from hswarm.program import functions

SCHEMA = "hswarm.program/1"


@dataclasses.dataclass(frozen=True)
class Node:
    """One vector-level operation. ``length`` is the number of meaningful values;
    ``replicated`` marks a scalar result (sum, dot) that fills every slot."""

    id: int
    op: str
    args: tuple[int, ...]
    attrs: Mapping[str, Any]
    length: int
    replicated: bool = False

    def describe(self) -> str:
        name = self.attrs.get("name") or self.attrs.get("function")
        return f"node #{self.id} ({self.op}{' ' + name if name else ''})"


class Program:
    """A computation over named encrypted input vectors, with named outputs."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.inputs: dict[str, int] = {}
        self.outputs: dict[str, int] = {}

    def input(self, name: str, length: int) -> Expr:
        """Declare an encrypted input vector of ``length`` values."""
        if not isinstance(name, str) or not name:
            raise errors.ProgramError("cannot declare input: the name must be a non-empty string")
        if name in self.inputs:
            raise errors.ProgramError(f"cannot declare input {name!r}: already declared")
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise errors.ProgramError(
                f"cannot declare input {name!r}: length must be a positive integer, got {length!r}"
            )
        expr = self._add("input", (), {"name": name}, length)
        self.inputs[name] = expr.node.id
        return expr

    def output(self, name: str, expr: Expr) -> None:
        """Mark ``expr`` as a result the client will decrypt under ``name``."""
        self._own(expr)
        if name in self.outputs:
            raise errors.ProgramError(f"cannot declare output {name!r}: already declared")
        self.outputs[name] = expr.node.id

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id]

    # -- construction ------------------------------------------------------------------

    def _own(self, expr: Any) -> Expr:
        if not isinstance(expr, Expr):
            raise errors.ProgramError(f"expected an encrypted expression, got {type(expr).__name__}")
        if expr.program is not self:
            raise errors.ProgramError("cannot mix expressions from two programs")
        return expr

    def _add(
        self, op: str, args: tuple[int, ...], attrs: Mapping[str, Any], length: int, replicated: bool = False
    ) -> Expr:
        node = Node(len(self.nodes), op, args, dict(attrs), length, replicated)
        self.nodes.append(node)
        return Expr(self, node)

    # -- wire format --------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "nodes": [
                {
                    "id": n.id,
                    "op": n.op,
                    "args": list(n.args),
                    "attrs": dict(n.attrs),
                    "length": n.length,
                    "replicated": n.replicated,
                }
                for n in self.nodes
            ],
            "inputs": dict(self.inputs),
            "outputs": dict(self.outputs),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Program:
        """Rebuild a program, checking every node as if it were built anew."""
        from hswarm.program import wire  # local: wire imports graph

        return wire.program_from_json(cls, doc)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _vector(value: Any, what: str) -> list[float] | list[int]:
    array = np.asarray(value)
    if array.ndim != 1 or array.size == 0:
        raise errors.ProgramError(f"cannot use {what}: expected a non-empty 1-D vector")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise errors.ProgramError(f"cannot use {what}: expected real numbers")
    if not np.all(np.isfinite(array)):
        raise errors.ProgramError(f"cannot use {what}: contains NaN or infinity")
    return array.tolist()


class Expr:
    """A handle on one node of a :class:`Program`."""

    # Make numpy return NotImplemented from ``array * expr`` so our reflected operators
    # run (instead of numpy broadcasting the expression as an object).
    __array_ufunc__ = None

    def __init__(self, program: Program, node: Node) -> None:
        self.program = program
        self.node = node

    def __repr__(self) -> str:
        return f"Expr({self.node.describe()}, length={self.node.length})"

    @property
    def length(self) -> int:
        return self.node.length

    # -- elementwise --------------------------------------------------------------------

    def _result_length(self, other_length: int, other_replicated: bool, op: str) -> tuple[int, bool]:
        mine = self.node
        if mine.replicated and other_replicated:
            return 1, True
        if mine.replicated:
            return other_length, False
        if other_replicated or other_length == mine.length:
            return mine.length, False
        raise errors.ProgramError(
            f"cannot {op} {mine.describe()}: lengths differ ({mine.length} vs {other_length})"
        )

    def _binary(self, op: str, other: Any, reflected: bool = False) -> Expr:
        p = self.program
        if isinstance(other, Expr):
            p._own(other)
            a, b = (other, self) if reflected else (self, other)
            length, rep = self._result_length(other.length, other.node.replicated, op)
            return p._add(op, (a.node.id, b.node.id), {}, length, rep)
        if _is_scalar(other):
            value = other.item() if isinstance(other, np.generic) else other
            if op == "sub":
                # x - s = x + (-s);  s - x = -x + s
                if reflected:
                    return (-self)._binary("add", value)
                return self._binary("add", -value)
            return p._add(
                f"{op}_scalar", (self.node.id,), {"value": value}, self.length, self.node.replicated
            )
        values = _vector(other, f"a plaintext operand of {op}")
        length, _ = self._result_length(len(values), False, op)
        if op == "sub" and reflected:
            return (-self)._binary("add", values)
        return p._add(f"{op}_plain", (self.node.id,), {"values": values}, length)

    def __add__(self, other: Any) -> Expr:
        return self._binary("add", other)

    def __radd__(self, other: Any) -> Expr:
        return self._binary("add", other, reflected=True)

    def __sub__(self, other: Any) -> Expr:
        return self._binary("sub", other)

    def __rsub__(self, other: Any) -> Expr:
        return self._binary("sub", other, reflected=True)

    def __mul__(self, other: Any) -> Expr:
        return self._binary("mul", other)

    def __rmul__(self, other: Any) -> Expr:
        return self._binary("mul", other, reflected=True)

    def __neg__(self) -> Expr:
        return self.program._add("negate", (self.node.id,), {}, self.length, self.node.replicated)

    def __pow__(self, exponent: int) -> Expr:
        if isinstance(exponent, bool) or not isinstance(exponent, int) or exponent < 1:
            raise errors.ProgramError("cannot raise to a power: the exponent must be an int >= 1")
        return self.poly([0] * exponent + [1])

    # -- slot movement and reductions ---------------------------------------------------

    def rotate(self, steps: int) -> Expr:
        """Slot i takes the value of slot i + steps (mod the slot count of the parameters)."""
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise errors.ProgramError(f"cannot rotate: steps must be an integer, got {steps!r}")
        return self.program._add(
            "rotate", (self.node.id,), {"steps": steps}, self.length, self.node.replicated
        )

    def sum(self) -> Expr:
        """The sum of all values, replicated in every slot."""
        return self.program._add("sum", (self.node.id,), {}, 1, True)

    def dot(self, other: Any) -> Expr:
        """Inner product with another encrypted vector or a plaintext vector."""
        p = self.program
        if isinstance(other, Expr):
            p._own(other)
            self._result_length(other.length, other.node.replicated, "dot")
            return p._add("dot", (self.node.id, other.node.id), {}, 1, True)
        values = _vector(other, "a plaintext operand of dot")
        self._result_length(len(values), False, "dot")
        return p._add("dot_plain", (self.node.id,), {"values": values}, 1, True)

    def __rmatmul__(self, matrix: Any) -> Expr:
        return matvec(matrix, self)

    # -- functions ----------------------------------------------------------------------

    def poly(self, coefficients: Sequence[float]) -> Expr:
        """sum_i coefficients[i] * x**i (power basis, lowest degree first)."""
        coeffs = _vector(coefficients, "polynomial coefficients")
        degree = len(coeffs) - 1
        while degree > 0 and coeffs[degree] == 0:
            degree -= 1
        if degree < 1:
            raise errors.ProgramError("cannot build poly: degree must be at least 1")
        return self.program._add(
            "poly", (self.node.id,), {"coefficients": coeffs[: degree + 1]}, self.length, self.node.replicated
        )

    def chebyshev(self, function: str, lo: float, hi: float, degree: int) -> Expr:
        """A named function approximated by a Chebyshev series on [lo, hi] (CKKS only)."""
        coeffs = functions.chebyshev_coefficients(function, lo, hi, degree)
        attrs = {
            "function": function,
            "lo": float(lo),
            "hi": float(hi),
            "degree": degree,
            "coefficients": coeffs,
        }
        return self.program._add("chebyshev", (self.node.id,), attrs, self.length, self.node.replicated)

    def sigmoid(self, lo: float = -8.0, hi: float = 8.0, degree: int = 59) -> Expr:
        return self.chebyshev("sigmoid", lo, hi, degree)

    def exp(self, lo: float = -4.0, hi: float = 4.0, degree: int = 59) -> Expr:
        return self.chebyshev("exp", lo, hi, degree)

    def inverse(self, lo: float = 1.0, hi: float = 16.0, degree: int = 119) -> Expr:
        """1/x on [lo, hi]; lo must be positive."""
        return self.chebyshev("inverse", lo, hi, degree)

    def bootstrap(self) -> Expr:
        """Refresh levels explicitly (CKKS with bootstrapping keys)."""
        return self.program._add("bootstrap", (self.node.id,), {}, self.length, self.node.replicated)


def matvec(matrix: Any, x: Expr) -> Expr:
    """Plaintext matrix (rows x len(x)) times encrypted vector ``x``."""
    p = x.program
    p._own(x)
    array = np.asarray(matrix)
    if array.ndim != 2 or array.size == 0:
        raise errors.ProgramError("cannot build matvec: expected a non-empty 2-D matrix")
    if array.shape[1] != x.length or x.node.replicated:
        raise errors.ProgramError(
            f"cannot build matvec: matrix has {array.shape[1]} columns, vector has {x.length} values"
        )
    rows = [_vector(row, "a matrix row") for row in array]
    return p._add("matvec", (x.node.id,), {"matrix": rows}, array.shape[0])
