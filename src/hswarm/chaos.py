"""Chaos scenarios: a real queen and real worker processes, some lying, crashing or slow,
run real encrypted jobs; the report says whether any wrong result got through.

Each :class:`Scenario` names its workers (honest, or started with a ``--fault`` mode),
the queen's verification settings and what happens during the run (workers killed and
restarted, the queen killed and restarted). :func:`run` starts a :class:`LocalSwarm`,
submits the jobs, and checks every accepted output digest against a reference computed
here with the same keys: evaluation is deterministic, so a digest that differs is a
wrong result accepted. Then it runs the same jobs on a fault-free swarm of the same size
and settings, for the throughput ratio. Lies and their times come from the workers'
``FAULT`` log lines; quarantines from the queen (``GET /v1/workers``).

It drives processes and HTTP only; the decisions it tests live in the queen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import random
import re
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from hswarm import errors, runtime, wire
from hswarm.client.transport import QueenTransport
from hswarm.crypto import keys, params
from hswarm.crypto.evaluator import Evaluator
from hswarm.crypto.public import digest
from hswarm.demo import LocalSwarm
from hswarm.program import Program, compile_program

PRESET = "insecure-ckks"
LIE = re.compile(r"^(\S+ \S+) hswarm\.worker \w+ FAULT (\S+) task \S+ attempt \d+: posting")


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    faults: tuple[str | None, ...]  # one entry per worker: None is honest
    f: int = 1  # the queen's assumed Byzantine workers
    jobs: int = 3
    chunks: int = 4  # tasks per job
    guardians: int = 0  # extra honest workers with --role guardian
    queen: dict[str, str] = dataclasses.field(default_factory=dict)  # extra HSWARM_* settings
    crash_every_s: float = 0.0  # kill -9 a random worker this often, then restart it
    queen_restart_after_s: float = 0.0  # kill -9 the queen once, then restart it

    @property
    def liars(self) -> int:
        return sum(1 for mode in self.faults if mode and not mode.startswith("slow"))


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "byzantine-threshold",
            "10 workers, 3 Byzantine (wrong-value and a colluding pair under distinct owners), f=3",
            (None,) * 7 + ("wrong-value", "collude:pair", "collude:pair"),
            f=3,
        ),
        Scenario(
            "sleeper",
            "3 honest workers, a guardian, and a sleeper that is honest for 6 tasks and then lies; "
            "adaptive replication trusts after 4 verified results and audits every unreplicated one",
            (None,) * 3 + ("sleeper:6",),
            jobs=8,
            guardians=1,
            queen={"HSWARM_TRUST_AFTER": "4", "HSWARM_AUDIT_RATE": "1.0"},
        ),
        Scenario(
            "crash-storm",
            "6 honest workers; every 3 s one is killed with SIGKILL and restarted",
            (None,) * 6,
            crash_every_s=3.0,
            queen={"HSWARM_LEASE_TTL_S": "4", "HSWARM_HEARTBEAT_INTERVAL_S": "1"},
        ),
        Scenario(
            "slow-swarm",
            "6 honest workers of different speeds (2 at full speed, others 0.3 s to 1.5 s slower per task)",
            (None, None, "slow:0.3", "slow:0.6", "slow:1.0", "slow:1.5"),
        ),
        Scenario(
            "queen-restart",
            "5 honest workers; the queen is killed with SIGKILL mid-run and restarted on its store",
            (None,) * 5,
            queen_restart_after_s=4.0,
        ),
    )
}


def _workload(chunks: int, seed: int) -> tuple[Any, Any, dict[str, Any]]:
    prm = params.preset(PRESET, allow_insecure=True)
    program = Program()
    x = program.input("x", chunks * prm.slots)
    program.output("y", x * x + x * 0.5)
    circuit = compile_program(program, prm)
    values = {"x": [random.Random(seed + i).uniform(-1, 1) for i in range(chunks * prm.slots)]}
    return prm, circuit, values


async def _submit_jobs(
    url: str, scenario: Scenario, seed: int, deadline_s: float
) -> tuple[list[dict[str, Any]], float]:
    """Submit the scenario's jobs, wait for them; per job, accepted vs reference digests."""
    prm, circuit, values = _workload(scenario.chunks, seed)
    keyset = keys.generate_keys(prm, circuit.rotation_indices)
    public = keyset.public_context()
    evaluator = Evaluator(public, sandbox=False)
    transport = QueenTransport(url, timeout_s=30.0)
    context = public.to_bytes()
    await _retry(transport.put_context, digest(context), context)
    prepared = []  # encrypted inputs and the reference digests, computed before the clock starts
    for j in range(scenario.jobs):
        inputs = runtime.encrypt_inputs(keyset, circuit, {"x": [v + j for v in values["x"]]})
        reference = runtime.run_circuit(evaluator, circuit, inputs)
        expected = {sid: digest(reference[sid]) for term in circuit.outputs.values() for sid in term.chunks}
        prepared.append((j, inputs, expected))
    jobs: list[tuple[str, dict[int, str]]] = []
    started = time.perf_counter()
    for j, inputs, expected in prepared:
        for data in inputs.values():
            await _retry(transport.put_blob, digest(data), data)
        accepted = await _retry(
            transport.submit,
            wire.JobSubmission(
                circuit=circuit.to_json(),
                context=digest(context),
                inputs={sid: digest(data) for sid, data in inputs.items()},
                label=f"chaos {scenario.name} {j}",
            ),
        )
        jobs.append((accepted.job_id, expected))
    reports = []
    for job_id, expected in jobs:
        status = await _wait(transport, job_id, started + deadline_s)
        wrong = sum(1 for sid, d in status.results.items() if expected.get(sid) != d)
        reports.append(
            {
                "job_id": job_id,
                "state": status.state,
                "outputs": len(expected),
                "wrong": wrong,
                "tasks": status.tasks_total,
                "assurance": status.assurance.model_dump(),
            }
        )
    seconds = time.perf_counter() - started
    await transport.close()
    return reports, seconds


