"""The queen's settings: where it listens, where it keeps its state, and its timing.

A pydantic-settings model read from ``HSWARM_*`` environment variables (and keyword
arguments, which win). It is built once by whoever starts the queen and passed
explicitly to :func:`hswarm.queen.app.create_app`; nothing in the queen reads the
environment on its own. It does not create directories or open the database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hswarm.swarm import reputation
from hswarm.swarm import routing as swarm_routing

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
    # Verification (docs/verification.md): f, the Byzantine workers assumed; a replicated
    # task needs max(quorum, f + 1) matching votes from distinct owners.
    faults: int = Field(1, ge=0, le=6)
    max_replicas: int = Field(7, ge=1, le=32)  # a task still disputed after this many fails its job
    trust_after: int = Field(10, ge=1)  # adaptive replication: verified results in a row first
    max_skip: float = Field(0.9, ge=0.0, lt=1.0)  # cap on the chance to run a task unreplicated
    audit_rate: float = Field(0.1, ge=0.0, le=1.0)  # unreplicated results a guardian re-runs
    routing: Literal["fifo", "random", "least-loaded", "pheromone"] = "fifo"
    allow_faulty_workers: bool = False  # fault injection (chaos and tests only)
    # A line per request: at 1000 tasks/s, 125 lines a second and 2-3% of the queen's CPU.
    access_log: bool = False

    @model_validator(mode="after")
    def _derive(self) -> QueenSettings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.db_url:
            self.db_url = f"sqlite:///{self.data_dir / 'queen.db'}"
        if self.dead_after_s < self.suspect_after_s:
            raise ValueError("dead_after_s must be at least suspect_after_s")
        if self.max_replicas < self.faults + 1:
            raise ValueError("max_replicas must be at least faults + 1")
        return self

    def trust_policy(self) -> reputation.TrustPolicy:
        return reputation.TrustPolicy(
            trust_after=self.trust_after, max_skip=self.max_skip, audit_rate=self.audit_rate
        )

    def pheromone_params(self) -> swarm_routing.PheromoneParams:
        return swarm_routing.PheromoneParams()

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def token_path(self) -> Path:
        return self.data_dir / "enroll.token"
