"""Byzantine workers on real processes: liars of every kind are outvoted and quarantined,
and every job still decrypts to the right answer; the chaos command says so too."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from hswarm import wire
from hswarm.client import SwarmClient, SwarmConfig
from hswarm.demo import LocalSwarm
from hswarm.program import Program

pytestmark = pytest.mark.slow

HONEST = 5


def _program(chunks: int = 3) -> tuple[Program, dict[str, list[float]], np.ndarray]:
    program = Program()
    slots = 2048  # insecure-ckks
    x = program.input("x", chunks * slots)
    program.output("y", x * x + 1.0)
    values = np.linspace(-1, 1, chunks * slots)
    return program, {"x": values.tolist()}, values * values + 1.0


@pytest.mark.parametrize(
    ("liars", "owners"),
    [
        (["garbage", "wrong-value"], ["liar-a", "liar-b"]),
        (["collude:pair", "collude:pair"], ["cartel", "cartel"]),  # colluders share an owner
        (["sleeper:2", "bitflip"], ["liar-a", "liar-b"]),
    ],
    ids=["garbage+wrong-value", "colluding-pair", "sleeper+bitflip"],
)
def test_liars_are_outvoted_and_quarantined(liars: list[str], owners: list[str], tmp_path: Path) -> None:
    program, values, want = _program()

    async def jobs(swarm: LocalSwarm) -> list[wire.JobStatus]:
        config = SwarmConfig(
            queen_url=swarm.url,
            preset="insecure-ckks",
            allow_insecure=True,
            key_path=tmp_path / "client.keys",
            timeout_s=300,
            progress=False,
        )
        statuses = []
        async with SwarmClient(config) as client:
            for _ in range(3):
                outputs = await client.run(program, values)
                np.testing.assert_allclose(outputs["y"], want, atol=1e-3)
                assert client.last_job is not None
                statuses.append(client.last_job)
        return statuses

    with LocalSwarm(HONEST, queen_env={"HSWARM_ALLOW_FAULTY_WORKERS": "1"}) as swarm:
        for i, (mode, owner) in enumerate(zip(liars, owners, strict=True)):
            swarm.start_worker(HONEST + i, ["--fault", mode, "--owner", owner])
        statuses = asyncio.run(jobs(swarm))
        workers = wire.WorkerList.model_validate(httpx.get(f"{swarm.url}/v1/workers", timeout=10).json())
        liar_names = {f"worker-{HONEST + i}" for i in range(len(liars))}
        lied = {n for n in liar_names if _lied(swarm.root / f"{n}.log")}
    names = {w.worker_id: w.name for w in workers.workers}
    quarantined = {names[w] for s in statuses for w in s.assurance.quarantined}
    assert lied, "no liar got a task: the test proves nothing"
    assert lied <= quarantined <= liar_names, (lied, quarantined)
    assert {w.name for w in workers.workers if w.quarantined} == quarantined
    assert all(s.assurance.verified and s.assurance.wrong_bound == 0.0 for s in statuses)
    assert sum(s.assurance.lies for s in statuses) >= len(lied)


def _lied(log: Path) -> bool:
    return log.exists() and " FAULT " in log.read_text(errors="replace")


def test_chaos_byzantine_threshold_accepts_no_wrong_result(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSWARM_")}
    done = subprocess.run(
        [sys.executable, "-m", "hswarm.cli", "chaos", "run", "--scenario", "byzantine-threshold"]
        + ["--report", str(report)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(report.read_text())
    assert data["wrong_results_accepted"] == 0 and data["jobs_done"] == data["jobs"]
    assert data["liars"] and data["every_liar_quarantined"] and not data["honest_quarantined"]
    assert "wrong results accepted  0" in done.stdout
