"""``hswarm bench``: bootstrapping throughput, side by side with plain OpenFHE, in one run.

For each workload of ``workloads.bootstrapping`` (a batch of independent bootstraps, a
deep chain), on one key set, it measures:

- **vanilla** — the same steps as plain OpenFHE calls in this process, OpenFHE's own
  threads on every core (``crypto.baseline``): what a user would write without hswarm;
- **local** — hswarm's local evaluator in this process (serialized ciphertexts between
  tasks, the reference the swarm is checked against);
- **swarm** — a real queen and ``k`` worker processes on loopback (``demo.LocalSwarm``),
  each worker with one single-threaded executor pinned to its own core, jobs submitted
  and decrypted by the client SDK: unverified, and verified (quorum 2 with adaptive
  replication, measured in steady state: after a warm-up that earns the workers their
  trust, as a long-running swarm has).

Every job's decrypted output is checked against the plaintext computation, and the
baseline's output bytes against the local evaluator's (CKKS evaluation is
deterministic). It reports bootstraps/s, job latency p50/p99, scaling efficiency
``throughput_k / (k * throughput_1)``, the swarm-vs-vanilla throughput ratio (verified
and not), bytes moved per bootstrap (the queen's blob traffic), key transfer time and
the verification overhead, as a Markdown table, JSON and PNG plots. It asserts nothing
about timings: it prints what it measured and on what.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from hswarm import errors, runtime, wire
from hswarm.crypto import baseline, keys
from hswarm.crypto.evaluator import Evaluator
from hswarm.demo import LocalSwarm
from hswarm.program.circuit import Circuit
from hswarm.program.compiler import compile_program
from hswarm.workloads import bootstrapping

Log = Callable[[str], None]
MAX_WARMUPS = 20  # batch jobs a verified run may spend earning the workers' trust


@dataclasses.dataclass(frozen=True)
class Options:
    quick: bool = False
    preset: str = bootstrapping.DEFAULT_PRESET
    allow_insecure: bool | None = None
    workers: tuple[int, ...] = (1, 2)
    batch: int = 16  # ciphertexts per batch job
    rounds: int = 2  # measured jobs per configuration
    chain: int = 4  # ciphertexts of the chain job
    iterations: int = bootstrapping.CHAIN_ITERATIONS
    verify: bool = True  # also measure the swarm with verification (adaptive replication)
    replicated: bool = False  # also with every task replicated (no adaptive skipping)
    cpus: tuple[int, ...] = ()  # cores for the workers' executors; () = this process's
    work_dir: Path | None = None  # keep the swarms' logs here (default: a temporary directory)

    @classmethod
    def for_run(cls, quick: bool, **given: Any) -> Options:
        sizes: dict[str, Any] = {"batch": 32, "rounds": 2, "chain": 4}
        if not quick:
            sizes = {"batch": 64, "rounds": 3, "chain": 8, "replicated": True}
        return cls(quick=quick, **{**sizes, **{k: v for k, v in given.items() if v is not None}})


@dataclasses.dataclass
class Row:
    workload: str
    run: str  # vanilla | local | swarm
    workers: int  # worker processes (0: one process, OpenFHE's threads)
    threads: int  # OpenMP threads per process
    verified: bool
    bootstraps: int
    seconds: float
    latencies: list[float]
    correct: bool
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    replicated: bool = False  # verified with every task replicated (no adaptive replication)

    @property
    def throughput(self) -> float:
        return self.bootstraps / self.seconds if self.seconds > 0 else 0.0

    @property
    def label(self) -> str:
        if self.run == "swarm":
            kind = " replicated" if self.replicated else " verified" if self.verified else ""
            return f"swarm k={self.workers}{kind}"
        return self.run

    def to_json(self) -> dict[str, Any]:
        p50, p99 = percentiles(self.latencies)
        return {
            "workload": self.workload,
            "run": self.run,
            "label": self.label,
            "workers": self.workers,
            "threads_per_process": self.threads,
            "verified": self.verified,
            "replicated": self.replicated,
            "bootstraps": self.bootstraps,
            "seconds": round(self.seconds, 4),
            "bootstraps_per_s": round(self.throughput, 4),
            "jobs": len(self.latencies),
            "latency_p50_s": round(p50, 4),
            "latency_p99_s": round(p99, 4),
            "correct": self.correct,
            **self.notes,
        }


def percentiles(values: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 (nearest rank); with few values p99 is the largest."""
    if not values:
        return 0.0, 0.0
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "openfhe": importlib.metadata.version("openfhe"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


# -- the runs ------------------------------------------------------------------------------


@dataclasses.dataclass
class _Prepared:
    workload: bootstrapping.Workload
    circuit: Circuit


def _bootstraps(circuit: Circuit) -> int:
    return sum(1 for step in circuit.steps if step.op == "bootstrap")


def _outputs(circuit: Circuit) -> list[int]:
    return [sid for term in circuit.outputs.values() for sid in term.chunks]


def run_vanilla(
    keyset: keys.KeySet, prep: _Prepared, inputs: dict[int, bytes], rounds: int
) -> tuple[Row, dict[int, bytes]]:
    """Plain OpenFHE in this process; returns its row and the last outputs."""
    circuit, workload = prep.circuit, prep.workload
    steps = [(s.id, s.op, s.args, s.attrs) for s in circuit.steps if s.op != "input"]
    latencies, correct, setup, outputs = [], True, 0.0, {}
    for _ in range(rounds):
        done = baseline.run(keyset.public_context(), steps, inputs, _outputs(circuit))
        latencies.append(done.seconds)
        setup = done.setup_seconds
        outputs = done.outputs
        check = workload.check(runtime.decrypt_outputs(keyset, circuit, outputs))
        correct = correct and check["correct"]
    row = Row(
        workload.kind,
        "vanilla",
        0,
        _omp_threads(),
        False,
        _bootstraps(circuit) * rounds,
        sum(latencies),
        latencies,
        correct,
        {"key_load_and_setup_s": round(setup, 3)},
    )
    return row, outputs


def run_local(
    keyset: keys.KeySet, prep: _Prepared, inputs: dict[int, bytes], rounds: int
) -> tuple[Row, dict[int, bytes]]:
    circuit, workload = prep.circuit, prep.workload
    evaluator = Evaluator(keyset.public_context(), sandbox=False)
    latencies, correct, results = [], True, {}
    for _ in range(rounds):
        began = time.perf_counter()
        results = runtime.run_circuit(evaluator, circuit, inputs)
        latencies.append(time.perf_counter() - began)
        correct = correct and workload.check(runtime.decrypt_outputs(keyset, circuit, results))["correct"]
    boots = _bootstraps(circuit) * rounds
    row = Row(workload.kind, "local", 0, _omp_threads(), False, boots, sum(latencies), latencies, correct)
    return row, results


def _omp_threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))


