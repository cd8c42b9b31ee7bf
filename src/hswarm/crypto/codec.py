"""Vectors to and from OpenFHE plaintexts: chunking over ``slots``, packing per scheme.

CKKS packs ``slots`` reals with OpenFHE's sparse packing (the vector repeats across the
ring, so rotations are cyclic over ``slots``). BFV/BGV pack integers into a ring whose
rotations are cyclic over rows of N/2 slots; hswarm tiles each chunk across the ring so
that rotations are cyclic over ``slots`` there too. Integers are centered mod the
plaintext modulus t: values must lie in [-(t-1)/2, (t-1)/2].

This module encodes and decodes; it neither encrypts (``keys``) nor evaluates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hswarm import errors
from hswarm.crypto.context import native
from hswarm.crypto.params import Params


def split(values: Any, params: Params) -> list[np.ndarray]:
    """Zero-padded chunks of ``slots`` values each, checked for the scheme."""
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise errors.EncodingError("cannot encode: expected a non-empty 1-D vector")
    array = _checked(array, params)
    chunks = []
    for start in range(0, array.size, params.slots):
        chunk = np.zeros(params.slots, dtype=array.dtype)
        part = array[start : start + params.slots]
        chunk[: part.size] = part
        chunks.append(chunk)
    return chunks


def _checked(array: np.ndarray, params: Params) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise errors.EncodingError("cannot encode: expected real numbers")
    if params.scheme == "ckks":
        array = array.astype(np.float64)
        if not np.all(np.isfinite(array)):
            raise errors.EncodingError("cannot encode: the vector contains NaN or infinity")
        return array
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise errors.EncodingError(f"cannot encode for {params.scheme.upper()}: values must be integers")
        array = array.astype(np.int64)
    bound = (params.plaintext_modulus - 1) // 2
    if array.size and int(np.max(np.abs(array))) > bound:
        raise errors.EncodingError(
            f"cannot encode for {params.scheme.upper()}: values must lie in [-{bound}, {bound}] "
            f"(plaintext modulus {params.plaintext_modulus})"
        )
    return array.astype(np.int64)


def plaintext(cc: Any, params: Params, chunk: Any, level: int = 0) -> Any:
    """An OpenFHE plaintext of one chunk (``slots`` values), at ``level`` for CKKS."""
    values = _checked(np.asarray(chunk), params)
    if values.ndim != 1 or values.size > params.slots:
        raise errors.EncodingError(
            f"cannot encode a plaintext: {values.size} values do not fit {params.slots} slots"
        )
    if values.size < params.slots:
        padded = np.zeros(params.slots, dtype=values.dtype)
        padded[: values.size] = values
        values = padded
    if params.scheme == "ckks":
        return native(
            "encode a CKKS plaintext",
            errors.EncodingError,
            cc.MakeCKKSPackedPlaintext,
            values.tolist(),
            1,
            level,
            None,
            params.slots,
        )
    ring = cc.GetRingDimension()
    tiled = np.tile(values, ring // params.slots)
    return native(
        f"encode a {params.scheme.upper()} plaintext",
        errors.EncodingError,
        cc.MakePackedPlaintext,
        tiled.tolist(),
    )


def scalar_plaintext(cc: Any, params: Params, value: int) -> Any:
    """An integer repeated in every slot (BFV/BGV have no native ciphertext x scalar)."""
    if isinstance(value, bool) or not float(value).is_integer():
        raise errors.EncodingError(
            f"cannot encode for {params.scheme.upper()}: scalar {value!r} is not an integer"
        )
    return plaintext(cc, params, np.full(params.slots, int(value), dtype=np.int64))


def decode(pt: Any, params: Params) -> np.ndarray:
    """The ``slots`` values of a decrypted plaintext."""
    pt.SetLength(params.slots)
    if params.scheme == "ckks":
        return np.array(pt.GetRealPackedValue(), dtype=np.float64)[: params.slots]
    return np.array(pt.GetPackedValue(), dtype=np.int64)[: params.slots]
