"""A plaintext interpreter of a :class:`~hswarm.program.circuit.Circuit`.

It runs every step on numpy slot vectors with exactly the slot semantics of the
encrypted evaluation (chunks, zero padding, rotations cyclic over ``slots``, integers
centered mod the plaintext modulus), so tests and the simulator get the expected answer
of any compiled program without OpenFHE. It ignores levels and noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hswarm import errors
from hswarm.crypto import opcodes
from hswarm.program import functions
from hswarm.program.circuit import Circuit


def _centered(v: np.ndarray, t: int) -> np.ndarray:
    v = np.mod(v, t)
    return np.where(v > (t - 1) // 2, v - t, v)


def run_reference(circuit: Circuit, values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    params = circuit.params
    slots = int(params["slots"])
    exact = params["scheme"] != "ckks"
    t = int(params.get("plaintext_modulus", 0))
    dtype = object if exact else np.float64  # python ints: no overflow before the modulus

    def pad(vec: Any) -> np.ndarray:
        out = np.zeros(slots, dtype=dtype)
        vec = list(vec)[:slots]
        out[: len(vec)] = vec
        return out

    env: dict[int, np.ndarray] = {}
    for name, term in circuit.inputs.items():
        if name not in values:
            raise errors.ProgramError(f"cannot evaluate: no value for input {name!r}")
        vec = list(np.asarray(values[name]).tolist())
        for i, sid in enumerate(term.chunks):
            env[sid] = pad(vec[i * slots : (i + 1) * slots])
    for step in circuit.steps:
        if step.op == "input":
            continue
        a = [env[x] for x in step.args]
        at = step.attrs
        op = step.op
        if op == "add":
            r = a[0] + a[1]
        elif op == "sub":
            r = a[0] - a[1]
        elif op == "mul":
            r = a[0] * a[1]
        elif op == "negate":
            r = -a[0]
        elif op == "add_plain":
            r = a[0] + pad(at["values"])
        elif op == "sub_plain":
            r = a[0] - pad(at["values"])
        elif op == "mul_plain":
            r = a[0] * pad(at["values"])
        elif op == "add_scalar":
            r = a[0] + at["value"]
        elif op == "mul_scalar":
            r = a[0] * at["value"]
        elif op == "rotate":
            r = np.roll(a[0], -opcodes.normal_steps(int(at["steps"]), slots))
        elif op == "sum_slots":
            r = np.full(slots, a[0].sum(), dtype=dtype)
        elif op == "dot":
            r = np.full(slots, (a[0] * a[1]).sum(), dtype=dtype)
        elif op == "dot_plain":
            r = np.full(slots, (a[0] * pad(at["values"])).sum(), dtype=dtype)
        elif op == "matvec":
            m = np.zeros((slots, slots), dtype=dtype)
            rows = at["matrix"]
            m[: len(rows), : len(rows[0])] = rows
            r = m.dot(a[0])
        elif op == "poly":
            r = sum(c * a[0] ** k for k, c in enumerate(at["coefficients"]))
        elif op == "chebyshev":
            r = np.array([functions.chebyshev_value(at["coefficients"], at["lo"], at["hi"], x) for x in a[0]])
        elif op == "bootstrap":
            r = a[0]
        else:
            raise errors.UnsupportedOperationError(f"cannot evaluate: unknown operation {op!r}")
        env[step.id] = _centered(np.asarray(r, dtype=dtype), t) if exact else np.asarray(r)
    out = {}
    for name, term in circuit.outputs.items():
        if term.replicated:
            out[name] = np.asarray(env[term.chunks[0]][:1])
        else:
            out[name] = np.concatenate([env[s] for s in term.chunks])[: term.length]
        if exact:
            out[name] = out[name].astype(np.int64)
    return out