async def _drive_swarm(
    url: str,
    key_path: Path,
    opts: Options,
    preps: dict[str, _Prepared],
    k: int,
    verify: bool,
    replicated: bool,
    log: Log,
) -> list[Row]:
    from hswarm.client import SwarmClient, SwarmConfig

    batch = preps["batch"]
    params = batch.workload.params
    config = SwarmConfig(
        queen_url=url,
        preset=opts.preset,
        preset_overrides={},
        allow_insecure=opts.allow_insecure,
        key_path=key_path,
        verify=verify,
        quorum=2,
        progress=False,
        timeout_s=3600.0,
    )
    assert params.slots
    rows: list[Row] = []
    async with SwarmClient(config) as client, httpx.AsyncClient(base_url=url, timeout=600.0) as http:

        async def job(prep: _Prepared, label: str) -> tuple[float, bool, wire.JobStatus]:
            began = time.perf_counter()
            outputs = await client.run(prep.workload.program, prep.workload.inputs, label=label)
            seconds = time.perf_counter() - began
            assert client.last_job is not None
            return seconds, prep.workload.check(outputs)["correct"], client.last_job

        # Cold: the first job uploads the key set and every worker fetches and loads it.
        cold = bootstrapping.build(
            "batch", ciphertexts=k, preset_name=opts.preset, allow_insecure=opts.allow_insecure, seed=99
        )
        cold_seconds, cold_ok, _ = await job(_Prepared(cold, compile_program(cold.program, params)), "cold")
        context = client.keys.public_context() if client.keys else None
        assert context is not None
        began = time.perf_counter()
        async with http.stream("GET", f"/v1/blobs/{context.digest}") as response:
            response.raise_for_status()
            async for _ in response.aiter_bytes(1 << 20):
                pass
        key_download = time.perf_counter() - began
        warmups = 0
        if verify and not replicated:  # steady state: every worker has earned adaptive replication's trust
            need = _trust_after()
            streaks: list[int] = []
            while warmups < MAX_WARMUPS:
                listed = wire.WorkerList.model_validate((await http.get("/v1/workers")).json())
                streaks = [w.streak for w in listed.workers if w.state == "alive"]
                if len(streaks) >= k and min(streaks) >= need:
                    break
                await job(batch, "warm-up")
                warmups += 1
            log(
                f"    warm-up: {warmups} job(s); verified results in a row per worker: {sorted(streaks)} "
                f"(adaptive replication trusts from {need})"
            )
        for prep in preps.values():
            before = wire.Traffic.model_validate((await http.get("/v1/traffic")).json())
            latencies, correct = [], cold_ok
            replicas = unreplicated = audits = tasks = 0
            wrong_bound = 0.0
            for i in range(opts.rounds):
                seconds, ok, status = await job(prep, f"{prep.workload.kind}-{i}")
                latencies.append(seconds)
                correct = correct and ok
                a = status.assurance
                replicas += a.replicas
                unreplicated += a.unreplicated
                audits += a.audits
                tasks += status.tasks_total
                wrong_bound = max(wrong_bound, a.wrong_bound)
            after = wire.Traffic.model_validate((await http.get("/v1/traffic")).json())
            boots = _bootstraps(prep.circuit) * opts.rounds
            moved = (after.bytes_received - before.bytes_received) + (after.bytes_sent - before.bytes_sent)
            rows.append(
                Row(
                    prep.workload.kind,
                    "swarm",
                    k,
                    1,
                    verify,
                    boots,
                    sum(latencies),
                    latencies,
                    correct,
                    replicated=replicated,
                    notes={
                        "tasks": tasks,
                        "executions": replicas,
                        "executions_per_task": round(replicas / tasks, 3) if tasks else 0.0,
                        "unreplicated": unreplicated,
                        "audits": audits,
                        "wrong_bound": wrong_bound,
                        "bytes_moved_per_bootstrap": round(moved / boots) if boots else 0,
                        "cold_job_s": round(cold_seconds, 3),
                        "key_bytes": context.size,
                        "key_download_s": round(key_download, 3),
                        "warmup_jobs": warmups,
                    },
                )
            )
    return rows


