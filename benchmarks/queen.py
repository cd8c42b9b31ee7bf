"""Queen throughput and scheduling latency on loopback, and the demo workload end to end.

Not a test. Part 1 starts a real queen (``hswarm queen`` subprocess) on SQLite and on
PostgreSQL, submits one job of T trivial tasks (independent ``x + 1`` chunks: the queen
never looks inside ciphertexts, so every task's input and output is the same small
blob), and drives it with W protocol-level workers (processes with keep-alive HTTP
clients) that lease B tasks at a time and post their results: one request per result
when B is 1, one ``/v1/workers/results`` batch per lease otherwise. Each batch size runs
unverified (one replica per task) and verified (a quorum of 2 replicas from distinct
owners, as jobs get by default).

Each row runs either flat out (the workers call again as soon as they have an answer:
the queen's capacity) or, with ``--paced R`` and B > 1, paced at R tasks/s in all, each
worker's leases at random (exponential) gaps, as independent workers arrive: the latency
a worker sees while the queen carries that load. Workers paced in step would all call at
once and measure their own queue. The workers start once the job is accepted (a lease
that arrives during a big submission waits for its write on SQLite: the submission's
time is its own column). It prints accepted tasks/s from then to completion, the
queen's CPU time per task over the same span (from /proc: steadier than wall time on a
shared machine), and the p50/p99 latency of lease calls that granted tasks and of
result calls: the queen's scheduling overhead per call. Empty polls
are counted, not timed: the workers poll without waiting (``wait_s`` 0), so that a
lease's latency is the queen's work and never a wait for tasks.
With ``--idle K``, K more workers long-poll meanwhile for work they can never get (their
memory budget holds no key set), as the idle part of a big fleet does; their polls are
counted. With ``--in-process``, part 1 is instead the queue's own cost without HTTP:
``queue.lease`` and ``queue.accept_results`` called from this process for 4 workers in
turn, per call and per task. Part 2 (``--demo``) runs the demo workload through a local
swarm with 1 and 2 worker processes and through local evaluation in one process.

    .venv/bin/python benchmarks/queen.py [--tasks 2000] [--workers 4] [--batch 1,16]
        [--db sqlite,postgresql] [--paced 1000] [--idle K] [--json PATH] [--demo] [--in-process]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from hswarm import wire
from hswarm.crypto import keys, params
from hswarm.crypto.public import digest
from hswarm.demo import LocalSwarm
from hswarm.program import Program, compile_program


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _job(tasks: int) -> tuple[dict[str, Any], bytes, dict[int, str], bytes]:
    prm = params.preset("insecure-bfv", allow_insecure=True)
    program = Program()
    for i in range(tasks):
        program.output(f"y{i}", program.input(f"x{i}", 1) + 1)
    circuit = compile_program(program, prm)
    context = keys.generate_keys(prm, circuit.rotation_indices).public_context().to_bytes()
    blob = os.urandom(1024)
    inputs = {sid: digest(blob) for term in circuit.inputs.values() for sid in term.chunks}
    return circuit.to_json(), context, inputs, blob


def _enroll(http: httpx.Client, token: str, name: str, owner: str, memory_bytes: int = 0) -> None:
    """Register a protocol-level worker; its credential goes on every later request."""
    reg = wire.Registration(
        token=token, name=name, owner=owner, determinism_class="bench", memory_bytes=memory_bytes
    )
    enrolled = wire.Enrollment.model_validate(http.post("/v1/workers/register", json=reg.model_dump()).json())
    http.headers["Authorization"] = f"Bearer {enrolled.credential}"


def _worker(
    url: str,
    token: str,
    batch: int,
    rate: float,
    go: Any,
    stop: Any,
    out: Any,
    blob_digest: str,
    index: int,
) -> None:
    """Lease and answer until stopped; with ``rate`` > 0, about that many tasks/s, its
    leases at exponentially distributed gaps (as independent clients arrive). Runs
    in its own process (a worker is its own machine: threads sharing one GIL would add
    their waits for it to the latencies), and puts its latencies on ``out`` when stopped."""
    lat: dict[str, list[float]] = {"lease": [], "result": [], "empty": []}
    with httpx.Client(base_url=url, timeout=30) as http:
        _enroll(http, token, f"bench-{index}", f"o{index}")
        pace = random.Random(index)
        go.wait()  # the job is in: a lease never waits for its submission's write
        due = time.perf_counter()
        if rate > 0:  # the first arrival too: paced workers never start in step
            due += pace.expovariate(rate / batch)
            time.sleep(max(0.0, due - time.perf_counter()))
        while not stop.is_set():
            t = time.perf_counter()
            # No long poll: every lease answers at once, so its latency is the queen's work.
            grant = http.post(
                "/v1/workers/lease", json=wire.LeaseRequest(max_tasks=batch, wait_s=0).model_dump()
            )
            grant.raise_for_status()
            took = time.perf_counter() - t
            tasks = wire.LeaseGrant.model_validate(grant.json()).tasks
            if not tasks:
                lat["empty"].append(took)
                time.sleep(0.005)
                due = time.perf_counter()
                continue
            lat["lease"].append(took)
            results = [
                wire.TaskResult(
                    task_id=task.task_id, attempt=task.attempt, outputs={o: blob_digest for o in task.outputs}
                )
                for task in tasks
            ]
            if batch == 1:
                for result in results:
                    t = time.perf_counter()
                    http.post("/v1/workers/result", json=result.model_dump(mode="json")).raise_for_status()
                    lat["result"].append(time.perf_counter() - t)
            else:
                t = time.perf_counter()
                body = wire.ResultBatch(results=results).model_dump(mode="json")
                receipts = wire.ReceiptBatch.model_validate(
                    http.post("/v1/workers/results", json=body).json()
                )
                lat["result"].append(time.perf_counter() - t)
                refused = [r.error for r in receipts.receipts if not r.accepted]
                if refused:
                    raise RuntimeError(f"results refused: {refused[:3]}")
            if rate > 0:  # a Poisson process: workers in step would queue behind each other
                due += pace.expovariate(rate / len(tasks))
                time.sleep(max(0.0, due - time.perf_counter()))
    out.put(lat)


def _idle(url: str, token: str, stop: threading.Event, polls: list[int], index: int) -> None:
    """A worker that long-polls for work it can never get (its memory budget holds no key
    set), as the idle part of a big fleet does; counts its lease calls."""
    with httpx.Client(base_url=url, timeout=30) as http:
        _enroll(http, token, f"idle-{index}", f"idle{index}", memory_bytes=1)
        while not stop.is_set():
            http.post("/v1/workers/lease", json=wire.LeaseRequest(max_tasks=1, wait_s=2).model_dump())
            polls.append(1)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _throughput(
    db_url: str | None,
    label: str,
    tasks: int,
    workers: int,
    batch: int,
    verify: bool,
    rate: float,
    idle: int = 0,
) -> dict[str, Any]:
    circuit, context, inputs, blob = _job(tasks)
    with LocalSwarm(0, db_url=db_url) as swarm, httpx.Client(base_url=swarm.url, timeout=120) as http:
        http.put(f"/v1/contexts/{digest(context)}", content=context).raise_for_status()
        http.put(f"/v1/blobs/{digest(blob)}", content=blob).raise_for_status()
        fork = multiprocessing.get_context("fork")
        go, stop, out = fork.Event(), fork.Event(), fork.Queue()
        busy = [
            fork.Process(
                target=_worker,
                args=(swarm.url, swarm.token, batch, rate / workers, go, stop, out, digest(blob), i),
                daemon=True,
            )
            for i in range(workers)
        ]
        for process in busy:
            process.start()
        polls: list[int] = []
        threads = [
            threading.Thread(target=_idle, args=(swarm.url, swarm.token, stop, polls, i), daemon=True)
            for i in range(idle)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5 + 0.02 * idle)  # registered and polling
        submission = wire.JobSubmission(
            circuit=circuit,
            context=digest(context),
            inputs=inputs,
            assurance=wire.Assurance(quorum=2, verify=verify),
        )
        started = time.perf_counter()
        job = wire.JobAccepted.model_validate(
            http.post("/v1/jobs", json=submission.model_dump(mode="json")).json()
        )
        submit_s = time.perf_counter() - started
        queen_cpu = _cpu_seconds(swarm.queen.pid)
        idle_polls = len(polls)
        started = time.perf_counter()
        go.set()
        done = -1
        while True:  # followed as the SDK follows it: a long poll per hundredth of the job
            status = wire.JobStatus.model_validate(
                http.get(f"/v1/jobs/{job.job_id}", params={"wait_s": 10, "done": done}).json()
            )
            if status.state != "running":
                break
            done = status.tasks_done + max(1, status.tasks_total // 100) - 1
        seconds = time.perf_counter() - started
        queen_cpu = _cpu_seconds(swarm.queen.pid) - queen_cpu
        idle_polls = len(polls) - idle_polls
        stop.set()
        lat: dict[str, list[float]] = {"lease": [], "result": [], "empty": []}
        for _ in busy:
            for kind, values in out.get(timeout=30).items():
                lat[kind] += values
        for process in busy:
            process.join(10)
        for thread in threads:
            thread.join(10)
    return {
        "db": label,
        "batch": batch,
        "verified": verify,
        "paced_tasks_per_s": rate or None,
        "workers": workers,
        "idle_workers": idle,
        "idle_polls": idle_polls,
        "tasks": tasks,
        "state": status.state,
        "submit_s": submit_s,
        "seconds": seconds,
        "tasks_per_s": tasks / seconds,
        "queen_cpu_ms_per_task": 1e3 * queen_cpu / tasks,
        "leases": len(lat["lease"]),
        "empty_polls": len(lat["empty"]),
        "lease_p50_ms": 1e3 * _percentile(lat["lease"], 0.5),
        "lease_p99_ms": 1e3 * _percentile(lat["lease"], 0.99),
        "result_p50_ms": 1e3 * _percentile(lat["result"], 0.5),
        "result_p99_ms": 1e3 * _percentile(lat["result"], 0.99),
    }


def _in_process(db_url: str | None, label: str, tasks: int, batches: list[int]) -> list[dict[str, Any]]:
    """The queue's own cost, without HTTP: one thread calls ``queue.lease`` and
    ``queue.accept_results`` for 4 workers in turn, 2 s per batch size, on one job of
    ``tasks`` independent tasks (unverified)."""
    import tempfile

    from hswarm.queen import jobs, membership, queue, settings, store

    circuit, context, inputs, blob = _job(tasks)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = settings.QueenSettings(data_dir=Path(tmp), db_url=db_url or f"sqlite:///{tmp}/queen.db")
        db = store.Store(cfg.db_url)
        db.migrate()
        with db.write() as conn:
            row = {"digest": digest(context), "size": len(context), "params": circuit["params"]}
            store.insert_absent(
                conn, store.contexts, {**row, "key_tag": "bench", "rotation_indices": [], "created_at": 0.0}
            )
            store.insert_absent(
                conn, store.blobs, {"digest": digest(blob), "size": len(blob), "created_at": 0.0}
            )
        token = membership.ensure_token(cfg.token_path)
        workers = [
            membership.register(
                db,
                cfg,
                wire.Registration(token=token, name=f"w{i}", owner=f"o{i}", determinism_class="bench"),
            ).worker_id
            for i in range(4)
        ]
        submission = wire.JobSubmission(
            circuit=circuit, context=digest(context), inputs=inputs, assurance=wire.Assurance(verify=False)
        )
        jobs.submit(db, cfg, submission)
        rows = []
        for batch in batches:
            lease_s = result_s = 0.0
            done = calls = 0
            end = time.perf_counter() + 2.0
            while time.perf_counter() < end:
                worker = workers[calls % len(workers)]
                t = time.perf_counter()
                grant = queue.lease(db, cfg, worker, wire.LeaseRequest(max_tasks=batch, wait_s=0))
                lease_s += time.perf_counter() - t
                if not grant.tasks:
                    break
                results = [
                    wire.TaskResult(
                        task_id=s.task_id, attempt=s.attempt, outputs={o: digest(blob) for o in s.outputs}
                    )
                    for s in grant.tasks
                ]
                t = time.perf_counter()
                queue.accept_results(db, cfg, worker, results)
                result_s += time.perf_counter() - t
                done, calls = done + len(grant.tasks), calls + 1
            rows.append(
                {
                    "db": label,
                    "batch": batch,
                    "tasks": done,
                    "lease_ms_per_call": 1e3 * lease_s / max(calls, 1),
                    "results_ms_per_call": 1e3 * result_s / max(calls, 1),
                    "ms_per_task": 1e3 * (lease_s + result_s) / max(done, 1),
                }
            )
        db.dispose()
    return rows


def _postgres() -> tuple[str | None, Any]:
    try:
        import psycopg

        admin = psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True)
    except Exception as exc:
        print(f"PostgreSQL not reachable ({exc}); skipping it", file=sys.stderr)
        return None, None
    name = f"hswarm_bench_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", (admin, name)


def _demo_rows() -> list[dict[str, Any]]:
    from hswarm import demo, runtime
    from hswarm.crypto.evaluator import Evaluator
    from hswarm.workloads import logistic_regression

    rows = []
    workload = logistic_regression.build("insecure-ckks", allow_insecure=True)
    circuit = compile_program(workload.program, workload.params)
    ks = keys.generate_keys(workload.params, circuit.rotation_indices)
    inputs = runtime.encrypt_inputs(ks, circuit, workload.inputs)
    started = time.perf_counter()
    runtime.run_circuit(Evaluator(ks.public_context(), sandbox=False), circuit, inputs)
    rows.append(
        {"how": "local evaluation, one process", "workers": 0, "seconds": time.perf_counter() - started}
    )
    for workers, verify in ((1, False), (2, False), (2, True), (3, True)):
        report = demo.run_demo(workers, "insecure-ckks", None, True, verify=verify)
        rows.append(
            {
                "how": f"swarm, {workers} worker process(es), {'verified' if verify else 'unverified'}",
                "workers": workers,
                "seconds": report["job_seconds"],
                "correct": report["correct"],
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", default="1,16")
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--paced", type=float, default=1000.0, help="tasks/s for the paced rows; 0: none")
    parser.add_argument("--idle", type=int, default=0, help="idle workers long-polling meanwhile")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--demo", action="store_true")
    parser.add_argument(
        "--in-process", action="store_true", help="the queue's calls without HTTP, in this process, instead"
    )
    args = parser.parse_args()
    machine = f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    if args.in_process:
        print(f"# queen benchmark, in process (no HTTP)\n\n{machine}\n- one thread, 4 workers in turn\n")
    else:
        print(
            f"# queen benchmark\n\n{machine}\n- queen and {args.workers} protocol workers share "
            f"this machine's cores; trivial tasks; batch 1 posts one result per request, larger "
            f"batches post one results batch per lease; verified = quorum of 2 distinct owners; "
            f"paced = the workers offer that many tasks/s in all, else flat out; submit s = the "
            f"job's submission, before the workers start; seconds, tasks/s and queen CPU from "
            f"then to the job's end; latency of lease calls that granted tasks\n"
        )
    wanted = args.db.split(",")
    pg_url, pg = _postgres() if "postgresql" in wanted else (None, None)
    dbs = [(None, "sqlite")] if "sqlite" in wanted else []
    dbs += [(pg_url, "postgresql")] if pg_url else []
    runs = [
        (int(b), verify, rate)
        for b in args.batch.split(",")
        for rate in ([0.0] + ([args.paced] if args.paced > 0 and int(b) > 1 else []))
        for verify in ((False, True) if args.workers > 1 else (False,))  # a quorum needs 2 owners
    ]
    rows = []
    if args.in_process:
        print("| db | batch | tasks | lease ms/call | results ms/call | ms/task |")
        print("|---|---:|---:|---:|---:|---:|")
    else:
        print(
            "| db | batch | verified | paced | tasks | state | submit s | seconds | tasks/s | "
            "queen CPU ms/task | lease p50/p99 ms | result p50/p99 ms | idle workers' polls |"
        )
        print("|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    try:
        for url, label in dbs if args.in_process else ():
            for r in _in_process(url, label, args.tasks, [int(b) for b in args.batch.split(",")]):
                rows.append(r)
                print(
                    f"| {r['db']} | {r['batch']} | {r['tasks']} | {r['lease_ms_per_call']:.2f} | "
                    f"{r['results_ms_per_call']:.2f} | {r['ms_per_task']:.3f} |",
                    flush=True,
                )
        for url, label in () if args.in_process else dbs:
            for batch, verify, rate in runs:
                r = _throughput(url, label, args.tasks, args.workers, batch, verify, rate, args.idle)
                rows.append(r)
                print(
                    f"| {r['db']} | {r['batch']} | {'yes' if verify else 'no'} | "
                    f"{f'{rate:.0f}/s' if rate else 'flat out'} | {r['tasks']} | {r['state']} | "
                    f"{r['submit_s']:.2f} | {r['seconds']:.2f} | {r['tasks_per_s']:.0f} | "
                    f"{r['queen_cpu_ms_per_task']:.2f} | "
                    f"{r['lease_p50_ms']:.1f} / {r['lease_p99_ms']:.1f} | "
                    f"{r['result_p50_ms']:.1f} / {r['result_p99_ms']:.1f} | {r['idle_polls']} |",
                    flush=True,
                )
    finally:
        if pg:
            admin, name = pg
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()
    report: dict[str, Any] = {
        "machine": {"arch": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
        "workers": args.workers,
        "rows": rows,
    }
    if args.demo:
        print("\n| demo workload (insecure-ckks, 569 patients, 9 tasks) | seconds |\n|---|---:|")
        report["demo"] = _demo_rows()
        for row in report["demo"]:
            print(f"| {row['how']} | {row['seconds']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
