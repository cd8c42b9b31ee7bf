"""Homomorphic Swarm: outsourced computation on encrypted data over untrusted workers.

The foundation so far: ``hswarm.crypto`` (the only package that imports OpenFHE),
``hswarm.program`` (pure expression graph and compiler) and ``hswarm.runtime`` (local
evaluation of compiled tasks). Importing ``hswarm`` loads no native code.
"""

from typing import Any

from hswarm.errors import HSwarmError
from hswarm.program import Program, compile_program

__all__ = ["HSwarmError", "Program", "SwarmClient", "SwarmConfig", "compile_program"]


def __getattr__(name: str) -> Any:
    # The SDK loads OpenFHE and httpx: import it only when asked for.
    if name in ("SwarmClient", "SwarmConfig"):
        from hswarm import client

        return getattr(client, name)
    raise AttributeError(f"module 'hswarm' has no attribute {name!r}")
