"""The FHE layer: the only package of hswarm that imports ``openfhe``.

Submodules ``params`` and ``opcodes`` are pure and import no native code, so the
program compiler can use them; everything else is loaded lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Params": "params",
    "BootstrapParams": "params",
    "preset": "params",
    "PRESETS": "params",
    "KeySet": "keys",
    "PublicContext": "keys",
    "generate_keys": "keys",
    "Evaluator": "evaluator",
    "Ciphertext": "evaluator",
    "reencryption_key": "reencryption",
    "reencrypt": "reencryption",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hswarm.crypto' has no attribute {name!r}")
    return getattr(importlib.import_module(f"hswarm.crypto.{module}"), name)
