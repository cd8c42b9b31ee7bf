"""The queen's settings: where it listens, where it keeps its state, and its timing.

A pydantic-settings model read from ``HSWARM_*`` environment variables (and keyword
arguments, which win). It is built once by whoever starts the queen and passed
explicitly to :func:`hswarm.queen.app.create_app`; nothing in the queen reads the
environment on its own. It does not create directories or open the database.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1 << 20


class QueenSettings(BaseSettings):
    """Everything the queen needs to start; every field has a working default."""

    model_config = SettingsConfigDict(env_prefix="HSWARM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8470, ge=0, le=65535)
    data_dir: Path = Path("./.hswarm/queen")
    db_url: str = ""  # empty: sqlite:///{data_dir}/queen.db
    max_blob_bytes: int = Field(1024 * MIB, ge=1)  # 128-bit CKKS contexts with rotation keys: ~330 MB
    lease_ttl_s: float = Field(30.0, gt=0)
    heartbeat_interval_s: float = Field(5.0, gt=0)
    suspect_after_s: float = Field(15.0, gt=0)
    dead_after_s: float = Field(45.0, gt=0)
    sweep_interval_s: float = Field(1.0, gt=0)
    max_attempts: int = Field(5, ge=1)
    long_poll_max_s: float = Field(30.0, ge=0)
    context_probe_timeout_s: float = Field(60.0, gt=0)  # per check of an uploaded context
    context_probe_memory_bytes: int = Field(4096 * MIB, ge=64 * MIB)  # address space to load it

    @model_validator(mode="after")
    def _derive(self) -> QueenSettings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.db_url:
            self.db_url = f"sqlite:///{self.data_dir / 'queen.db'}"
        if self.dead_after_s < self.suspect_after_s:
            raise ValueError("dead_after_s must be at least suspect_after_s")
        return self

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def token_path(self) -> Path:
        return self.data_dir / "enroll.token"
