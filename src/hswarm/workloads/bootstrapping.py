"""Bootstrapping workloads: a batch of independent refreshes and a deep chain.

- **batch** — ``ciphertexts`` independent CKKS ciphertexts, each bootstrapped once: the
  compiler makes one bootstrap task per ciphertext, so they spread over every worker.
  It is what "refresh many ciphertexts at once" costs (the product brief's bootstrap
  figures).
- **chain** — each ciphertext goes through ``iterations`` steps of the logistic map
  ``x <- r x (1 - x)``: a polynomial of degree ``2^iterations``, two levels per step, so
  the compiler's automatic bootstrap insertion refreshes every ciphertext several times.
  The bootstraps of one ciphertext depend on each other; those of different ciphertexts
  do not. ``r = 3.2`` lands on a stable 2-cycle (multiplier 0.16 per cycle), so CKKS
  noise shrinks instead of growing and the result can be checked with a fixed tolerance.

Values lie in [0.05, 0.95] (bootstrapping needs magnitudes below 1). This module defines
each workload (parameters, program, data, plaintext reference, check); running it is the
caller's job (``hswarm bench``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from hswarm import errors
from hswarm.crypto.params import Params, preset
from hswarm.program import Program

KINDS = ("batch", "chain")
DEFAULT_PRESET = "insecure-ckks-bootstrap"
CHAIN_R = 3.2
CHAIN_ITERATIONS = 8
# The chain's error: a bootstrap adds up to ~2^-20 (params.tolerance) and the map's
# contraction keeps the total below a few of those; the margin covers sparse-slot noise.
CHAIN_ERROR_FACTOR = 8.0


@dataclasses.dataclass(frozen=True)
class Workload:
    kind: str
    params: Params
    program: Program
    inputs: dict[str, np.ndarray]
    expected: np.ndarray
    ciphertexts: int
    iterations: int  # logistic-map steps per ciphertext (0 for the batch)

    def tolerance(self) -> float:
        assert self.params.ring_dim, "bootstrapping presets fix the ring dimension"
        bound = self.params.tolerance(self.params.ring_dim, magnitude=1.0, bootstrapped=True)
        return bound * (CHAIN_ERROR_FACTOR if self.iterations else 2.0)

    def check(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Compare the decrypted output with the plaintext computation."""
        got = np.real(np.asarray(outputs["y"], dtype=np.complex128))[: self.expected.size]
        error = float(np.max(np.abs(got - self.expected))) if got.size else float("inf")
        tolerance = self.tolerance()
        return {
            "values": int(self.expected.size),
            "max_error": error,
            "tolerance": tolerance,
            "correct": bool(got.size == self.expected.size and error <= tolerance),
        }


def build(
    kind: str,
    *,
    ciphertexts: int,
    preset_name: str = DEFAULT_PRESET,
    allow_insecure: bool | None = None,
    iterations: int = CHAIN_ITERATIONS,
    seed: int = 0,
    **overrides: Any,
) -> Workload:
    """The named workload over ``ciphertexts`` full ciphertexts of random values."""
    if kind not in KINDS:
        raise errors.ProgramError(f"cannot build workload {kind!r}: known workloads are {', '.join(KINDS)}")
    if ciphertexts < 1:
        raise errors.ProgramError(
            f"cannot build workload {kind!r}: ciphertexts must be >= 1, got {ciphertexts}"
        )
    params = preset(preset_name, allow_insecure=allow_insecure, **overrides)
    if not params.can_bootstrap:
        raise errors.ParamsError(
            f"cannot build workload {kind!r}: preset {preset_name!r} has no bootstrapping keys"
        )
    values = np.random.default_rng(seed).uniform(0.05, 0.95, ciphertexts * params.slots)
    program = Program()
    x = program.input("x", values.size)
    steps = iterations if kind == "chain" else 0
    if kind == "batch":
        program.output("y", x.bootstrap())
        expected = values
    else:
        if steps < 1:
            raise errors.ProgramError(f"cannot build the chain: iterations must be >= 1, got {iterations}")
        y, expected = x, values
        for _ in range(steps):
            y = y.poly([0.0, CHAIN_R, -CHAIN_R])
            expected = CHAIN_R * expected * (1.0 - expected)
        program.output("y", y)
    return Workload(kind, params, program, {"x": values}, expected, ciphertexts, steps)
