"""Client settings: where the queen is, which parameters, where the secret key lives.

Pydantic-settings with the ``HSWARM_`` prefix; pass a :class:`SwarmConfig` explicitly.
It does not read or write keys (``session`` does).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SwarmConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HSWARM_", extra="forbid")

    queen_url: str = "http://127.0.0.1:8470"
    preset: str = "ckks"
    preset_overrides: dict[str, object] = Field(default_factory=dict)
    allow_insecure: bool | None = None
    key_path: Path | None = None  # default: ~/.hswarm/keys/<preset>.keys
    timeout_s: float = 600.0
    progress: bool | None = None  # None: a bar when stderr is a terminal
    # Verification (docs/verification.md): matching replicas from distinct owners per task
    # (the queen raises it to f + 1); verify=False runs each task once, unverified.
    quorum: int = Field(2, ge=1, le=7)
    verify: bool = True

    def resolved_key_path(self) -> Path:
        if self.key_path is not None:
            return Path(self.key_path)
        return Path.home() / ".hswarm" / "keys" / f"{self.preset}.keys"
