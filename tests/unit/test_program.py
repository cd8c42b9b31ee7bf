"""The expression graph: operator overloading, shape checks and the JSON wire form."""

from __future__ import annotations

import numpy as np
import pytest

from hswarm import errors
from hswarm.program import Program, matvec
from hswarm.program.graph import SCHEMA


def ops(p: Program) -> list[str]:
    return [n.op for n in p.nodes]


def test_natural_expression_builds_the_expected_nodes() -> None:
    p = Program()
    x, y = p.input("x", 4), p.input("y", 4)
    p.output("z", x * x + 3 * y)
    assert ops(p) == ["input", "input", "mul", "mul_scalar", "add"]
    assert p.nodes[3].attrs == {"value": 3}


def test_scalar_subtraction_both_ways() -> None:
    p = Program()
    x = p.input("x", 4)
    a = x - 2
    b = 2 - x
    assert a.node.op == "add_scalar" and a.node.attrs["value"] == -2
    assert ops(p)[-2:] == ["negate", "add_scalar"] and b.node.attrs["value"] == 2


def test_plaintext_vectors_on_either_side_including_numpy() -> None:
    p = Program()
    x = p.input("x", 3)
    left = np.array([1.0, 2.0, 3.0]) * x
    right = x + [1, 2, 3]
    rsub = [1, 2, 3] - x
    assert left.node.op == "mul_plain" and left.node.attrs["values"] == [1.0, 2.0, 3.0]
    assert right.node.op == "add_plain"
    assert rsub.node.op == "add_plain" and p.nodes[rsub.node.args[0]].op == "negate"


def test_reductions_are_replicated_and_broadcast() -> None:
    p = Program()
    x = p.input("x", 10)
    mean = x.sum() * 0.1
    centered = x - mean
    assert mean.node.replicated and mean.length == 1
    assert centered.length == 10 and not centered.node.replicated


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda p, x, y: x + y, "lengths differ"),
        (lambda p, x, y: x * [1, 2], "lengths differ"),
        (lambda p, x, y: x.dot(y), "lengths differ"),
        (lambda p, x, y: x * "3", "1-D vector"),
        (lambda p, x, y: x * [1.0, float("nan"), 2.0, 3.0], "NaN"),
        (lambda p, x, y: x.rotate(1.5), "integer"),
        (lambda p, x, y: x.poly([3.0]), "degree"),
        (lambda p, x, y: x**0, "exponent"),
        (lambda p, x, y: matvec([[1, 2]], x), "columns"),
        (lambda p, x, y: x.chebyshev("cosh", -1, 1, 5), "unknown function"),
        (lambda p, x, y: x.inverse(lo=-1.0, hi=1.0), "positive"),
        (lambda p, x, y: x + Program().input("z", 4), "two programs"),
        (lambda p, x, y: p.input("x", 4), "already declared"),
        (lambda p, x, y: p.input("w", 0), "positive integer"),
    ],
)
def test_bad_expressions_raise_program_errors(build, fragment: str) -> None:  # type: ignore[no-untyped-def]
    p = Program()
    x, y = p.input("x", 4), p.input("y", 5)
    with pytest.raises(errors.ProgramError, match=fragment):
        build(p, x, y)


def _sample() -> Program:
    p = Program()
    x, y = p.input("x", 6), p.input("y", 6)
    z = (x * x + 3 * y - 1).rotate(2)
    w = matvec(np.arange(12).reshape(2, 6), x)
    p.output("z", z)
    p.output("w", w.dot([1, 2]) + x.dot(y) + (2 * x).sum())
    p.output("s", y.sigmoid(lo=-4, hi=4, degree=13).poly([0, 1, 0.5]).bootstrap())
    return p


def test_wire_round_trip_is_exact() -> None:
    p = _sample()
    doc = p.to_json()
    again = Program.from_json(doc)
    assert again.to_json() == doc
    assert doc["schema"] == SCHEMA


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda d: d.update(schema="hswarm.program/0"), errors.SchemaVersionError),
        (lambda d: d.pop("schema"), errors.SchemaVersionError),
        (lambda d: d["nodes"][2].update(op="frobnicate"), errors.UnsupportedOperationError),
        (lambda d: d["nodes"][2].update(args=[5, 0]), errors.ProgramError),
        (lambda d: d["nodes"][2].update(length=99), errors.ProgramError),
        (lambda d: d["nodes"][0].pop("attrs"), errors.ProgramError),
        (lambda d: d.update(nodes="nope"), errors.ProgramError),
        (lambda d: d["outputs"].update(z=999), errors.ProgramError),
        (lambda d: d["inputs"].update(ghost=0), errors.ProgramError),
    ],
)
def test_malformed_wire_documents_are_rejected(mutate, error: type[Exception]) -> None:  # type: ignore[no-untyped-def]
    doc = _sample().to_json()
    mutate(doc)
    with pytest.raises(error):
        Program.from_json(doc)
