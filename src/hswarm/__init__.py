"""Homomorphic Swarm: outsourced computation on encrypted data over untrusted workers.

The foundation so far: ``hswarm.crypto`` (the only package that imports OpenFHE),
``hswarm.program`` (pure expression graph and compiler) and ``hswarm.runtime`` (local
evaluation of compiled tasks). Importing ``hswarm`` loads no native code.
"""

from hswarm.errors import HSwarmError
from hswarm.program import Program, compile_program

__all__ = ["HSwarmError", "Program", "compile_program"]
