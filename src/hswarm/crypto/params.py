"""Encryption parameters in two steps: an unchecked JSON-able literal, then a validated,
frozen :class:`Params`.

This module is pure (it must not import ``openfhe``): the program compiler reads the
scheme, slot count and depth from it. It does not build a crypto context; ``context``
does, and OpenFHE then checks the ring dimension against the security level.

Depth vocabulary used everywhere in hswarm: ``depth`` is the number of multiplicative
levels a fresh ciphertext (or, for CKKS, a freshly bootstrapped one) offers to the
user's computation. For CKKS with bootstrapping, the context is built with
``depth + bootstrap depth`` levels, the extra ones being consumed by bootstrapping itself.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any, Literal

from hswarm import errors

Scheme = Literal["ckks", "bfv", "bgv"]
SCHEMES: tuple[str, ...] = ("ckks", "bfv", "bgv")
SECURITY_LEVELS: tuple[str, ...] = (
    "HEStd_128_classic",
    "HEStd_192_classic",
    "HEStd_256_classic",
    "HEStd_NotSet",
)
INSECURE = "HEStd_NotSet"
ALLOW_INSECURE_ENV = "HSWARM_ALLOW_INSECURE"


@dataclasses.dataclass(frozen=True)
class BootstrapParams:
    """CKKS bootstrapping: OpenFHE's level budget (encoding, decoding)."""

    level_budget: tuple[int, int] = (1, 1)


@dataclasses.dataclass(frozen=True)
class Params:
    """Validated, immutable encryption parameters. Build with :meth:`from_literal`."""

    scheme: str
    depth: int
    slots: int
    security: str
    ring_dim: int | None
    scaling_mod_size: int
    first_mod_size: int
    plaintext_modulus: int
    bootstrap: BootstrapParams | None
    preset: str | None = None

    @property
    def insecure(self) -> bool:
        """True when the parameters give no standard security level (tests and demos)."""
        return self.security == INSECURE

    @property
    def can_bootstrap(self) -> bool:
        return self.bootstrap is not None

    @property
    def exact(self) -> bool:
        """True for the integer schemes (BFV, BGV), whose results are exact mod t."""
        return self.scheme != "ckks"

    @property
    def label(self) -> str:
        """A short human description, marked INSECURE where it is."""
        name = self.preset or f"{self.scheme}-custom"
        ring = self.ring_dim or "auto"
        mark = " [INSECURE: test/demo only]" if self.insecure else ""
        return f"{name} ({self.scheme.upper()}, N={ring}, depth={self.depth}, slots={self.slots}){mark}"

    def tolerance(self, ring_dim: int, magnitude: float = 1.0, bootstrapped: bool = False) -> float:
        """Absolute error to accept when comparing a CKKS result of this ``magnitude``
        with the exact value: encoding error grows with N / 2^scaling_mod_size and a few
        operations; one bootstrap (single iteration) is good to about 2^-20 (OpenFHE).
        Zero for the exact schemes."""
        if self.exact:
            return 0.0
        bound = 2.0 ** (math.log2(ring_dim) + 12 - self.scaling_mod_size)
        if bootstrapped:
            bound = max(bound, 2.0**-20)
        return bound * max(1.0, magnitude)

    def to_literal(self) -> dict[str, Any]:
        lit: dict[str, Any] = {
            "scheme": self.scheme,
            "depth": self.depth,
            "slots": self.slots,
            "security": self.security,
            "ring_dim": self.ring_dim,
        }
        if self.scheme == "ckks":
            lit["scaling_mod_size"] = self.scaling_mod_size
            lit["first_mod_size"] = self.first_mod_size
            if self.bootstrap is not None:
                lit["bootstrap"] = {"level_budget": list(self.bootstrap.level_budget)}
        else:
            lit["plaintext_modulus"] = self.plaintext_modulus
        if self.preset is not None:
            lit["preset"] = self.preset
        return lit

    @classmethod
    def from_literal(cls, literal: Mapping[str, Any], *, allow_insecure: bool | None = None) -> Params:
        """Validate a literal. Insecure parameters are refused unless ``allow_insecure``
        is true, or it is None and ``HSWARM_ALLOW_INSECURE=1`` is set."""
        return _validate(literal, allow_insecure)


_CKKS_KEYS = {
    "scheme",
    "depth",
    "slots",
    "security",
    "ring_dim",
    "scaling_mod_size",
    "first_mod_size",
    "bootstrap",
    "preset",
}
_INT_KEYS = {"scheme", "depth", "slots", "security", "ring_dim", "plaintext_modulus", "preset"}


def insecure_allowed(allow_insecure: bool | None) -> bool:
    if allow_insecure is not None:
        return allow_insecure
    return os.environ.get(ALLOW_INSECURE_ENV, "") in ("1", "true", "yes")


def _fail(field: str, message: str) -> errors.ParamsError:
    return errors.ParamsError(f"cannot build parameters: {field}: {message}")


