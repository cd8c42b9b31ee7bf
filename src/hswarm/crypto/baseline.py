"""The vanilla baseline: the same FHE steps as plain OpenFHE calls in one process.

What a user without hswarm would write: one process, OpenFHE's own threads (OpenMP, every
core unless ``OMP_NUM_THREADS`` says otherwise), native ciphertext objects passed from
call to call, no serialization, no sandbox, no wrapper. Benchmarks compare the swarm
against it (``hswarm bench``). The input bytes are deserialized before the clock starts
and the outputs serialized after it stops, so the timed region holds only evaluation; the
serialized outputs let the caller check that the baseline did the same work (CKKS
evaluation is deterministic: the bytes must equal the swarm's).

It runs the ops that the bootstrapping workloads use; any other op is refused.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import openfhe

from hswarm import errors
from hswarm.crypto import context, keys
from hswarm.crypto.context import wrapped
from hswarm.crypto.params import Params
from hswarm.crypto.public import PublicContext

BINARY = openfhe.BINARY
Step = tuple[int, str, Sequence[int], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class BaselineRun:
    outputs: dict[int, bytes]  # step id -> serialized ciphertext
    seconds: float  # evaluation only
    setup_seconds: float  # loading keys and bootstrapping precomputation
    step_seconds: dict[int, float]  # per evaluated step


def _natives(cc: Any) -> dict[str, Callable[..., Any]]:
    return {
        "bootstrap": lambda a: cc.EvalBootstrap(a),
        "poly": lambda a, coefficients: cc.EvalPoly(a, [float(c) for c in coefficients]),
        "add": lambda a, b: cc.EvalAdd(a, b),
        "sub": lambda a, b: cc.EvalSub(a, b),
        "mul": lambda a, b: cc.EvalMult(a, b),
        "negate": lambda a: cc.EvalNegate(a),
        "add_scalar": lambda a, value: cc.EvalAdd(a, float(value)),
        "mul_scalar": lambda a, value: cc.EvalMult(a, float(value)),
    }


def run(
    public: PublicContext, steps: Sequence[Step], inputs: Mapping[int, bytes], outputs: Sequence[int]
) -> BaselineRun:
    """Evaluate ``steps`` (in order; ``inputs`` by step id) with plain OpenFHE calls."""
    params = Params.from_literal(public.params, allow_insecure=True)
    started = time.perf_counter()
    keys.clear_registry()  # OpenFHE's evaluation keys are process-global
    with wrapped("load the baseline's keys", errors.ContextError):
        cc = openfhe.DeserializeCryptoContextString(public.context, BINARY)
        context.enable_features(cc, params)
        openfhe.DeserializeEvalMultKeyString(public.mult_keys, BINARY)
        if public.rotation_keys:
            openfhe.DeserializeEvalAutomorphismKeyString(public.rotation_keys, BINARY)
        context.setup_bootstrap(cc, params)
        values = {sid: openfhe.DeserializeCiphertextString(data, BINARY) for sid, data in inputs.items()}
    natives = _natives(cc)
    unknown = sorted({op for _, op, _, _ in steps if op not in natives})
    if unknown:
        raise errors.UnsupportedOperationError(
            f"cannot run the baseline: ops {unknown} are not in it (it has {', '.join(sorted(natives))})"
        )
    setup = time.perf_counter() - started
    timings: dict[int, float] = {}
    began = time.perf_counter()
    for sid, op, args, attrs in steps:
        t = time.perf_counter()
        with wrapped(f"evaluate {op} in the baseline", errors.EvaluationError):
            values[sid] = natives[op](*(values[a] for a in args), **dict(attrs))
        timings[sid] = time.perf_counter() - t
    seconds = time.perf_counter() - began
    with wrapped("serialize the baseline's outputs", errors.EvaluationError):
        out = {sid: openfhe.Serialize(values[sid], BINARY) for sid in outputs}
    return BaselineRun(out, seconds, setup, timings)
