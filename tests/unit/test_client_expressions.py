"""The SDK's lazy encrypted vectors and program slicing (no queen needed)."""

from __future__ import annotations

import numpy as np

from hswarm.client.session import EncryptedVector, _slice
from hswarm.program import Program


class _FakeClient:
    pass


def test_slice_keeps_only_what_the_result_needs_and_renumbers() -> None:
    p = Program()
    a, b, c = p.input("a", 4), p.input("b", 4), p.input("c", 4)
    unused = b * b
    result = (a + 1) * c
    q = _slice(p, result)
    assert set(q.inputs) == {"a", "c"}
    assert [n.op for n in q.nodes] == ["input", "input", "add_scalar", "mul"]
    assert q.outputs == {"result": 3} and q.nodes[3].args == (2, 1)
    assert len(p.nodes) == 6 and unused.node.op == "mul"  # the original is untouched


def test_encrypted_vectors_build_expressions_lazily() -> None:
    p = Program()
    client = _FakeClient()
    x = EncryptedVector(client, p.input("x", 3))  # type: ignore[arg-type]
    y = EncryptedVector(client, p.input("y", 3))  # type: ignore[arg-type]
    z = 2 - x * y + np.array([1.0, 2.0, 3.0]) * x
    assert isinstance(z, EncryptedVector) and len(z) == 3
    total = z.rotate(1).sum()
    assert isinstance(total, EncryptedVector) and total.expr.node.replicated
    ops = [n.op for n in p.nodes]
    assert ops == ["input", "input", "mul", "negate", "add_scalar", "mul_plain", "add", "rotate", "sum"]
    assert z.dot(y).expr.node.op == "dot"


def test_awaiting_an_encrypted_vector_gives_it_back() -> None:
    import asyncio

    p = Program()
    x = EncryptedVector(_FakeClient(), p.input("x", 2))  # type: ignore[arg-type]

    async def use() -> EncryptedVector:
        return await x * x

    product = asyncio.run(use())
    assert product.expr.node.op == "mul" and product.expr.node.args == (0, 0)