def _int(lit: Mapping[str, Any], field: str, default: int | None, lo: int, hi: int) -> int:
    value = lit.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(field, f"expected an integer, got {value!r}")
    if not lo <= value <= hi:
        raise _fail(field, f"{value} is outside [{lo}, {hi}]")
    return value


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _validate(literal: Mapping[str, Any], allow_insecure: bool | None) -> Params:
    if not isinstance(literal, Mapping):
        raise errors.ParamsError(f"cannot build parameters: expected a mapping, got {type(literal).__name__}")
    scheme = literal.get("scheme")
    if scheme not in SCHEMES:
        raise _fail("scheme", f"{scheme!r} is not one of {', '.join(SCHEMES)}")
    allowed = _CKKS_KEYS if scheme == "ckks" else _INT_KEYS
    unknown = sorted(set(literal) - allowed)
    if unknown:
        raise _fail(", ".join(unknown), f"unknown for scheme {scheme}")
    security = literal.get("security", "HEStd_128_classic")
    if security not in SECURITY_LEVELS:
        raise _fail("security", f"{security!r} is not one of {', '.join(SECURITY_LEVELS)}")
    depth = _int(literal, "depth", None, 1, 60)
    slots = _int(literal, "slots", None, 1, 1 << 16)
    if not _power_of_two(slots):
        raise _fail("slots", f"{slots} is not a power of two")
    ring_dim = literal.get("ring_dim")
    if ring_dim is not None:
        ring_dim = _int(literal, "ring_dim", None, 1 << 10, 1 << 17)
        if not _power_of_two(ring_dim):
            raise _fail("ring_dim", f"{ring_dim} is not a power of two")
        if slots > ring_dim // 2:
            raise _fail("slots", f"{slots} exceeds ring_dim/2 = {ring_dim // 2}")
    if security == INSECURE and ring_dim is None:
        raise _fail("ring_dim", "required when security is HEStd_NotSet")
    if security == INSECURE and not insecure_allowed(allow_insecure):
        raise errors.InsecureParamsError()
    preset = literal.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise _fail("preset", f"expected a string, got {preset!r}")

    if scheme == "ckks":
        scaling = _int(literal, "scaling_mod_size", 50, 20, 60)
        first = _int(literal, "first_mod_size", 60, scaling, 61)
        bootstrap = None
        boot = literal.get("bootstrap")
        if boot is not None:
            if not isinstance(boot, Mapping) or set(boot) - {"level_budget"}:
                raise _fail("bootstrap", f"expected {{'level_budget': [enc, dec]}}, got {boot!r}")
            budget = boot.get("level_budget", [1, 1])
            if (
                not isinstance(budget, (list, tuple))
                or len(budget) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 4 for b in budget)
            ):
                raise _fail("bootstrap.level_budget", f"expected two integers in [1, 4], got {budget!r}")
            bootstrap = BootstrapParams(level_budget=(budget[0], budget[1]))
        return Params(scheme, depth, slots, security, ring_dim, scaling, first, 0, bootstrap, preset)

    modulus = _int(literal, "plaintext_modulus", 65537, 3, (1 << 60))
    if ring_dim is not None and (modulus - 1) % (2 * ring_dim) != 0:
        raise _fail(
            "plaintext_modulus",
            f"{modulus} is not 1 mod 2*ring_dim={2 * ring_dim}; packed encoding needs it",
        )
    return Params(scheme, depth, slots, security, ring_dim, 0, 0, modulus, None, preset)


# Default presets are 128-bit secure; OpenFHE chooses the ring dimension from the depth.
# Small rings exist only as ``insecure-*`` presets for tests and demos.
PRESETS: dict[str, dict[str, Any]] = {
    "ckks": {
        "scheme": "ckks",
        "depth": 8,
        "slots": 4096,
        "security": "HEStd_128_classic",
        "scaling_mod_size": 50,
        "first_mod_size": 60,
    },
    "bfv": {
        "scheme": "bfv",
        "depth": 3,
        "slots": 4096,
        "security": "HEStd_128_classic",
        "plaintext_modulus": 65537,
    },
    "bgv": {
        "scheme": "bgv",
        "depth": 3,
        "slots": 4096,
        "security": "HEStd_128_classic",
        "plaintext_modulus": 65537,
    },
    "ckks-bootstrap": {
        "scheme": "ckks",
        "depth": 10,
        "slots": 16,
        "security": "HEStd_128_classic",
        "scaling_mod_size": 59,
        "first_mod_size": 60,
        "bootstrap": {"level_budget": [2, 2]},
    },
    "insecure-ckks": {
        "scheme": "ckks",
        "depth": 6,
        "slots": 1024,
        "security": INSECURE,
        "ring_dim": 1 << 12,
        "scaling_mod_size": 50,
        "first_mod_size": 60,
    },
    "insecure-ckks-bootstrap": {
        "scheme": "ckks",
        "depth": 4,
        "slots": 8,
        "security": INSECURE,
        "ring_dim": 1 << 12,
        "scaling_mod_size": 59,
        "first_mod_size": 60,
        "bootstrap": {"level_budget": [1, 1]},
    },
    "insecure-bfv": {
        "scheme": "bfv",
        "depth": 3,
        "slots": 1024,
        "security": INSECURE,
        "ring_dim": 1 << 12,
        "plaintext_modulus": 65537,
    },
    "insecure-bgv": {
        "scheme": "bgv",
        "depth": 3,
        "slots": 1024,
        "security": INSECURE,
        "ring_dim": 1 << 12,
        "plaintext_modulus": 65537,
    },
}


def preset(name: str, *, allow_insecure: bool | None = None, **overrides: Any) -> Params:
    """The named preset, optionally with some fields overridden, validated."""
    if name not in PRESETS:
        raise errors.ParamsError(
            f"cannot build parameters: unknown preset {name!r}; known: {', '.join(PRESETS)}"
        )
    literal = {**PRESETS[name], **overrides, "preset": name}
    return Params.from_literal(literal, allow_insecure=allow_insecure)
