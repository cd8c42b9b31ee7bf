"""A synchronous face of :class:`~hswarm.client.session.SwarmClient` for scripts and
notebooks that do not run an event loop.

It owns a private event loop and runs each call of the async client to completion on
it, in the caller's thread (where OpenFHE work must stay, see ``session``). It adds no
behaviour of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import numpy as np

from hswarm.client.config import SwarmConfig
from hswarm.client.session import EncryptedVector, SwarmClient
from hswarm.program import Program


class SyncSwarmClient:
    """``with SyncSwarmClient(config) as client: client.decrypt(client.encrypt(v) * 2)``"""

    def __init__(self, config: SwarmConfig | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self.client = SwarmClient(config)

    def _run(self, coroutine: Any) -> Any:
        return self._loop.run_until_complete(coroutine)

    def connect(self) -> None:
        self._run(self.client.connect())

    def close(self) -> None:
        try:
            self._run(self.client.close())
        finally:
            self._loop.close()

    def __enter__(self) -> SyncSwarmClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def encrypt(self, data: Any, name: str | None = None) -> EncryptedVector:
        return self._run(self.client.encrypt(data, name))

    def decrypt(self, value: EncryptedVector, *, label: str = "") -> np.ndarray:
        return self._run(self.client.decrypt(value, label=label))

    def run(self, program: Program, values: Mapping[str, Any], *, label: str = "") -> dict[str, np.ndarray]:
        return self._run(self.client.run(program, values, label=label))
