"""An embedded swarm on this machine: a queen and local worker processes on loopback.

:class:`LocalSwarm` starts the real ``hswarm queen`` and ``hswarm worker`` commands as
subprocesses in a temporary directory (SQLite by default), waits until the queen is
ready, and stops everything on exit — the demo and the acceptance tests use it.
:func:`run_demo` runs the logistic-regression workload through it with the client SDK,
with some workers lying on purpose (``--fault``), and checks the decrypted predictions
against the plaintext model and the job's assurance report against the liars.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from hswarm import errors


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalSwarm:
    """A queen and ``workers`` worker processes; use as a context manager."""

    def __init__(
        self,
        workers: int = 3,
        *,
        root: Path | None = None,
        db_url: str | None = None,
        queen_env: dict[str, str] | None = None,
        worker_args: list[str] | None = None,
    ) -> None:
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="hswarm-")
        self.root = Path(root or self._tmp.name)  # type: ignore[union-attr]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_url = db_url
        self.queen_env = queen_env or {}
        self.worker_args = worker_args or []
        self.count = workers
        self.queen: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    # -- processes ----------------------------------------------------------------------

    def _env(self, threads: int | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HSWARM_")}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        return env

    def _spawn(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        return subprocess.Popen([sys.executable, "-m", "hswarm.cli", *args], env=env, stdout=log, stderr=log)

    def start_queen(self) -> None:
        args = ["queen", "--port", str(self.port), "--data", str(self.root / "queen")]
        if self.db_url:
            args += ["--db", self.db_url]
        env = {**self._env(), **self.queen_env}
        self.queen = self._spawn(args, env, "queen")
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.queen is not None and self.queen.poll() is not None:
                raise errors.HSwarmError(f"cannot start the queen: it exited; see {self.root / 'queen.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.2)
        raise errors.HSwarmError(f"cannot start the queen: not ready after {timeout_s:g} s")

    @property
    def token(self) -> str:
        return (self.root / "queen" / "enroll.token").read_text().strip()

    def start_worker(self, index: int, extra: list[str] | None = None) -> subprocess.Popen[bytes]:
        args = [
            "worker",
            "--queen",
            self.url,
            f"--token={self.token}",  # "=": a token may begin with "-"
            "--name",
            f"worker-{index}",
            "--owner",
            f"owner-{index}",
            "--cache-dir",
            str(self.root / f"worker-{index}"),
            *self.worker_args,
            *(extra or []),
        ]
        proc = self._spawn(args, self._env(threads=1), f"worker-{index}")
        if index < len(self.workers):
            self.workers[index] = proc
        else:
            self.workers.append(proc)
        return proc

    def __enter__(self) -> LocalSwarm:
        try:
            self.start_queen()
            for i in range(self.count):
                self.start_worker(i)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout_s: float = 20.0) -> None:
        procs = [p for p in [*self.workers, self.queen] if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.root.glob("*.log")
        )


async def _run_workload(
    url: str, root: Path, preset: str, slots: int, allow_insecure: bool | None, verify: bool
) -> dict[str, Any]:
    from hswarm.client import SwarmClient, SwarmConfig
    from hswarm.workloads import logistic_regression

    workload = logistic_regression.build(preset, allow_insecure=allow_insecure, slots=slots)
    config = SwarmConfig(
        queen_url=url,
        preset=preset,
        preset_overrides={"depth": workload.params.depth, "slots": workload.params.slots},
        allow_insecure=allow_insecure,
        key_path=root / "client.keys",
        verify=verify,
    )
    async with SwarmClient(config) as client:
        outputs = await client.run(workload.program, workload.inputs, label="logistic-regression")
        circuit, job = client.last_circuit, client.last_job
    check = workload.check(outputs)
    assert circuit is not None and job is not None
    return {"check": check, "tasks": len(circuit.tasks), "params": workload.params, "job": job}


def run_demo(
    workers: int,
    preset: str,
    slots: int,
    allow_insecure: bool | None,
    byzantine: int = 0,
    fault: str = "wrong-value",
    verify: bool = True,
) -> dict[str, Any]:
    """Start a local swarm of ``workers`` honest workers and ``byzantine`` ones that inject
    ``fault``, run the workload (verified unless ``verify`` is False), stop; return the report."""
    started = time.perf_counter()
    env = {"HSWARM_ALLOW_FAULTY_WORKERS": "1"} if byzantine else {}
    with LocalSwarm(workers, queen_env=env) as swarm:
        for i in range(workers, workers + byzantine):
            swarm.start_worker(i, ["--fault", fault])
        ready = time.perf_counter()
        result = asyncio.run(_run_workload(swarm.url, swarm.root, preset, slots, allow_insecure, verify))
        finished = time.perf_counter()
    params = result["params"]
    check = result["check"]
    assurance = result["job"].assurance
    return {
        "workload": "logistic-regression (breast-cancer, scikit-learn)",
        "correct": bool(check["correct"]),
        "agreement": check["agreement"],
        "max_probability_error": check["max_probability_error"],
        "rows": check["rows"],
        "workers": workers + byzantine,
        "byzantine": byzantine,
        "fault": fault if byzantine else None,
        "tasks": result["tasks"],
        "assurance": assurance.model_dump(),
        "params": params.label,
        "insecure": params.insecure,
        "seconds": round(finished - started, 3),
        "job_seconds": round(finished - ready, 3),
    }
