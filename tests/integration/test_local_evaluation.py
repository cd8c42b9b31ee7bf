"""Whole programs compiled into tasks and evaluated locally with real OpenFHE."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from hswarm import errors, runtime
from hswarm.crypto import evaluator, keys, params, reencryption
from hswarm.program import Program, compile_program, matvec
from hswarm.program.reference import run_reference


def _program(exact: bool) -> Program:
    p = Program()
    x, y, z = p.input("x", 1500), p.input("y", 1500), p.input("z", 6)
    p.output("poly", x * x + 3 * y - 2)
    p.output("total", (x + 1).sum())
    p.output("dot", x.dot(y))
    p.output("roll", z.rotate(2))
    p.output("affine", matvec([[1, 2, 0, 0, 1, 1], [0, 1, -1, 0, 0, 2]], z) + [1, -1])
    p.output("cube", z**3 - z.sum())
    if not exact:
        p.output("sigmoid", (z * 0.5).sigmoid(lo=-4, hi=4, degree=13))
    return p


@pytest.mark.parametrize("preset", ["insecure-ckks", "insecure-bfv", "insecure-bgv"])
def test_compiled_program_matches_reference(preset: str) -> None:
    prm = params.preset(preset, allow_insecure=True)
    circuit = compile_program(_program(prm.exact), prm)
    assert len(circuit.tasks) > 1
    ks = keys.generate_keys(prm, circuit.rotation_indices)
    rng = np.random.default_rng(3)
    scale = 1 if prm.exact else 0.1
    values = {
        "x": rng.integers(-9, 9, 1500) * scale,
        "y": rng.integers(-9, 9, 1500) * scale,
        "z": rng.integers(-4, 4, 6) * scale,
    }
    got = runtime.evaluate_locally(ks, circuit, values)
    want = run_reference(circuit, values)
    ring = ks.cc.GetRingDimension()
    for name in want:
        if prm.exact:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        else:
            tol = prm.tolerance(ring, float(np.max(np.abs(want[name]))))
            np.testing.assert_allclose(got[name], want[name], rtol=0, atol=tol, err_msg=name)


def test_deep_ckks_program_runs_thanks_to_inserted_bootstraps() -> None:
    prm = params.preset("insecure-ckks-bootstrap", allow_insecure=True)
    p = Program()
    y = p.input("x", 8)
    for _ in range(9):
        y = y * y - 0.5
    p.output("y", y)
    circuit = compile_program(p, prm)
    assert circuit.bootstraps == 2 and circuit.depth <= prm.depth
    ks = keys.generate_keys(prm, circuit.rotation_indices)
    x = np.linspace(-1, 1, 8)
    got = runtime.evaluate_locally(ks, circuit, {"x": x})["y"]
    want = x.copy()
    for _ in range(9):
        want = want * want - 0.5
    np.testing.assert_allclose(got, want, rtol=0, atol=prm.tolerance(4096, 1.0, bootstrapped=True) * 8)
    # the same depth on BFV (leveled) is rejected before anything is encrypted
    q = Program()
    v = q.input("x", 8)
    for _ in range(9):
        v = v * v - 1
    q.output("y", v)
    with pytest.raises(
        errors.DepthExceededError, match=r"needs multiplicative depth 4, the BFV parameters give 3"
    ):
        compile_program(q, params.preset("insecure-bfv", allow_insecure=True))


def test_task_by_task_execution_equals_run_circuit() -> None:
    prm = params.preset("insecure-bgv", allow_insecure=True)
    circuit = compile_program(_program(True), prm)
    ks = keys.generate_keys(prm, circuit.rotation_indices)
    rng = np.random.default_rng(5)
    inputs = runtime.encrypt_inputs(
        ks, circuit, {"x": rng.integers(-9, 9, 1500), "y": rng.integers(-9, 9, 1500), "z": [1, 2, 3, 4, 5, 6]}
    )
    ev = evaluator.Evaluator(ks.public_context())
    whole = runtime.run_circuit(ev, circuit, inputs)
    store = dict(inputs)
    for task in circuit.tasks:
        store.update(runtime.execute_task(ev, circuit, task, {s: store[s] for s in task.inputs}))
    for name, term in circuit.outputs.items():
        assert [store[s] for s in term.chunks] == [whole[s] for s in term.chunks], name
    with pytest.raises(errors.EvaluationError, match="missing inputs"):
        runtime.execute_task(ev, circuit, circuit.tasks[-1], {})


def test_keys_must_match_the_circuit() -> None:
    prm = params.preset("insecure-ckks", allow_insecure=True)
    p = Program()
    x = p.input("x", 8)
    p.output("r", x.rotate(5))
    circuit = compile_program(p, prm)
    ks = keys.generate_keys(prm, [])
    with pytest.raises(errors.KeyMaterialError, match=r"rotation indices \[5\]"):
        runtime.evaluate_locally(ks, circuit, {"x": np.ones(8)})
    with pytest.raises(errors.ProgramError, match="expected 8 values"):
        runtime.encrypt_inputs(keys.generate_keys(prm, [5]), circuit, {"x": np.ones(9)})


def test_key_file_is_private_and_round_trips(tmp_path: os.PathLike[str]) -> None:
    prm = params.preset("insecure-bfv", allow_insecure=True)
    ks = keys.generate_keys(prm, [1])
    ct = ks.encrypt([1, 2, 3])
    path = ks.save(os.path.join(tmp_path, "client.keys"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = keys.KeySet.load(path, allow_insecure=True)
    assert list(again.decrypt(ct, 3)) == [1, 2, 3]
    assert again.public_context().digest == ks.public_context().digest
    with pytest.raises(errors.InsecureParamsError):
        keys.KeySet.load(path)


@pytest.mark.parametrize("preset", ["insecure-ckks", "insecure-bfv", "insecure-bgv"])
def test_proxy_reencryption_moves_ciphertexts_to_a_new_key(preset: str) -> None:
    prm = params.preset(preset, allow_insecure=True)
    old, new = keys.generate_keys(prm, []), keys.generate_keys(prm, [])
    values = np.array([5, -3, 2, 7])
    ct = old.encrypt(values)[0]
    rekey = reencryption.reencryption_key(old, new.public_context().public_key)
    moved = reencryption.reencrypt(evaluator.Evaluator(old.public_context()), ct, rekey)
    got = new.decrypt([moved], 4)
    if prm.exact:
        assert list(got) == list(values)
    else:
        np.testing.assert_allclose(got, values, atol=prm.tolerance(4096, 8.0))
    with pytest.raises(errors.ForeignContextError):
        old.decrypt([moved])
    # the new key set's evaluator accepts the moved ciphertext and computes on it
    ev = evaluator.Evaluator(new.public_context())
    doubled = ev.evaluate("add", [moved, moved], {})
    assert list(np.round(new.decrypt([doubled], 4))) == list(2 * values)
