"""The ``hswarm`` command line.

- ``hswarm demo`` — the main job: a queen and local workers on loopback run the
  encrypted logistic-regression inference; the client checks the decrypted result.
- ``hswarm queen`` / ``hswarm worker`` — the services, for several machines.
- ``hswarm status`` — workers and jobs of a queen, as tables.
- ``hswarm example`` — a workload evaluated locally in this process (the reference).
- ``hswarm presets`` — the parameter presets.
- ``hswarm chaos run`` — a chaos scenario on real processes (liars, crashes, restarts).
- ``hswarm bench`` — bootstrapping throughput: plain OpenFHE vs the local evaluator vs the swarm.
- ``hswarm simulate`` — a discrete-event simulation of a large swarm (simulated figures).

Errors from hswarm are printed as one line and exit with status 2; a wrong result exits
with status 1. Handlers parse arguments and call one function; they hold no logic.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from hswarm import errors


def _example(args: argparse.Namespace) -> int:
    from hswarm import runtime
    from hswarm.crypto.evaluator import Evaluator
    from hswarm.crypto.keys import generate_keys
    from hswarm.program import compile_program
    from hswarm.workloads import logistic_regression

    clock = time.perf_counter
    started = clock()
    workload = logistic_regression.build(args.preset, args.rows, allow_insecure=args.allow_insecure)
    circuit = compile_program(workload.program, workload.params)
    timings: dict[str, float] = {}

    t = clock()
    keys = generate_keys(workload.params, circuit.rotation_indices)
    timings["keygen"] = clock() - t
    t = clock()
    inputs = runtime.encrypt_inputs(keys, circuit, workload.inputs)
    timings["encrypt"] = clock() - t
    t = clock()
    evaluator = Evaluator(keys.public_context(), sandbox=False)  # bytes made in this process
    results = runtime.run_circuit(evaluator, circuit, inputs)
    timings["evaluate"] = clock() - t
    t = clock()
    outputs = runtime.decrypt_outputs(keys, circuit, results)
    timings["decrypt"] = clock() - t
    check = workload.check(outputs)
    seconds = clock() - started

    params = workload.params
    report: dict[str, Any] = {
        "workload": "logistic-regression (breast-cancer, scikit-learn)",
        "params": params.label,
        "insecure": params.insecure,
        "ring_dim": keys.cc.GetRingDimension(),
        "rows": check["rows"],
        "ciphertexts": len(workload.inputs),
        "tasks": len(circuit.tasks),
        "depth": circuit.depth,
        "bootstraps": circuit.bootstraps,
        "sigmoid_interval": list(workload.interval),
        "public_context_bytes": keys.public_context().size,
        "agreement": check["agreement"],
        "max_probability_error": check["max_probability_error"],
        "plaintext_model_accuracy": workload.model_accuracy,
        "correct": check["correct"],
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "seconds": round(seconds, 3),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "openfhe": metadata.version("openfhe"),
    }
    print(f"hswarm example: encrypted logistic-regression inference on {check['rows']} patients")
    print(f"  parameters   {params.label}, ring dimension {report['ring_dim']}")
    print(
        f"  program      {len(workload.inputs)} ciphertexts of {workload.params.slots // 32} patients "
        f"x 32 feature slots -> {len(circuit.tasks)} task(s), "
        f"depth {circuit.depth}, {circuit.bootstraps} bootstrap(s)"
    )
    print(f"  keys         {report['public_context_bytes'] / 1e6:.1f} MB public context")
    print("  time         " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    print(
        f"  agreement    {check['agreement']:.2%} of predictions match the plaintext model "
        f"(max probability error {check['max_probability_error']:.1e})"
    )
    print(f"  result       {'CORRECT' if check['correct'] else 'WRONG'} in {seconds:.1f}s")
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if check["correct"] else 1


def _queen(args: argparse.Namespace) -> int:
    from hswarm.queen.app import serve
    from hswarm.queen.settings import QueenSettings

    given = {
        "host": args.host,
        "port": args.port,
        "db_url": args.db,
        "data_dir": args.data,
        "access_log": args.access_log,
    }
    serve(QueenSettings(**{k: v for k, v in given.items() if v is not None}))
    return 0


def _executors(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of executors or 'auto', got {text!r}") from None


def _worker(args: argparse.Namespace) -> int:
    from hswarm.worker.settings import WorkerSettings
    from hswarm.worker.supervisor import run

    given = {
        "queen_url": args.queen,
        "token": args.token,
        "role": args.role,
        "owner": args.owner,
        "executors": args.executors,
        "cache_bytes": args.cache_bytes,
        "name": args.name,
        "cache_dir": args.cache_dir,
        "fault": args.fault,
        "cpus": args.cpus,
        "memory_budget": args.memory_budget,
    }
    chosen = {k: v for k, v in given.items() if v is not None}
    if args.executors == "auto":
        chosen["executors"] = None
    return run(WorkerSettings(**chosen))


def _demo(args: argparse.Namespace) -> int:
    from hswarm import demo

    allow = args.allow_insecure or None
    if args.preset.startswith("insecure-") and allow is None:
        allow = True  # the demo's own default: said loudly below and in the report
    print(
        f"hswarm demo: starting a queen, {args.workers} honest workers and {args.byzantine} "
        f"lying ({args.fault}) on loopback ...",
        flush=True,
    )
    report = demo.run_demo(args.workers, args.preset, args.slots, allow, args.byzantine, args.fault)
    print(f"  parameters   {report['params']}")
    if report["insecure"]:
        print("               (test-size ring for a quick demo; --preset ckks runs it at 128-bit security)")
    print(f"  swarm        {report['workers']} workers, {report['tasks']} tasks over HTTP (SQLite queen)")
    a = report["assurance"]
    print(
        f"  verified     {a['replicas']} replica results for {report['tasks']} tasks (quorum {a['quorum']}, "
        f"f={a['faults']}); {a['disagreements']} disputed, {a['lies']} lie(s) caught, "
        f"{len(a['quarantined'])} worker(s) quarantined"
    )
    print(
        f"  agreement    {report['agreement']:.2%} of {report['rows']} predictions match the plaintext model"
    )
    print(f"  time         {report['seconds']:.1f}s in all, {report['job_seconds']:.1f}s for the job")
    print(f"  result       {'CORRECT' if report['correct'] else 'WRONG'}")
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["correct"] else 1


def _status(args: argparse.Namespace) -> int:
    import httpx

    from hswarm import wire

    try:
        workers = wire.WorkerList.model_validate(httpx.get(f"{args.queen}/v1/workers", timeout=10).json())
        jobs = wire.JobList.model_validate(httpx.get(f"{args.queen}/v1/jobs", timeout=10).json())
    except (httpx.HTTPError, ValueError) as exc:
        raise errors.HSwarmError(f"cannot read the queen's status at {args.queen}: {exc}") from exc
    print(f"{'WORKER':24} {'NAME':16} {'OWNER':12} {'ROLE':9} {'STATE':8} {'LEASES':>6} {'DONE':>6}")
    for w in workers.workers:
        print(
            f"{w.worker_id:24.24} {w.name:16.16} {w.owner:12.12} {w.role:9} {w.state:8} "
            f"{w.leases:6} {w.done:6}"
        )
    print()
    print(f"{'JOB':24} {'LABEL':24} {'STATE':8} {'TASKS':>11}")
    for j in jobs.jobs:
        print(f"{j.job_id:24.24} {j.label:24.24} {j.state:8} {j.tasks_done:5}/{j.tasks_total:<5}")
    return 0


def _presets(_: argparse.Namespace) -> int:
    from hswarm.crypto.params import PRESETS, Params

    for name, literal in PRESETS.items():
        params = Params.from_literal({**literal, "preset": name}, allow_insecure=True)
        print(f"{name:26} {params.label}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hswarm import bench
    from hswarm.worker.settings import parse_cpus

    allow = args.allow_insecure or None
    if args.preset.startswith("insecure-") and allow is None:
        allow = True  # labelled INSECURE in the table and the report
    try:
        workers = tuple(int(k) for k in args.workers.split(","))
        cpus = parse_cpus(args.cpus) if args.cpus else ()
    except ValueError as exc:
        print(f"hswarm bench: cannot read --workers or --cpus: {exc}", file=sys.stderr)
        return 2
    if not workers or min(workers) < 1:
        print("hswarm bench: --workers needs counts >= 1, e.g. 1,2", file=sys.stderr)
        return 2
    opts = bench.Options.for_run(
        args.quick,
        preset=args.preset,
        allow_insecure=allow,
        workers=workers,
        batch=args.batch,
        rounds=args.rounds,
        chain=args.chain,
        verify=not args.no_verify,
        replicated=True if args.replicated else None,
        cpus=cpus,
        work_dir=Path(args.work_dir) if args.work_dir else None,
    )
    try:
        report = bench.run_bench(opts, log=lambda line: print(line, flush=True))
    except errors.HSwarmError as exc:
        print(f"hswarm bench: {exc}", file=sys.stderr)
        return 2
    print()
    print(bench.markdown(report))
    if args.report:
        path = Path(args.report)
        bench.write_report(report, path)
        print(f"report: {path}")
        if not args.no_plots:
            for png in bench.plot(report, path.with_suffix("")):
                print(f"plot: {png}")
    return 0 if report["all_correct"] and report["baseline_bytes_identical"] else 1


def _chaos(args: argparse.Namespace) -> int:
    from hswarm import chaos

    if args.action == "list":
        for name, scenario in chaos.SCENARIOS.items():
            print(f"{name:20} {scenario.about}")
        return 0
    print(f"hswarm chaos: running {args.scenario} and its fault-free twin on loopback ...", flush=True)
    report = chaos.run(args.scenario, seed=args.seed)
    print(chaos.summary(report))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if chaos.passed(report) else 1


def _simulate(args: argparse.Namespace) -> int:
    from hswarm.swarm import quorum, routing, simulator

    policy = quorum.QuorumPolicy(faults=args.faults, max_replicas=max(7, 2 * args.faults + 1))
    strategies = routing.STRATEGIES if args.strategy == "all" else (args.strategy,)
    results = [
        simulator.simulate(
            simulator.SimConfig(
                workers=args.workers,
                byzantine=args.byzantine,
                jobs=args.jobs,
                tasks_per_job=args.tasks,
                strategy=strategy,
                seed=args.seed,
                quorum=policy,
            )
        )
        for strategy in strategies
    ]
    print(simulator.format_report(results[0]) if len(results) == 1 else simulator.format_comparison(results))
    if args.report:
        Path(args.report).write_text(json.dumps({"simulated": True, "runs": results}, indent=2) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hswarm", description="Homomorphic Swarm: verified FHE computation over untrusted workers."
    )
    parser.add_argument("--version", action="version", version=metadata.version("hswarm"))
    commands = parser.add_subparsers(dest="command", required=True)

    example = commands.add_parser("example", help="run a ready-made encrypted workload locally")
    example.add_argument("workload", choices=["logistic-regression"])
    example.add_argument("--preset", default="ckks", help="parameter preset (default: ckks, 128-bit)")
    example.add_argument("--rows", type=int, default=None, help="first N patients only")
    example.add_argument("--report", help="write a JSON report to this path")
    example.add_argument(
        "--allow-insecure",
        action="store_true",
        default=None,
        help="allow insecure-* presets (tests and demos only)",
    )
    example.set_defaults(run=_example)

    demo = commands.add_parser("demo", help="run the encrypted workload on a local swarm (the main job)")
    demo.add_argument("--workers", type=int, default=3, help="honest local worker processes (default 3)")
    demo.add_argument(
        "--byzantine", type=int, default=1, help="extra workers that lie on purpose (default 1; 0: none)"
    )
    demo.add_argument(
        "--fault", default="wrong-value", help="what the lying workers do (default wrong-value; see worker)"
    )
    demo.add_argument("--report", help="write a JSON report to this path")
    demo.add_argument("--preset", default="insecure-ckks", help="parameter preset (default insecure-ckks)")
    demo.add_argument("--slots", type=int, default=None, help="slots per ciphertext (fewer: more tasks)")
    demo.add_argument("--allow-insecure", action="store_true", help="allow insecure-* presets")
    demo.set_defaults(run=_demo)

    queen = commands.add_parser("queen", help="run the coordinator")
    queen.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    queen.add_argument("--port", type=int, default=None, help="port (default 8470)")
    queen.add_argument("--db", default=None, help="database URL (default SQLite in the data dir)")
    queen.add_argument("--data", default=None, help="data directory (blobs, token, SQLite)")
    queen.add_argument(
        "--access-log",
        action="store_true",
        default=None,
        help="log a line per HTTP request (off by default: workers make many; HSWARM_ACCESS_LOG=1)",
    )
    queen.set_defaults(run=_queen)

    worker = commands.add_parser("worker", help="run a worker that pulls tasks from a queen")
    worker.add_argument("--queen", required=True, help="queen URL, e.g. http://127.0.0.1:8470")
    worker.add_argument("--token", default=None, help="enrollment token (or HSWARM_TOKEN)")
    worker.add_argument("--role", choices=["worker", "guardian", "scout"], default=None)
    worker.add_argument("--owner", default=None, help="owner label (replicas go to distinct owners)")
    worker.add_argument(
        "--executors",
        type=_executors,
        default=None,
        help="FHE executor processes, or 'auto': one single-threaded executor per core when memory "
        "holds that many copies of a key set, fewer with more threads otherwise (default 1)",
    )
    worker.add_argument(
        "--cpus", default=None, help="cores the executors may use, e.g. 0-3,8; each executor is pinned"
    )
    worker.add_argument(
        "--memory-budget",
        type=int,
        default=None,
        help="bytes of memory for key sets (default 80%% of the machine's); the queen sends no key "
        "set that needs more",
    )
    worker.add_argument("--cache-bytes", type=int, default=None, help="disk cache budget in bytes")
    worker.add_argument("--cache-dir", default=None, help="disk cache directory")
    worker.add_argument("--name", default=None, help="worker name")
    worker.add_argument(
        "--fault",
        default=None,
        metavar="MODE",
        help="fault injection, tests and chaos only (or HSWARM_FAULT): garbage, wrong-value, replay, "
        "bitflip, slow[:SECONDS], crash, collude:GROUP, sleeper:N; the queen must allow faulty workers",
    )
    worker.set_defaults(run=_worker)

    bench = commands.add_parser(
        "bench", help="bootstrapping throughput: plain OpenFHE vs hswarm local vs the swarm (real processes)"
    )
    bench.add_argument("--quick", action="store_true", help="smaller batches and fewer rounds (minutes)")
    bench.add_argument("--report", help="write JSON here, and PNG plots beside it")
    bench.add_argument("--no-plots", action="store_true", help="with --report: write no PNG plots")
    bench.add_argument("--workers", default="1,2", help="swarm sizes to measure, e.g. 1,2,4 (default 1,2)")
    bench.add_argument("--cpus", default=None, help="cores for the workers, one each in turn (default: all)")
    bench.add_argument(
        "--preset", default="insecure-ckks-bootstrap", help="parameters (default insecure-ckks-bootstrap)"
    )
    bench.add_argument("--allow-insecure", action="store_true", help="allow insecure-* presets")
    bench.add_argument("--batch", type=int, default=None, help="ciphertexts per batch job (32 quick, 64)")
    bench.add_argument("--rounds", type=int, default=None, help="measured jobs per run (2 quick, 3)")
    bench.add_argument("--chain", type=int, default=None, help="ciphertexts in the chain job (4 quick, 8)")
    bench.add_argument("--no-verify", action="store_true", help="skip the verified swarm runs")
    bench.add_argument(
        "--replicated",
        action="store_true",
        help="also run every task replicated, no adaptive replication (on in a full run)",
    )
    bench.add_argument("--work-dir", default=None, help="keep the swarms' logs and keys here")
    bench.set_defaults(run=_bench)

    chaos = commands.add_parser("chaos", help="run a chaos scenario on a local swarm (real processes)")
    chaos.add_argument("action", choices=["run", "list"], help="run a scenario, or list them")
    chaos.add_argument("--scenario", default="byzantine-threshold", help="scenario name (see: chaos list)")
    chaos.add_argument("--seed", type=int, default=7, help="seed for data and chaos (default 7)")
    chaos.add_argument("--report", help="write a JSON report to this path")
    chaos.set_defaults(run=_chaos)

    status = commands.add_parser("status", help="show a queen's workers and jobs")
    status.add_argument("--queen", default="http://127.0.0.1:8470")
    status.set_defaults(run=_status)

    presets = commands.add_parser("presets", help="list parameter presets")
    presets.set_defaults(run=_presets)

    from hswarm.swarm.routing import STRATEGIES

    simulate = commands.add_parser(
        "simulate", help="simulate a large swarm in virtual time (simulated figures, no FHE is run)"
    )
    simulate.add_argument("--workers", type=int, default=100, help="simulated workers (default 100)")
    simulate.add_argument("--byzantine", type=float, default=0.0, help="Byzantine fraction (default 0)")
    simulate.add_argument(
        "--faults", type=int, default=1, help="f, the Byzantine workers the quorum must outvote (default 1)"
    )
    simulate.add_argument(
        "--strategy", choices=[*STRATEGIES, "all"], default="all", help="routing (default all)"
    )
    simulate.add_argument("--jobs", type=int, default=20, help="jobs, all submitted at once (default 20)")
    simulate.add_argument("--tasks", type=int, default=200, help="tasks per job (default 200)")
    simulate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    simulate.add_argument("--report", help="write the results as JSON to this path")
    simulate.set_defaults(run=_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pydantic import ValidationError

    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except errors.HSwarmError as exc:
        print(f"hswarm: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:  # settings from flags or HSWARM_* variables
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"hswarm: invalid settings: {problems}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
