"""The client SDK: ``SwarmClient`` (async) and ``SwarmConfig``."""

from hswarm.client.config import SwarmConfig
from hswarm.client.session import EncryptedVector, SwarmClient

__all__ = ["EncryptedVector", "SwarmClient", "SwarmConfig"]
