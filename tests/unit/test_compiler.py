"""The compiler: lowering into chunks, level analysis, bootstrap placement, keys, tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hswarm import errors
from hswarm.crypto import opcodes, params
from hswarm.program import Circuit, Program, compile_program, matvec
from hswarm.program.reference import run_reference

CKKS = params.Params.from_literal(
    {"scheme": "ckks", "depth": 4, "slots": 8, "security": "HEStd_NotSet", "ring_dim": 1 << 12},
    allow_insecure=True,
)
CKKS_BOOT = params.Params.from_literal(
    {**CKKS.to_literal(), "bootstrap": {"level_budget": [1, 1]}}, allow_insecure=True
)
BFV = params.Params.from_literal(
    {"scheme": "bfv", "depth": 3, "slots": 8, "security": "HEStd_NotSet", "ring_dim": 1 << 12},
    allow_insecure=True,
)


def chain(n: int, length: int = 8) -> Program:
    p = Program()
    y = p.input("x", length)
    for _ in range(n):
        y = y * y - 1
    p.output("y", y)
    return p


def test_depth_of_each_step_follows_the_op_costs() -> None:
    p = Program()
    x = p.input("x", 8)
    p.output("y", (x * x).rotate(1) * 2.0 + x)
    c = compile_program(p, CKKS)
    depths = {s.op: s.depth for s in c.steps}
    assert depths == {"input": 0, "mul": 1, "rotate": 1, "mul_scalar": 2, "add": 2}
    assert c.depth == 2 and c.bootstraps == 0


def test_bfv_program_too_deep_is_rejected_with_node_and_depths() -> None:
    with pytest.raises(errors.DepthExceededError) as info:
        compile_program(chain(5), BFV)
    message = str(info.value)
    assert "node #" in message and "(mul)" in message
    assert "needs multiplicative depth 4" in message and "give 3" in message
    assert "the whole program needs 5" in message


def test_ckks_without_bootstrapping_rejects_and_suggests_it() -> None:
    with pytest.raises(errors.DepthExceededError, match="bootstrapping"):
        compile_program(chain(5), CKKS)


@pytest.mark.parametrize("n", [1, 4, 5, 8, 9, 13])
def test_chain_gets_the_fewest_possible_bootstraps(n: int) -> None:
    c = compile_program(chain(n), CKKS_BOOT)
    assert c.bootstraps == math.ceil(n / CKKS_BOOT.depth) - 1
    assert all(s.depth <= CKKS_BOOT.depth for s in c.steps)


def test_shared_operand_is_bootstrapped_once_and_shallow_paths_never() -> None:
    p = Program()
    x, z = p.input("x", 8), p.input("z", 8)
    y = x
    for _ in range(4):
        y = y * y
    p.output("a", y * z)
    p.output("b", y * y)
    p.output("shallow", z + 1)
    c = compile_program(p, CKKS_BOOT)
    assert c.bootstraps == 1
    (boot,) = [s for s in c.steps if s.op == "bootstrap"]
    shallow = c.outputs["shallow"].chunks[0]
    task_of = {sid: t for t in c.tasks for sid in t.steps}
    assert boot.id not in task_of[shallow].steps and task_of[shallow].kind == "compute"


def test_bootstrap_is_its_own_task_and_tasks_are_in_dependency_order() -> None:
    c = compile_program(chain(9, length=20), CKKS_BOOT)  # 3 chunks, 2 bootstraps each
    boots = [t for t in c.tasks if t.kind == "bootstrap"]
    assert len(boots) == 6 and all(len(t.steps) == 1 for t in boots)
    produced: set[int] = {s for t in c.inputs.values() for s in t.chunks}
    for task in c.tasks:
        assert set(task.inputs) <= produced, "a task runs before its inputs exist"
        assert all(d < task.id for d in task.deps)
        produced |= set(task.outputs) | set(task.steps)
    # chunks are independent: the first stage has one compute task per chunk
    assert sum(1 for t in c.tasks if t.kind == "compute" and not t.deps) == 3


def test_every_live_step_is_in_exactly_one_task() -> None:
    p = Program()
    x, y = p.input("x", 20), p.input("y", 20)
    p.output("o", (x * y + 1).sum() * x)
    c = compile_program(p, CKKS)
    members = [sid for t in c.tasks for sid in t.steps]
    assert len(members) == len(set(members))
    live = {s.id for s in c.steps if s.op != "input"}
    assert set(members) == live


def test_rotation_indices_are_exactly_those_needed() -> None:
    p = Program()
    x = p.input("x", 8)
    p.output("r", x.rotate(3) + x.rotate(-1) + x.rotate(8))
    assert compile_program(p, CKKS).rotation_indices == (3, 7)
    q = Program()
    v = q.input("v", 8)
    q.output("s", v.sum())
    assert compile_program(q, CKKS).rotation_indices == (1, 2, 4)
    m = Program()
    w = m.input("w", 3)
    m.output("m", matvec([[1, 2, 3], [4, 5, 6]], w))
    assert compile_program(m, CKKS).rotation_indices == (1, 2, 7)  # diagonals -1, 1, 2


def test_sum_masks_dirty_padding_only() -> None:
    p = Program()
    x = p.input("x", 5)
    p.output("clean", x.sum())
    p.output("dirty", (x + 1).sum())
    c = compile_program(p, CKKS)
    masks = [s for s in c.steps if s.op == "mul_plain"]
    assert len(masks) == 1 and masks[0].attrs["values"] == [1] * 5
    got = run_reference(c, {"x": np.arange(5.0)})
    assert got["clean"][0] == 10.0 and got["dirty"][0] == 15.0


def test_scheme_support_is_checked_at_compile_time() -> None:
    p = Program()
    x = p.input("x", 8)
    p.output("s", x.sigmoid())
    with pytest.raises(errors.UnsupportedOperationError, match="not supported by BFV"):
        compile_program(p, BFV)
    q = Program()
    y = q.input("y", 8)
    q.output("h", y * 0.5)
    with pytest.raises(errors.ProgramError, match="integer"):
        compile_program(q, BFV)
    r = Program()
    z = r.input("z", 8)
    r.output("b", z.bootstrap())
    with pytest.raises(errors.ProgramError, match="no bootstrapping"):
        compile_program(r, CKKS)


def test_rotate_of_a_multi_chunk_vector_is_refused() -> None:
    p = Program()
    x = p.input("x", 9)
    p.output("r", x.rotate(1))
    with pytest.raises(errors.ProgramError, match="at most 8 values"):
        compile_program(p, CKKS)


def test_circuit_wire_round_trip_and_schema_check() -> None:
    c = compile_program(chain(9, length=12), CKKS_BOOT)
    doc = c.to_json()
    assert Circuit.from_json(doc) == c
    with pytest.raises(errors.SchemaVersionError):
        Circuit.from_json({**doc, "schema": "hswarm.circuit/99"})
    bad = {**doc, "steps": [*doc["steps"][:3], [3, "mul", [7, 0], {}, 1, 0], *doc["steps"][4:]]}
    with pytest.raises(errors.ProgramError):
        Circuit.from_json(bad)


def test_reference_matches_numpy_semantics() -> None:
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=20), rng.normal(size=20)
    small = rng.normal(size=8)
    m = rng.normal(size=(3, 8))
    p = Program()
    ex, ey, es = p.input("x", 20), p.input("y", 20), p.input("s", 8)
    p.output("a", ex * ey + 3 * ex - 0.5)
    p.output("d", ex.dot(ey))
    p.output("dp", ex.dot(list(y)))
    p.output("sum", (ex * 2).sum())
    p.output("roll", es.rotate(3))
    p.output("mv", matvec(m, es))
    p.output("poly", es.poly([1, -2, 0.5]))
    got = run_reference(compile_program(p, CKKS), {"x": x, "y": y, "s": small})
    np.testing.assert_allclose(got["a"], x * y + 3 * x - 0.5)
    np.testing.assert_allclose(got["d"], [x @ y])
    np.testing.assert_allclose(got["dp"], [x @ y])
    np.testing.assert_allclose(got["sum"], [2 * x.sum()])
    np.testing.assert_allclose(got["roll"], np.roll(small, -3))
    np.testing.assert_allclose(got["mv"], m @ small)
    np.testing.assert_allclose(got["poly"], 1 - 2 * small + 0.5 * small**2)


# -- properties -------------------------------------------------------------------------

UNARY = ["square", "mul_scalar", "add_scalar", "negate", "rotate", "poly"]


@settings(max_examples=60, deadline=None)
@given(
    recipe=st.lists(
        st.tuples(st.sampled_from([*UNARY, "mul_other", "add_other"]), st.integers(-3, 3)),
        min_size=1,
        max_size=25,
    ),
    depth=st.integers(1, 6),
    length=st.integers(1, 24),
)
def test_bootstrap_insertion_keeps_every_step_within_depth(recipe, depth: int, length: int) -> None:  # type: ignore[no-untyped-def]
    prm = params.Params.from_literal({**CKKS_BOOT.to_literal(), "depth": depth}, allow_insecure=True)
    p = Program()
    x, other = p.input("x", min(length, 8)), p.input("o", min(length, 8))
    y = x
    for op, k in recipe:
        y = {
            "square": lambda v: v * v,
            "mul_scalar": lambda v, k=k: v * (k or 1),
            "add_scalar": lambda v, k=k: v + k,
            "negate": lambda v: -v,
            "rotate": lambda v, k=k: v.rotate(k),
            "poly": lambda v, k=k: v.poly([k, 1, 1]),
            "mul_other": lambda v: v * other,
            "add_other": lambda v: v + other,
        }[op](y)
    p.output("y", y)
    if depth < 2 and any(op == "poly" for op, _ in recipe):
        # a degree-2 polynomial needs 2 levels at once: no bootstrap placement can help
        with pytest.raises(errors.DepthExceededError, match="more levels than a bootstrap restores"):
            compile_program(p, prm)
        return
    c = compile_program(p, prm)
    for s in c.steps:
        assert s.depth <= depth
        if s.op != "input":
            cost = opcodes.depth_cost(s.op, "ckks", s.attrs)
            assert s.depth == (0 if s.op == "bootstrap" else max(c.steps[a].depth for a in s.args) + cost)
    for t in c.tasks:
        if t.kind == "bootstrap":
            assert len(t.steps) == 1


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(-300, 300), min_size=1, max_size=40),
    a=st.integers(-5, 5),
    b=st.integers(-5, 5),
)
def test_bfv_reference_is_exact_mod_t(values: list[int], a: int, b: int) -> None:
    p = Program()
    x = p.input("x", len(values))
    p.output("y", x * x * a + b)
    p.output("s", (x + b).sum())
    c = compile_program(p, BFV)
    got = run_reference(c, {"x": values})
    t = BFV.plaintext_modulus
    v = np.array(values, dtype=object)

    def centered(n: int) -> int:
        n %= t
        return n - t if n > (t - 1) // 2 else n

    assert list(got["y"]) == [centered(int(e)) for e in v * v * a + b]
    assert list(got["s"]) == [centered(int(sum(v + b)))]
