"""Every operation of the catalogue on real OpenFHE ciphertexts, for CKKS, BFV and BGV,
against numpy: CKKS within the parameters' tolerance, BFV/BGV exactly (mod t). Also the
contract that ``opcodes.depth_cost`` predicts the levels OpenFHE really consumes."""

from __future__ import annotations

import numpy as np
import pytest

from hswarm import errors
from hswarm.crypto import evaluator, keys, opcodes, params
from hswarm.program import functions

SCHEMES = ["insecure-ckks", "insecure-bfv", "insecure-bgv"]
MATRIX = [[1, -2, 3, 0, 1], [0, 1, 0, 2, -1], [2, 2, 2, 2, 2]]
ROTATIONS = sorted(
    {1, 3, 1021}
    | opcodes.rotation_indices("sum_slots", 1024, {})
    | opcodes.rotation_indices("matvec", 1024, {"matrix": MATRIX})
)


class Setup:
    def __init__(self, preset: str) -> None:
        self.params = params.preset(preset, allow_insecure=True)
        self.keys = keys.generate_keys(self.params, ROTATIONS)
        self.ev = evaluator.Evaluator(self.keys.public_context())
        self.slots = self.params.slots
        self.ring = self.ev.cc.GetRingDimension()
        rng = np.random.default_rng(11)
        if self.params.exact:
            self.x = rng.integers(-50, 50, self.slots)
            self.y = rng.integers(-50, 50, self.slots)
        else:
            self.x = rng.uniform(-1, 1, self.slots)
            self.y = rng.uniform(-1, 1, self.slots)
        self.cx = self.ev.load(self.keys.encrypt(self.x)[0])
        self.cy = self.ev.load(self.keys.encrypt(self.y)[0])

    def expect(self, got: np.ndarray, want: np.ndarray, bootstrapped: bool = False) -> None:
        want = np.asarray(want)
        if self.params.exact:
            t = self.params.plaintext_modulus
            centered = np.mod(want.astype(object), t)
            centered = np.where(centered > (t - 1) // 2, centered - t, centered).astype(np.int64)
            np.testing.assert_array_equal(got, centered)
        else:
            magnitude = float(np.max(np.abs(want))) if want.size else 1.0
            tol = self.params.tolerance(self.ring, magnitude, bootstrapped)
            np.testing.assert_allclose(got, want, rtol=0, atol=tol)

    def run(self, op: str, operands: list, attrs: dict) -> np.ndarray:  # type: ignore[type-arg]
        out = self.ev.apply(op, operands, attrs)
        return self.keys.decrypt([self.ev.dump(out)])


@pytest.fixture(scope="module", params=SCHEMES)
def setup(request: pytest.FixtureRequest) -> Setup:
    return Setup(request.param)


def _matvec(m: list[list[int]], x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    out[: len(m)] = np.array(m) @ x[: len(m[0])]
    return out


CASES = {
    "add": (lambda s: ([s.cx, s.cy], {}), lambda s: s.x + s.y),
    "sub": (lambda s: ([s.cx, s.cy], {}), lambda s: s.x - s.y),
    "mul": (lambda s: ([s.cx, s.cy], {}), lambda s: s.x * s.y),
    "negate": (lambda s: ([s.cx], {}), lambda s: -s.x),
    "add_plain": (
        lambda s: ([s.cx], {"values": [3, 1, 4]}),
        lambda s: s.x + np.pad([3, 1, 4], (0, s.slots - 3)),
    ),
    "sub_plain": (
        lambda s: ([s.cx], {"values": [3, 1, 4]}),
        lambda s: s.x - np.pad([3, 1, 4], (0, s.slots - 3)),
    ),
    "mul_plain": (
        lambda s: ([s.cx], {"values": [3, 1, 4]}),
        lambda s: s.x * np.pad([3, 1, 4], (0, s.slots - 3)),
    ),
    "add_scalar": (lambda s: ([s.cx], {"value": 7}), lambda s: s.x + 7),
    "mul_scalar": (lambda s: ([s.cx], {"value": -3}), lambda s: s.x * -3),
    "rotate": (lambda s: ([s.cx], {"steps": 3}), lambda s: np.roll(s.x, -3)),
    "rotate_negative": (lambda s: ([s.cx], {"steps": -3}), lambda s: np.roll(s.x, 3)),
    "sum_slots": (lambda s: ([s.cx], {}), lambda s: np.full(s.slots, s.x.sum())),
    "dot": (lambda s: ([s.cx, s.cy], {}), lambda s: np.full(s.slots, s.x @ s.y)),
    "dot_plain": (lambda s: ([s.cx], {"values": [2, -1]}), lambda s: np.full(s.slots, 2 * s.x[0] - s.x[1])),
    "matvec": (lambda s: ([s.cx], {"matrix": MATRIX}), lambda s: _matvec(MATRIX, s.x)),
    "poly": (lambda s: ([s.cx], {"coefficients": [1, -2, 0, 3]}), lambda s: 1 - 2 * s.x + 3 * s.x**3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_op_matches_numpy(setup: Setup, case: str) -> None:
    make, want = CASES[case]
    operands, attrs = make(setup)
    op = "rotate" if case.startswith("rotate") else case
    setup.expect(setup.run(op, operands, attrs), want(setup))


def test_ops_compose_across_levels(setup: Setup) -> None:
    # mul -> mul_plain -> add with a fresh ciphertext: operands at different levels
    a = setup.ev.apply("mul", [setup.cx, setup.cy], {})
    b = setup.ev.apply("mul_plain", [a], {"values": [2] * 4})
    c = setup.ev.apply("add", [b, setup.cx], {})
    setup.expect(
        setup.keys.decrypt([setup.ev.dump(c)]),
        np.pad(2 * (setup.x * setup.y)[:4], (0, setup.slots - 4)) + setup.x,
    )


def test_bytes_in_bytes_out_equals_in_memory(setup: Setup) -> None:
    data = setup.ev.evaluate("mul", [setup.ev.dump(setup.cx), setup.ev.dump(setup.cy)], {})
    assert data == setup.ev.dump(setup.ev.apply("mul", [setup.cx, setup.cy], {}))


@pytest.mark.parametrize("function", ["sigmoid", "exp", "tanh"])
@pytest.mark.parametrize(("lo", "hi", "degree"), [(-1.0, 1.0, 13), (-4.0, 4.0, 27)])
def test_chebyshev_series_on_ckks(function: str, lo: float, hi: float, degree: int) -> None:
    s = Setup("insecure-ckks")
    coefficients = functions.chebyshev_coefficients(function, lo, hi, degree)
    attrs = {"coefficients": coefficients, "lo": lo, "hi": hi}
    x = s.x * hi
    cx = s.ev.load(s.keys.encrypt(x)[0])
    out = s.ev.apply("chebyshev", [cx], attrs)
    series = np.array([functions.chebyshev_value(coefficients, lo, hi, v) for v in x])
    s.expect(s.keys.decrypt([s.ev.dump(out)]), series)
    # and the series approximates the function itself
    exact = np.array([functions.evaluate(function, v) for v in x])
    assert np.max(np.abs(series - exact)) < (1e-3 if degree == 13 else 1e-4) * max(1.0, np.max(np.abs(exact)))
    assert out.levels_used - cx.levels_used == opcodes.depth_cost("chebyshev", "ckks", attrs)


def test_openfhe_chebyshev_coefficients_agree_with_ours() -> None:
    import math

    import openfhe

    ours = functions.chebyshev_coefficients("sigmoid", -6.0, 6.0, 59)
    theirs = openfhe.EvalChebyshevCoefficients(lambda v: 1 / (1 + math.exp(-v)), -6.0, 6.0, 59)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


DEPTH_CASES = [
    ("mul", lambda s: [s.cx, s.cy], {}),
    ("mul_plain", lambda s: [s.cx], {"values": [1, 2]}),
    ("mul_scalar", lambda s: [s.cx], {"value": 1}),
    ("add", lambda s: [s.cx, s.cy], {}),
    ("rotate", lambda s: [s.cx], {"steps": 1}),
    ("sum_slots", lambda s: [s.cx], {}),
    ("dot", lambda s: [s.cx, s.cy], {}),
    ("dot_plain", lambda s: [s.cx], {"values": [1, 2]}),
    ("matvec", lambda s: [s.cx], {"matrix": MATRIX}),
    *[("poly", lambda s: [s.cx], {"coefficients": [1] * (d + 1)}) for d in (1, 2, 3, 4, 5)],
]


@pytest.mark.parametrize(
    ("op", "make", "attrs"), DEPTH_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(DEPTH_CASES)]
)
def test_depth_model_matches_openfhe(setup: Setup, op: str, make, attrs: dict) -> None:  # type: ignore[no-untyped-def,type-arg]
    if setup.params.scheme == "bfv":
        pytest.skip("BFV has no levels to observe (GetLevel stays 0); its depth is a noise budget")
    operands = make(setup)
    for start in (0, 1):  # a fresh operand, and one already one level down
        if start:
            operands = [
                setup.ev.apply(
                    "mul_scalar" if setup.params.scheme == "ckks" else "mul_plain",
                    [c],
                    {"value": 1} if setup.params.scheme == "ckks" else {"values": [1] * setup.slots},
                )
                for c in operands
            ]
        used = max(c.levels_used for c in operands)
        if used + opcodes.depth_cost(op, setup.params.scheme, attrs) > setup.params.depth:
            continue  # beyond these parameters: the compiler would refuse it
        out = setup.ev.apply(op, operands, attrs)
        assert out.levels_used - used == opcodes.depth_cost(op, setup.params.scheme, attrs), (op, start)


def test_ckks_poly_depth_model_for_higher_degrees() -> None:
    s = Setup("insecure-ckks")
    deep = params.preset("insecure-ckks", allow_insecure=True, depth=12)
    s.keys = keys.generate_keys(deep, [])
    s.ev = evaluator.Evaluator(s.keys.public_context())
    cx = s.ev.load(s.keys.encrypt(s.x)[0])
    for degree in (6, 9, 13, 14, 27, 31):
        attrs = {"coefficients": [0.5] * (degree + 1)}
        out = s.ev.apply("poly", [cx], attrs)
        assert out.levels_used - cx.levels_used == opcodes.depth_cost("poly", "ckks", attrs), degree


@pytest.mark.parametrize("op", ["mul_plain", "add_plain", "mul_scalar", "matvec", "poly"])
def test_cached_plaintexts_give_the_same_bytes_as_fresh_encodings(setup: Setup, op: str) -> None:
    attrs = {
        "mul_plain": {"values": [1, 2, 3]},
        "add_plain": {"values": [1, 2, 3]},
        "mul_scalar": {"value": 3},
        "matvec": {"matrix": MATRIX},
        "poly": {"coefficients": [1, 2, 3]},
    }[op]
    first = [setup.ev.dump(setup.ev.apply(op, [setup.cx], attrs)) for _ in range(3)]
    deeper = setup.ev.apply("mul", [setup.cx, setup.cy], {})
    again = [setup.ev.dump(setup.ev.apply(op, [deeper], attrs)) for _ in range(2)]
    setup.ev._plaintexts.clear()  # encode afresh
    reference = setup.ev.dump(setup.ev.apply(op, [setup.cx], attrs))
    assert first == [reference] * 3 and again[0] == again[1]


def test_a_displaced_evaluator_reloads_and_refuses_stale_ciphertexts() -> None:
    s = Setup("insecure-bfv")
    stale = s.cx
    other = evaluator.Evaluator(s.keys.public_context())  # same context: displaces s.ev
    assert other.generation != s.ev.generation
    with pytest.raises(errors.ForeignContextError, match="load it again"):
        s.ev.apply("negate", [stale], {})
    fresh = s.ev.load(s.keys.encrypt(s.x)[0])  # reloads the registry for s.ev
    s.expect(s.keys.decrypt([s.ev.dump(s.ev.apply("negate", [fresh], {}))]), -s.x)
