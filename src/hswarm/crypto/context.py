"""Builds an OpenFHE crypto context from validated :class:`~hswarm.crypto.params.Params`,
and wraps OpenFHE's native errors.

It turns hswarm's depth (levels per fresh or freshly bootstrapped ciphertext) into
OpenFHE's total multiplicative depth, enables the features hswarm uses and runs the
bootstrapping precomputation. It does not generate keys (``keys``) or load serialized
contexts (``evaluator``).

Facts it relies on (openfhe 1.6.1, measured): with FLEXIBLEAUTO a ciphertext has
``GetLevel() + GetNoiseScaleDeg() - 1`` levels used; bootstrapping needs an input with at
least one level left and returns a ciphertext with ``GetBootstrapDepth(budget)`` used.
So a bootstrappable context gets ``depth + 1 + bootstrap depth`` levels and fresh
ciphertexts are encrypted at level ``bootstrap depth``: fresh and refreshed ciphertexts
then both offer ``depth`` levels and one spare for the next bootstrap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import openfhe

from hswarm import errors
from hswarm.crypto.params import Params

T = TypeVar("T")

SECRET_KEY_DIST = openfhe.UNIFORM_TERNARY
_SECURITY = {
    "HEStd_128_classic": openfhe.HEStd_128_classic,
    "HEStd_192_classic": openfhe.HEStd_192_classic,
    "HEStd_256_classic": openfhe.HEStd_256_classic,
    "HEStd_NotSet": openfhe.HEStd_NotSet,
}
_FEATURES = (openfhe.PKE, openfhe.KEYSWITCH, openfhe.LEVELEDSHE, openfhe.ADVANCEDSHE, openfhe.PRE)


def native(what: str, error: type[errors.HSwarmError], call: Callable[..., T], *args: Any) -> T:
    """Call OpenFHE; turn any native exception into ``error`` naming ``what`` failed."""
    with wrapped(what, error):
        return call(*args)


@contextlib.contextmanager
def wrapped(what: str, error: type[errors.HSwarmError]) -> Iterator[None]:
    """Like :func:`native`, for a block of OpenFHE calls."""
    try:
        yield
    except errors.HSwarmError:
        raise
    except Exception as exc:  # OpenFHE raises RuntimeError, ValueError, MemoryError...
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise error(f"cannot {what}: {detail}") from exc


def bootstrap_depth(params: Params) -> int:
    """Levels one bootstrap consumes (0 without bootstrapping)."""
    if params.bootstrap is None:
        return 0
    budget = list(params.bootstrap.level_budget)
    return int(openfhe.CryptoContext.GetBootstrapDepth(budget, SECRET_KEY_DIST))


def total_depth(params: Params) -> int:
    """OpenFHE's multiplicative depth for these parameters."""
    if params.bootstrap is None:
        return params.depth
    return params.depth + 1 + bootstrap_depth(params)


def encryption_level(params: Params) -> int:
    """The level fresh ciphertexts are encrypted at (see module docstring)."""
    return bootstrap_depth(params)


def _literal_params(params: Params) -> Any:
    if params.scheme == "ckks":
        p = openfhe.CCParamsCKKSRNS()
        p.SetScalingModSize(params.scaling_mod_size)
        p.SetFirstModSize(params.first_mod_size)
        p.SetScalingTechnique(openfhe.FLEXIBLEAUTO)
        p.SetBatchSize(params.slots)
        if params.bootstrap is not None:
            p.SetSecretKeyDist(SECRET_KEY_DIST)
    elif params.scheme == "bfv":
        p = openfhe.CCParamsBFVRNS()
        p.SetPlaintextModulus(params.plaintext_modulus)
    else:
        p = openfhe.CCParamsBGVRNS()
        p.SetPlaintextModulus(params.plaintext_modulus)
        # Same level accounting as CKKS: used = level + noise scale degree - 1.
        p.SetScalingTechnique(openfhe.FLEXIBLEAUTO)
    # Proxy re-encryption (key rotation without decryption) needs a PRE mode for CKKS and
    # BGV; INDCPA is the mode that keeps ordinary evaluation unchanged.
    p.SetPREMode(openfhe.INDCPA)
    p.SetMultiplicativeDepth(total_depth(params))
    p.SetSecurityLevel(_SECURITY[params.security])
    if params.ring_dim is not None:
        p.SetRingDim(params.ring_dim)
    return p


def enable_features(cc: Any, params: Params) -> None:
    for feature in _FEATURES:
        cc.Enable(feature)
    if params.bootstrap is not None:
        cc.Enable(openfhe.FHE)


def setup_bootstrap(cc: Any, params: Params) -> None:
    """Bootstrapping precomputation; needed in every process that bootstraps."""
    if params.bootstrap is not None:
        native(
            "set up bootstrapping",
            errors.ContextError,
            cc.EvalBootstrapSetup,
            list(params.bootstrap.level_budget),
            [0, 0],
            params.slots,
        )


def check_slots(cc: Any, params: Params) -> None:
    ring = cc.GetRingDimension()
    if params.slots > ring // 2:
        raise errors.ContextError(
            f"cannot create the crypto context: {params.slots} slots exceed ring dimension/2 "
            f"= {ring // 2}; lower slots"
        )


def create(params: Params) -> Any:
    """A fresh crypto context with features enabled and bootstrapping set up."""
    cc = native(
        "create the crypto context", errors.ContextError, openfhe.GenCryptoContext, _literal_params(params)
    )
    with wrapped("enable crypto context features", errors.ContextError):
        enable_features(cc, params)
    check_slots(cc, params)
    setup_bootstrap(cc, params)
    return cc