def _trust_after() -> int:
    from hswarm.queen.settings import QueenSettings

    return int(QueenSettings.model_fields["trust_after"].default)


def run_swarm(
    opts: Options,
    preps: dict[str, _Prepared],
    key_path: Path,
    k: int,
    verify: bool,
    root: Path,
    log: Log,
    replicated: bool = False,
) -> list[Row]:
    cores = opts.cpus or tuple(sorted(os.sched_getaffinity(0)))
    where = root / f"swarm-{k}-{'replicated' if replicated else 'verified' if verify else 'unverified'}"
    where.mkdir(parents=True)
    # A 128-bit bootstrapping key set is gigabytes: let the queen take and trial-load it.
    size = key_path.stat().st_size
    env = {
        "HSWARM_MAX_BLOB_BYTES": str(max(1 << 30, 2 * size)),
        "HSWARM_CONTEXT_PROBE_MEMORY_BYTES": str(max(4 << 30, 4 * size)),
        "HSWARM_CONTEXT_PROBE_TIMEOUT_S": str(max(60.0, size / 20e6)),
    }
    if replicated:
        env["HSWARM_MAX_SKIP"] = "0"  # adaptive replication never runs a task alone
    with LocalSwarm(0, root=where, queen_env=env) as swarm:
        for i in range(k):
            swarm.start_worker(i, ["--executors", "1", "--cpus", str(cores[i % len(cores)])])
        _wait_for_workers(swarm.url, k)
        return asyncio.run(_drive_swarm(swarm.url, key_path, opts, preps, k, verify, replicated, log))


