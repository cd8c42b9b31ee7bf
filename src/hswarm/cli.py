"""The ``hswarm`` command line.

Commands so far: ``example`` runs a ready-made workload end to end in this process
(keys, encryption, compiled tasks evaluated locally with real OpenFHE, decryption, a
check against plaintext) and ``presets`` lists parameter presets. The queen, workers
and the swarm demo arrive with the swarm layer. Errors from hswarm are printed as one
line and exit with status 2; a wrong result exits with status 1.
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
        "features": len(workload.inputs),
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
        f"  program      {len(workload.inputs)} encrypted feature columns -> {len(circuit.tasks)} task(s), "
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


def _presets(_: argparse.Namespace) -> int:
    from hswarm.crypto.params import PRESETS, Params

    for name, literal in PRESETS.items():
        params = Params.from_literal({**literal, "preset": name}, allow_insecure=True)
        print(f"{name:26} {params.label}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hswarm", description=__doc__.splitlines()[0])
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

    presets = commands.add_parser("presets", help="list parameter presets")
    presets.set_defaults(run=_presets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except errors.HSwarmError as exc:
        print(f"hswarm: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