async def _retry(call: Any, *args: Any) -> Any:
    """A call that outlives a restarting queen (unreachable or not ready for a while)."""
    for attempt in range(60):
        try:
            return await call(*args)
        except errors.QueenUnreachableError:
            pass
        except errors.QueenError as exc:
            if exc.status != 503:
                raise
        await asyncio.sleep(min(2.0, 0.1 * (attempt + 1)))
    return await call(*args)


async def _wait(transport: QueenTransport, job_id: str, deadline: float) -> wire.JobStatus:
    while True:
        status = await _retry(transport.job, job_id)
        if status.state != "running":
            return status
        if time.perf_counter() > deadline:
            raise errors.HSwarmError(
                f"cannot finish chaos job {job_id}: still running at the deadline "
                f"({status.tasks_done}/{status.tasks_total} tasks; {status.waiting or 'no reason given'})"
            )
        await asyncio.sleep(0.2)


def _lies(root: Path, count: int) -> dict[str, list[float]]:
    """Per worker name: the times of its lies, from its log's FAULT lines."""
    found: dict[str, list[float]] = {}
    for i in range(count):
        log = root / f"worker-{i}.log"
        if not log.exists():
            continue
        for line in log.read_text(errors="replace").splitlines():
            m = LIE.match(line)
            if m:
                at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                found.setdefault(f"worker-{i}", []).append(at)
    return found


def _chaos_monkey(swarm: LocalSwarm, scenario: Scenario, stop: threading.Event, rng: random.Random) -> None:
    """Kill workers (and the queen) as the scenario says, and start them again."""
    next_crash = time.monotonic() + scenario.crash_every_s
    queen_at = time.monotonic() + scenario.queen_restart_after_s if scenario.queen_restart_after_s else None
    while not stop.wait(0.1):
        now = time.monotonic()
        if scenario.crash_every_s and now >= next_crash:
            index = rng.randrange(len(scenario.faults))
            swarm.workers[index].send_signal(signal.SIGKILL)
            swarm.workers[index].wait()
            swarm.start_worker(index, _worker_args(scenario, index))
            next_crash = now + scenario.crash_every_s
        if queen_at is not None and now >= queen_at and swarm.queen is not None:
            swarm.queen.send_signal(signal.SIGKILL)
            swarm.queen.wait()
            swarm.start_queen()
            queen_at = None


def _worker_args(scenario: Scenario, index: int) -> list[str]:
    if index < len(scenario.faults):
        mode = scenario.faults[index]
        return ["--fault", mode] if mode else []
    return ["--role", "guardian"]


def _run_once(scenario: Scenario, faulty: bool, seed: int, deadline_s: float) -> dict[str, Any]:
    env = {
        "HSWARM_FAULTS": str(scenario.f),
        "HSWARM_ALLOW_FAULTY_WORKERS": "1",
        "HSWARM_ALLOW_INSECURE": "1",
        **scenario.queen,
    }
    plan = (
        scenario
        if faulty
        else dataclasses.replace(
            scenario,
            faults=tuple(None for _ in scenario.faults),
            crash_every_s=0.0,
            queen_restart_after_s=0.0,
        )
    )
    count = len(plan.faults) + plan.guardians
    with LocalSwarm(0, queen_env=env) as swarm:
        for i in range(count):
            swarm.start_worker(i, _worker_args(plan, i))
        stop = threading.Event()
        monkey = threading.Thread(
            target=_chaos_monkey, args=(swarm, plan, stop, random.Random(seed)), daemon=True
        )
        monkey.start()
        try:
            jobs, seconds = asyncio.run(_submit_jobs(swarm.url, plan, seed, deadline_s))
        finally:
            stop.set()
            monkey.join(30)
        workers = wire.WorkerList.model_validate(httpx.get(f"{swarm.url}/v1/workers", timeout=10).json())
        lies = _lies(swarm.root, count)
    return {"jobs": jobs, "seconds": seconds, "workers": workers.workers, "lies": lies, "count": count}


