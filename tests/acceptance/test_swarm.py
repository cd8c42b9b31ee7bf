"""The swarm end to end: the real CLI (a queen and worker subprocesses on loopback) and
the client SDK. Jobs for every scheme; a worker killed mid-task; the queen killed and
restarted mid-job, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from hswarm import wire
from hswarm.client import SwarmClient, SwarmConfig
from hswarm.demo import LocalSwarm
from hswarm.program import Program

pytestmark = pytest.mark.slow

FAST = {
    "HSWARM_LEASE_TTL_S": "4",
    "HSWARM_HEARTBEAT_INTERVAL_S": "0.5",
    "HSWARM_SUSPECT_AFTER_S": "2",
    "HSWARM_DEAD_AFTER_S": "4",
    "HSWARM_SWEEP_INTERVAL_S": "0.25",
}


def _client(swarm: LocalSwarm, preset: str, tmp: Path, **overrides: Any) -> SwarmClient:
    return SwarmClient(
        SwarmConfig(
            queen_url=swarm.url,
            preset=preset,
            allow_insecure=True,
            key_path=tmp / f"{preset}.keys",
            preset_overrides=overrides,
            timeout_s=240,
            progress=False,
        )
    )


def test_demo_command_reports_a_correct_result(tmp_path: Path) -> None:
    report = tmp_path / "demo.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSWARM_")}
    done = subprocess.run(
        [sys.executable, "-m", "hswarm.cli", "demo", "--workers", "3", "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(report.read_text())
    assert data["correct"] is True and data["workers"] == 4 and data["byzantine"] == 1
    assert data["tasks"] >= 3 and data["seconds"] > 0 and "CORRECT" in done.stdout
    assurance = data["assurance"]  # the liar (wrong-value) was outvoted and quarantined
    assert assurance["lies"] >= 1 and len(assurance["quarantined"]) == 1


@pytest.mark.parametrize("preset", ["insecure-ckks", "insecure-bfv", "insecure-bgv"])
def test_sdk_jobs_for_each_scheme(preset: str, tmp_path: Path) -> None:
    async def scenario(swarm: LocalSwarm) -> None:
        async with _client(swarm, preset, tmp_path) as client:
            data = [1, 2, 3, 4, 5] if preset != "insecure-ckks" else [1.0, 2.0, 3.0, 4.0, 5.0]
            encrypted = await client.encrypt(data)
            result = await encrypted * encrypted  # the product brief's usage, as written
            plaintext = await client.decrypt(result)
            np.testing.assert_allclose(plaintext, np.square(data), atol=1e-6)
            # a second job reuses the uploaded context; rotations need new keys: uploaded
            other = await client.encrypt(list(range(10)))
            total = await client.decrypt((other * 2 + 1).sum())
            np.testing.assert_allclose(total, [sum(2 * v + 1 for v in range(10))], atol=1e-6)

    with LocalSwarm(3) as swarm:
        asyncio.run(scenario(swarm))


def test_sync_client_for_scripts(tmp_path: Path) -> None:
    from hswarm.client import SyncSwarmClient

    with LocalSwarm(2) as swarm:
        config = SwarmConfig(
            queen_url=swarm.url,
            preset="insecure-bgv",
            allow_insecure=True,
            key_path=tmp_path / "sync.keys",
            timeout_s=240,
            progress=False,
        )
        with SyncSwarmClient(config) as client:
            x = client.encrypt([3, -1, 4, 1, -5])
            assert list(client.decrypt(x * x - x)) == [6, 2, 12, 0, 30]


def _deep_program(copies: int) -> tuple[Program, dict[str, np.ndarray]]:
    p = Program()
    values = {}
    for c in range(copies):
        x = p.input(f"x{c}", 8)
        y = x
        for _ in range(6):
            y = y * y - 0.5
        p.output(f"y{c}", y)
        values[f"x{c}"] = np.linspace(-1, 1, 8) * (c + 1) / copies
    return p, values


def _expected(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, x in values.items():
        y = x.copy()
        for _ in range(6):
            y = y * y - 0.5
        out["y" + name[1:]] = y
    return out


def _events(url: str, job_id: str) -> list[wire.JobEvent]:
    import websockets.sync.client as ws

    events = []
    with ws.connect(url.replace("http", "ws") + f"/v1/jobs/{job_id}/events", open_timeout=10) as conn:
        while True:
            try:
                raw = conn.recv(timeout=10)
            except Exception:
                break
            event = wire.JobEvent.model_validate_json(raw)
            events.append(event)
            if event.kind in ("done", "failed"):
                break
    return events


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _leasing_worker(url: str) -> str | None:
    workers = wire.WorkerList.model_validate(httpx.get(f"{url}/v1/workers", timeout=5).json())
    busy = [w.name for w in workers.workers if w.leases > 0 and w.state == "alive"]
    return busy[0] if busy else None


def test_worker_killed_mid_task_loses_nothing(tmp_path: Path) -> None:
    program, values = _deep_program(4)  # 4 chains x 2 bootstraps: seconds of work each

    async def scenario(swarm: LocalSwarm) -> tuple[dict[str, np.ndarray], str]:
        async with _client(swarm, "insecure-ckks-bootstrap", tmp_path) as client:
            job = asyncio.create_task(client.run(program, values, label="kill-a-worker"))
            victim = await asyncio.to_thread(_wait, lambda: _leasing_worker(swarm.url), 120, "a lease")
            index = int(victim.rsplit("-", 1)[1])
            swarm.workers[index].send_signal(signal.SIGKILL)
            outputs = await job
            assert client.last_job is not None
            return outputs, client.last_job.job_id

    with LocalSwarm(3, queen_env=FAST) as swarm:
        outputs, job_id = asyncio.run(scenario(swarm))
        events = _events(swarm.url, job_id)
    for name, want in _expected(values).items():
        np.testing.assert_allclose(outputs[name], want, atol=1e-3)
    done = [e.task_id for e in events if e.kind == "task_done"]
    assert len(done) == len(set(done)), "a task's result was accepted twice"
    status_done = [e for e in events if e.kind == "done"]
    assert len(status_done) == 1


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    psycopg = pytest.importorskip("psycopg")
    name = f"hswarm_accept_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_queen_killed_mid_job_resumes_after_restart(database: str | None, tmp_path: Path) -> None:
    program, values = _deep_program(4)

    async def scenario(swarm: LocalSwarm) -> dict[str, np.ndarray]:
        async with _client(swarm, "insecure-ckks-bootstrap", tmp_path) as client:
            job = asyncio.create_task(client.run(program, values, label="kill-the-queen"))
            await asyncio.to_thread(_wait, lambda: _leasing_worker(swarm.url), 120, "a lease")
            assert swarm.queen is not None
            swarm.queen.send_signal(signal.SIGKILL)
            swarm.queen.wait()
            await asyncio.sleep(1.0)
            await asyncio.to_thread(swarm.start_queen)  # same data dir, same database
            return await job

    with LocalSwarm(3, db_url=database, queen_env=FAST) as swarm:
        outputs = asyncio.run(scenario(swarm))
    for name, want in _expected(values).items():
        np.testing.assert_allclose(outputs[name], want, atol=1e-3)