def _wait_for_workers(url: str, k: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listed = wire.WorkerList.model_validate(httpx.get(f"{url}/v1/workers", timeout=10).json())
        if sum(1 for w in listed.workers if w.state == "alive") >= k:
            return
        time.sleep(0.2)
    raise errors.HSwarmError(f"cannot run the bench: {k} workers did not register in {timeout_s:g} s")


# -- the whole bench -------------------------------------------------------------------------


def run_bench(opts: Options, log: Log = print) -> dict[str, Any]:
    if opts.work_dir is not None and opts.work_dir.exists() and any(opts.work_dir.iterdir()):
        # a queen started on an earlier run's data would resume its jobs and workers
        raise errors.HSwarmError(
            f"cannot run the bench in {opts.work_dir}: it holds an earlier run; choose an empty directory"
        )
    started = time.perf_counter()
    preps: dict[str, _Prepared] = {}
    for kind, count in (("batch", opts.batch), ("chain", opts.chain)):
        workload = bootstrapping.build(
            kind,
            ciphertexts=count,
            preset_name=opts.preset,
            allow_insecure=opts.allow_insecure,
            iterations=opts.iterations,
        )
        preps[kind] = _Prepared(workload, compile_program(workload.program, workload.params))
    params = preps["batch"].workload.params
    log(f"hswarm bench: {params.label}")
    began = time.perf_counter()
    indices = sorted({i for p in preps.values() for i in p.circuit.rotation_indices})
    keyset = keys.generate_keys(params, indices)
    keygen = time.perf_counter() - began
    context_bytes = keyset.public_context().size
    log(f"  keys generated in {keygen:.1f} s; evaluation keys {context_bytes / 2**20:.1f} MiB")
    rows: list[Row] = []
    identical = True
    with tempfile.TemporaryDirectory(prefix="hswarm-bench-") as tmp:
        root = opts.work_dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        key_path = root / "client.keys"
        keyset.save(key_path)
        for prep in preps.values():
            log(f"  {prep.workload.kind}: vanilla OpenFHE ({_omp_threads()} thread(s)) ...")
            inputs = runtime.encrypt_inputs(keyset, prep.circuit, prep.workload.inputs)
            vanilla, vanilla_out = run_vanilla(keyset, prep, inputs, opts.rounds)
            log(f"    {vanilla.throughput:.3f} bootstraps/s")
            log(f"  {prep.workload.kind}: hswarm local evaluator ...")
            local, local_out = run_local(keyset, prep, inputs, 1)
            log(f"    {local.throughput:.3f} bootstraps/s")
            identical = identical and all(vanilla_out[s] == local_out[s] for s in _outputs(prep.circuit))
            rows += [vanilla, local]
        for k in opts.workers:
            log(f"  swarm: {k} worker(s), unverified ...")
            rows += _logged(run_swarm(opts, preps, key_path, k, False, root, log), log)
        verified_k = [k for k in opts.workers if k >= 2]
        if opts.verify and verified_k:
            k = max(verified_k)
            log(f"  swarm: {k} worker(s), verified (quorum 2, adaptive replication) ...")
            rows += _logged(run_swarm(opts, preps, key_path, k, True, root, log), log)
            if opts.replicated:
                log(f"  swarm: {k} worker(s), every task replicated (quorum 2) ...")
                rows += _logged(run_swarm(opts, preps, key_path, k, True, root, log, replicated=True), log)
    report = summarize(opts, rows, params, keygen, context_bytes, identical)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _logged(rows: list[Row], log: Log) -> list[Row]:
    for row in rows:
        log(f"    {row.workload}: {row.throughput:.3f} bootstraps/s, {len(row.latencies)} job(s)")
    return rows


def summarize(
    opts: Options, rows: list[Row], params: Any, keygen: float, context_bytes: int, identical: bool
) -> dict[str, Any]:
    def find(
        workload: str, run: str, k: int = 0, verified: bool = False, replicated: bool = False
    ) -> Row | None:
        for row in rows:
            if (row.workload, row.run, row.workers, row.verified, row.replicated) == (
                workload,
                run,
                k,
                verified,
                replicated,
            ):
                return row
        return None

    vanilla = find("batch", "vanilla")
    one = find("batch", "swarm", 1)
    efficiency = {}
    for k in opts.workers:
        row = find("batch", "swarm", k)
        if one is not None and row is not None and k > 1 and one.throughput > 0:
            efficiency[str(k)] = round(row.throughput / (k * one.throughput), 3)
    top = max(opts.workers)
    unverified = find("batch", "swarm", top)
    verified = find("batch", "swarm", top, True)
    replicated = find("batch", "swarm", top, True, True)

    def ratio(row: Row | None) -> float | None:
        if row is None or vanilla is None or vanilla.throughput == 0:
            return None
        return round(row.throughput / vanilla.throughput, 3)

    overhead = None
    if unverified is not None and verified is not None and verified.throughput > 0:
        overhead = round(unverified.throughput / verified.throughput, 3)
    return {
        "benchmark": "hswarm bench: CKKS bootstrapping, plain OpenFHE vs hswarm local vs swarm",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "params": params.label,
        "insecure": params.insecure,
        "quick": opts.quick,
        "options": {k: v for k, v in dataclasses.asdict(opts).items() if k not in ("cpus", "work_dir")},
        "keygen_s": round(keygen, 3),
        "key_bytes": context_bytes,
        "all_correct": all(row.correct for row in rows),
        "baseline_bytes_identical": identical,
        "rows": [row.to_json() for row in rows],
        "scaling_efficiency": efficiency.get(str(top)) if top > 1 else None,
        "scaling_efficiency_by_workers": efficiency,
        "swarm_vs_vanilla_throughput": ratio(unverified),
        "swarm_vs_vanilla_throughput_verified": ratio(verified),
        "swarm_vs_vanilla_throughput_replicated": ratio(replicated),
        "verification_overhead": overhead,
        "workers_compared": top,
    }


# -- output ----------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    vanilla = {r["workload"]: r["bootstraps_per_s"] for r in report["rows"] if r["run"] == "vanilla"}
    lines = [
        f"Parameters: {report['params']}; machine: {report['machine']['cpu']}, "
        f"{report['machine']['cores']} cores; openfhe {report['machine']['openfhe']}",
        "",
        "| workload | run | bootstraps | seconds | bootstraps/s | vs vanilla | job p50 s | job p99 s "
        "| executions/task | wrong-result bound | bytes/bootstrap | correct |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        base = vanilla.get(r["workload"]) or 0
        versus = f"{r['bootstraps_per_s'] / base:.2f}x" if base else "-"
        lines.append(
            f"| {r['workload']} | {r['label']} | {r['bootstraps']} | {r['seconds']:.2f} | "
            f"{r['bootstraps_per_s']:.3f} | {versus} | {r['latency_p50_s']:.2f} | {r['latency_p99_s']:.2f} | "
            f"{r.get('executions_per_task', '-')} | {r.get('wrong_bound', '-')} | "
            f"{r.get('bytes_moved_per_bootstrap', '-')} | "
            f"{'yes' if r['correct'] else 'NO'} |"
        )
    lines += [
        "",
        f"scaling efficiency (batch, unverified): {report['scaling_efficiency_by_workers'] or 'n/a'}",
        f"swarm vs vanilla throughput at k={report['workers_compared']}: "
        f"{report['swarm_vs_vanilla_throughput']} unverified, "
        f"{report['swarm_vs_vanilla_throughput_verified']} verified (adaptive replication), "
        f"{report['swarm_vs_vanilla_throughput_replicated']} with every task replicated; "
        f"verification overhead {report['verification_overhead']}",
        f"keys: {report['key_bytes'] / 2**20:.1f} MiB, generated in {report['keygen_s']:.1f} s; "
        f"baseline bytes identical to hswarm's: {report['baseline_bytes_identical']}",
    ]
    swarm = [r for r in report["rows"] if r["run"] == "swarm"]
    if swarm:
        lines.append(
            f"key download per worker: {swarm[0]['key_download_s']:.2f} s; "
            f"first (cold) job: {swarm[0]['cold_job_s']:.2f} s"
        )
    if report["insecure"]:
        lines.append("INSECURE test parameters: figures are for comparison on this machine only.")
    return "\n".join(lines)


def plot(report: dict[str, Any], prefix: Path) -> list[Path]:
    """Two PNGs: batch throughput per run, and swarm throughput against workers."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError as exc:
        raise errors.HSwarmError(
            "cannot draw the plots: matplotlib is missing; pip install 'hswarm[bench]' or pass --no-plots"
        ) from exc
    batch = [r for r in report["rows"] if r["workload"] == "batch"]
    paths = []
    fig, ax = pyplot.subplots(figsize=(8, 4))
    ax.bar([r["label"] for r in batch], [r["bootstraps_per_s"] for r in batch], color="#4c72b0")
    ax.set_ylabel("bootstraps / s")
    ax.set_title(f"Batch bootstrapping, {report['machine']['cores']} cores\n{report['params']}", fontsize=9)
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    paths.append(prefix.with_name(prefix.name + "-throughput.png"))
    fig.savefig(paths[-1], dpi=120)
    pyplot.close(fig)
    unverified = (r for r in batch if r["run"] == "swarm" and not r["verified"])
    swarm = sorted(unverified, key=lambda r: r["workers"])
    if swarm:
        fig, ax = pyplot.subplots(figsize=(6, 4))
        ks = [r["workers"] for r in swarm]
        ax.plot(ks, [r["bootstraps_per_s"] for r in swarm], "o-", label="swarm (measured)")
        one = swarm[0]["bootstraps_per_s"] / swarm[0]["workers"]
        ax.plot(ks, [one * k for k in ks], "--", color="grey", label="linear from k=1")
        vanilla = [r["bootstraps_per_s"] for r in batch if r["run"] == "vanilla"]
        if vanilla:
            ax.axhline(vanilla[0], color="#c44e52", label="vanilla OpenFHE, all cores")
        ax.set_xlabel("workers (one single-threaded executor each)")
        ax.set_ylabel("bootstraps / s")
        ax.legend()
        fig.tight_layout()
        paths.append(prefix.with_name(prefix.name + "-scaling.png"))
        fig.savefig(paths[-1], dpi=120)
        pyplot.close(fig)
    return paths


def write_report(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
