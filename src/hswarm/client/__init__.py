"""The client SDK: ``SwarmClient`` (async), ``SyncSwarmClient`` and ``SwarmConfig``."""

from hswarm.client.config import SwarmConfig
from hswarm.client.session import EncryptedVector, SwarmClient
from hswarm.client.sync import SyncSwarmClient

__all__ = ["EncryptedVector", "SwarmClient", "SwarmConfig", "SyncSwarmClient"]
