"""The worker's settings: which queen it serves, who it is, and how much it takes on.

A pydantic-settings model read from ``HSWARM_*`` environment variables (keyword
arguments win). Whoever starts a worker builds it once and passes it explicitly to
:func:`hswarm.worker.supervisor.run`; nothing else in the worker reads the environment.
It does not create the cache directory or contact the queen.
"""

from __future__ import annotations

import os
import platform
import re
import socket
from importlib import metadata
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hswarm import wire
from hswarm.worker import faults

GIB = 1 << 30
MAX_LEASE_BATCH = 64  # wire.LeaseRequest.max_tasks


def _default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def determinism_class() -> str:
    """Replicas are compared only within one class: the FHE library's version and the
    CPU architecture (floating-point steps may differ across CPU families)."""
    try:
        version = metadata.version("openfhe")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"openfhe-{version}/{platform.machine() or 'unknown'}"


def memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def parse_cpus(text: str) -> tuple[int, ...]:
    """Cores from a list such as "0-3,8" (the taskset/cpuset syntax), in order, unique."""
    cores: list[int] = []
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ValueError(f"cannot read cpus {text!r}: expected a list such as 0-3,8")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise ValueError(f"cannot read cpus {text!r}: range {part} runs backwards")
        cores += [c for c in range(first, last + 1) if c not in cores]
    return tuple(cores)


def format_cpus(cores: list[int] | tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cores)


class WorkerSettings(BaseSettings):
    """Everything a worker needs to start; only the queen's URL and the token are required."""

    model_config = SettingsConfigDict(env_prefix="HSWARM_", extra="ignore")

    queen_url: str
    token: SecretStr
    name: str = Field(default_factory=_default_name, min_length=1, max_length=100)
    owner: str = Field("", max_length=100)
    role: wire.Role = "worker"
    # FHE executor processes; None ("auto"): one per core of ``cpus``, and per key set as
    # many as ``memory_budget`` holds (executor.plan), single-threaded when all fit.
    executors: int | None = Field(1, ge=1, le=256)
    # OpenMP threads per executor child; None: 1 when there are several executors (their
    # threads would oversubscribe the cores: measured 10x slower bootstraps), else the
    # library's default (every core).
    executor_threads: int | None = Field(None, ge=1, le=1024)
    # The cores this worker's executors may use, e.g. "0-3,8"; given, each executor is
    # pinned to its own of them. None: every core the process may use, unpinned.
    cpus: str | None = None
    # Memory the executors may fill with key sets; the queen never sends this worker a
    # key set that needs more. None: 80% of the machine's memory.
    memory_budget: int | None = Field(None, ge=0)
    cache_dir: Path | None = None  # None: ./.hswarm/worker-<name>
    cache_bytes: int = Field(2 * GIB, ge=1 << 20)
    lease_batch: int | None = Field(None, ge=1, le=MAX_LEASE_BATCH)  # None: executors
    # Tasks leased ahead of the executors: their inputs download while the executors are
    # busy, so an executor never waits for a round trip between two tasks (measured:
    # 0.16 s between 0.87 s bootstraps without it).
    prefetch: int = Field(1, ge=0, le=MAX_LEASE_BATCH)
    long_poll_s: float = Field(10.0, ge=0.0, le=30.0)
    http_timeout_s: float = Field(30.0, gt=0.0)
    http_retries: int = Field(5, ge=0, le=20)
    # Fault injection (tests and chaos only; see ``faults``): a mode such as "garbage" or
    # "collude:GROUP", kept in its canonical text, which the worker declares to the queen.
    fault: str | None = None

    @field_validator("queen_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"cannot use queen_url {value!r}: it must start with http:// or https://")
        return value

    @field_validator("cpus")
    @classmethod
    def _check_cpus(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        cores = parse_cpus(value)
        allowed = os.sched_getaffinity(0)
        if not set(cores) <= allowed:
            raise ValueError(
                f"cannot use cpus {value!r}: cores {sorted(set(cores) - allowed)} are not available "
                f"to this process (it may use {format_cpus(sorted(allowed))})"
            )
        return format_cpus(cores)

    @field_validator("fault")
    @classmethod
    def _check_fault(cls, value: str | None) -> str | None:
        if value is None or not value.strip():  # HSWARM_FAULT= (empty) means no fault
            return None
        try:
            return str(faults.parse(value))
        except faults.FaultModeError as exc:
            raise ValueError(str(exc)) from exc

    @model_validator(mode="after")
    def _derive(self) -> WorkerSettings:
        if self.cache_dir is None:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", self.name)
            self.cache_dir = Path(".hswarm") / f"worker-{safe}"
        self.cache_dir = self.cache_dir.expanduser().resolve()
        if self.memory_budget is None:
            self.memory_budget = int(memory_bytes() * 0.8)
        if self.executor_threads is None and self.executors is not None:
            if self.cpus is not None:  # pinned: the cores shared out, no oversubscription
                self.executor_threads = max(1, len(self.cores) // self.executors)
            elif self.executors > 1:
                self.executor_threads = 1
        if self.lease_batch is None:
            self.lease_batch = min(self.most_executors, MAX_LEASE_BATCH)
        return self

    @property
    def auto(self) -> bool:
        """True when the worker sizes its executors per key set (``--executors auto``)."""
        return self.executors is None

    @property
    def cores(self) -> tuple[int, ...]:
        """The cores the executors may use."""
        if self.cpus is not None:
            return parse_cpus(self.cpus)
        return tuple(sorted(os.sched_getaffinity(0)))

    @property
    def pool_size(self) -> int:
        """Executor slots: one per core in auto mode or with ``cpus``, else ``executors``."""
        if self.executors is None or self.cpus is not None:
            return len(self.cores)
        return self.executors

    @property
    def most_executors(self) -> int:
        """The most executors (and tasks) this worker runs at once."""
        return self.executors if self.executors is not None else len(self.cores)

    @property
    def budget(self) -> int:
        assert self.memory_budget is not None  # set by _derive
        return self.memory_budget

    @property
    def cache_path(self) -> Path:
        assert self.cache_dir is not None  # set by _derive
        return self.cache_dir

    @property
    def batch(self) -> int:
        assert self.lease_batch is not None  # set by _derive
        return self.lease_batch

    @property
    def injected_fault(self) -> faults.Fault | None:
        """The parsed fault mode, None for an honest worker."""
        return faults.parse(self.fault) if self.fault is not None else None
