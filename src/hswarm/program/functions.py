"""Named real functions and their Chebyshev approximations.

Coefficients are computed here, on the client, with OpenFHE's convention
(``EvalChebyshevCoefficients``: f ~ c0/2 + sum_k c_k T_k on [lo, hi]) and shipped in the
program, so every worker evaluates exactly the same series. Pure Python: no ``openfhe``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from hswarm import errors


def _inverse(x: float) -> float:
    return 1.0 / x


FUNCTIONS: dict[str, Callable[[float], float]] = {
    "sigmoid": lambda x: 1.0 / (1.0 + math.exp(-x)),
    "exp": math.exp,
    "inverse": _inverse,
    "tanh": math.tanh,
}


def evaluate(function: str, x: float) -> float:
    return FUNCTIONS[function](x)


def chebyshev_coefficients(function: str, lo: float, hi: float, degree: int) -> list[float]:
    """Chebyshev interpolation coefficients of ``function`` on [lo, hi]."""
    if function not in FUNCTIONS:
        raise errors.ProgramError(
            f"cannot approximate {function!r}: unknown function; known: {', '.join(FUNCTIONS)}"
        )
    if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= 2031:
        raise errors.ProgramError(f"cannot approximate {function}: degree must be in [1, 2031]")
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise errors.ProgramError(f"cannot approximate {function}: need finite lo < hi")
    if function == "inverse" and lo <= 0.0:
        raise errors.ProgramError("cannot approximate inverse: the interval must be positive")
    f = FUNCTIONS[function]
    total = degree + 1
    half_width, middle = 0.5 * (hi - lo), 0.5 * (hi + lo)
    step = math.pi / total
    points = [f(math.cos(step * (i + 0.5)) * half_width + middle) for i in range(total)]
    factor = 2.0 / total
    coefficients = []
    for i in range(total):
        acc = 0.0
        for j in range(total):
            acc += points[j] * math.cos(step * i * (j + 0.5))
        coefficients.append(acc * factor)
    return coefficients


def chebyshev_value(coefficients: list[float], lo: float, hi: float, x: float) -> float:
    """The series at x (Clenshaw), for plaintext references."""
    t = (2.0 * x - lo - hi) / (hi - lo)
    b1 = b2 = 0.0
    for c in reversed(coefficients[1:]):
        b1, b2 = 2.0 * t * b1 - b2 + c, b1
    return t * b1 - b2 + coefficients[0] / 2.0
