"""Verification overhead and routing strategies, on real processes (a queen and workers on
loopback running real OpenFHE tasks).

Not a test. Two parts:

- ``overhead``: honest workers (and a guardian) run a sequence of verified jobs; per job,
  executions per accepted task (replica votes / tasks; 1.0 = no verification, triple
  replication = 3.0). Adaptive replication needs streaks, so the steady state is the
  second half of the jobs. Then the same with ~30% of the workers lying (wrong-value)
  and f raised to cover them.
- ``routing``: a heterogeneous swarm (per-task delays of 0 s to 0.3 s, i.e. speeds of
  about 1x to 4x, and two key sets, so a worker's executor is warm for only one at a
  time) runs the same jobs under each routing strategy; throughput in accepted tasks/s.

    .venv/bin/python benchmarks/swarm.py [--part overhead|routing|all] [--quick]

Figures in the simulator (``hswarm simulate``) are simulated; these are measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hswarm.client import SwarmClient, SwarmConfig
from hswarm.demo import LocalSwarm
from hswarm.program import Program

SLOTS = 2048  # insecure-ckks


def _program(chunks: int) -> tuple[Program, dict[str, list[float]]]:
    program = Program()
    x = program.input("x", chunks * SLOTS)
    program.output("y", x * x + x)
    return program, {"x": np.linspace(-1, 1, chunks * SLOTS).tolist()}


def _config(url: str, root: Path, name: str, verify: bool = True) -> SwarmConfig:
    return SwarmConfig(
        queen_url=url,
        preset="insecure-ckks",
        allow_insecure=True,
        key_path=root / f"{name}.keys",
        timeout_s=900,
        progress=False,
        verify=verify,
    )


async def _jobs(url: str, root: Path, jobs: int, chunks: int) -> list[dict[str, Any]]:
    program, values = _program(chunks)
    rows = []
    async with SwarmClient(_config(url, root, "overhead")) as client:
        for _ in range(jobs):
            started = time.perf_counter()
            await client.run(program, values)
            job = client.last_job
            assert job is not None and job.state == "done"
            a = job.assurance
            rows.append(
                {
                    "tasks": job.tasks_total,
                    "replicas": a.replicas,
                    "audits": a.audits,
                    "unreplicated": a.unreplicated,
                    "lies": a.lies,
                    "overhead": a.replicas / job.tasks_total,
                    "seconds": time.perf_counter() - started,
                }
            )
    return rows


def overhead(quick: bool) -> None:
    jobs, chunks = (6, 16) if quick else (10, 24)
    print("\n## Verification overhead (executions per accepted task)\n")
    print("| swarm | f | jobs x tasks | first job | steady state (second half) | audits | lies |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for label, honest, liars, f in (
        ("4 honest + guardian", 4, 0, 1),
        ("5 honest + 2 liars (29%) + guardian", 5, 2, 2),
    ):
        env = {"HSWARM_FAULTS": str(f), "HSWARM_ALLOW_FAULTY_WORKERS": "1"}
        with LocalSwarm(honest, queen_env=env) as swarm:
            for i in range(honest, honest + liars):
                swarm.start_worker(i, ["--fault", "wrong-value"])
            swarm.start_worker(honest + liars, ["--role", "guardian"])
            rows = asyncio.run(_jobs(swarm.url, swarm.root, jobs, chunks))
        steady = rows[len(rows) // 2 :]
        ratio = sum(r["replicas"] for r in steady) / sum(r["tasks"] for r in steady)
        print(
            f"| {label} | {f} | {jobs} x {rows[0]['tasks']} | {rows[0]['overhead']:.2f} | {ratio:.2f} | "
            f"{sum(r['audits'] for r in rows)} | {sum(r['lies'] for r in rows)} |",
            flush=True,
        )


async def _two_tenants(url: str, root: Path, jobs: int, chunks: int) -> float:
    program, values = _program(chunks)
    clients = [SwarmClient(_config(url, root, f"tenant-{i}")) for i in range(2)]
    for c in clients:
        await c.connect()
    tasks = 0
    started = time.perf_counter()

    async def tenant(client: SwarmClient) -> int:
        done = 0
        for _ in range(jobs):
            await client.run(program, values)
            assert client.last_job is not None
            done += client.last_job.tasks_total
        return done

    try:
        tasks = sum(await asyncio.gather(*(tenant(c) for c in clients)))
    finally:
        for c in clients:
            await c.close()
    return tasks / (time.perf_counter() - started)


def routing(quick: bool) -> None:
    jobs, chunks, rounds = (2, 8, 1) if quick else (3, 12, 2)
    delays = ["0", "0.05", "0.1", "0.3"] * 2  # 8 workers, about 1x to 4x on these tasks
    print("\n## Routing strategies: accepted tasks/s, heterogeneous swarm, two key sets\n")
    print(f"8 workers (per-task delays {', '.join(delays)} s), 2 tenants x {jobs} jobs x {chunks} tasks")
    print("\n| strategy | tasks/s (each round) | median | vs fifo |\n|---|---|---:|---:|")
    results: dict[str, list[float]] = {}
    for _ in range(rounds):
        for strategy in ("fifo", "random", "least-loaded", "pheromone"):
            env = {"HSWARM_ROUTING": strategy, "HSWARM_ALLOW_FAULTY_WORKERS": "1"}
            with LocalSwarm(0, queen_env=env) as swarm:
                for i, delay in enumerate(delays):
                    swarm.start_worker(i, ["--fault", f"slow:{delay}"] if delay != "0" else [])
                rate = asyncio.run(_two_tenants(swarm.url, swarm.root, jobs, chunks))
            results.setdefault(strategy, []).append(rate)
    base = statistics.median(results["fifo"])
    for strategy, rates in results.items():
        med = statistics.median(rates)
        print(
            f"| {strategy} | {', '.join(f'{r:.2f}' for r in rates)} | {med:.2f} | {med / base:.2f}x |",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["overhead", "routing", "all"], default="all")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HSWARM_ALLOW_INSECURE", "1")
    print(
        f"# swarm benchmark (measured, real processes)\n\n- machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; preset insecure-ckks "
        "(INSECURE: test size); queen and workers share the cores"
    )
    if args.part in ("overhead", "all"):
        overhead(args.quick)
    if args.part in ("routing", "all"):
        routing(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