def run(name: str, seed: int = 7, deadline_s: float = 600.0) -> dict[str, Any]:
    """Run a scenario and its fault-free twin; return the report."""
    if name not in SCENARIOS:
        raise errors.ParamsError(f"cannot run chaos scenario {name!r}: choose one of {', '.join(SCENARIOS)}")
    scenario = SCENARIOS[name]
    started = time.perf_counter()
    chaos = _run_once(scenario, True, seed, deadline_s)
    calm = _run_once(scenario, False, seed, deadline_s)
    tasks = sum(j["tasks"] for j in chaos["jobs"])
    by_name = {}
    for w in chaos["workers"]:  # a restarted worker registers again: keep its latest record
        by_name[w.name] = w
    quarantined = sorted(n for n, w in by_name.items() if w.quarantined)
    liars = sorted(chaos["lies"])
    to_quarantine = [
        by_name[n].quarantined_at - min(chaos["lies"][n])
        for n in liars
        if n in by_name and by_name[n].quarantined_at is not None
    ]
    throughput = tasks / chaos["seconds"]
    baseline = sum(j["tasks"] for j in calm["jobs"]) / calm["seconds"]
    return {
        "scenario": name,
        "about": scenario.about,
        "preset": f"{PRESET} (INSECURE: test size)",
        "workers": chaos["count"],
        "byzantine": [m for m in scenario.faults if m],
        "faults_assumed": scenario.f,
        "jobs": len(chaos["jobs"]),
        "jobs_done": sum(1 for j in chaos["jobs"] if j["state"] == "done"),
        "tasks": tasks,
        "wrong_results_accepted": sum(j["wrong"] for j in chaos["jobs"]),
        "lies_detected": sum(j["assurance"]["lies"] for j in chaos["jobs"]),
        "lies_told": sum(len(v) for v in chaos["lies"].values()),
        "liars": liars,
        "quarantined": quarantined,
        "every_liar_quarantined": set(liars) <= set(quarantined),
        "honest_quarantined": sorted(set(quarantined) - set(liars)),
        "time_to_quarantine_s": {
            "median": round(statistics.median(to_quarantine), 3) if to_quarantine else None,
            "max": round(max(to_quarantine), 3) if to_quarantine else None,
        },
        "replicas": sum(j["assurance"]["replicas"] for j in chaos["jobs"]),
        "seconds": round(chaos["seconds"], 3),
        "tasks_per_s": round(throughput, 3),
        "fault_free_tasks_per_s": round(baseline, 3),
        "throughput_vs_fault_free": round(throughput / baseline, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
        "job_reports": chaos["jobs"],
    }


def summary(report: dict[str, Any]) -> str:
    q = report["time_to_quarantine_s"]
    lines = [
        f"chaos {report['scenario']}: {report['about']}",
        f"  preset        {report['preset']}",
        f"  jobs          {report['jobs_done']}/{report['jobs']} done, {report['tasks']} tasks, "
        f"{report['replicas']} replica results",
        f"  wrong results accepted  {report['wrong_results_accepted']}",
        f"  lies          {report['lies_told']} told, {report['lies_detected']} detected in jobs; "
        f"liars {report['liars'] or 'none'}",
        f"  quarantined   {report['quarantined'] or 'none'} "
        f"(every liar: {'yes' if report['every_liar_quarantined'] else 'NO'}; "
        f"honest: {report['honest_quarantined'] or 'none'})",
        f"  to quarantine median {q['median']} s, max {q['max']} s after the first lie",
        f"  throughput    {report['tasks_per_s']:.2f} tasks/s vs {report['fault_free_tasks_per_s']:.2f} "
        f"fault-free ({report['throughput_vs_fault_free']:.2f}x)",
    ]
    return "\n".join(lines)


def passed(report: dict[str, Any]) -> bool:
    return (
        report["wrong_results_accepted"] == 0
        and report["jobs_done"] == report["jobs"]
        and report["every_liar_quarantined"]
        and not report["honest_quarantined"]
    )
