"""Evaluation is deterministic: every operation of the catalogue, and a whole compiled
program, gives byte-identical output ciphertexts in this process, in a fresh process with
the library's default thread count, and in a fresh process with ``OMP_NUM_THREADS=1``.

Quorum on SHA-256 digests of worker results relies on this (DESIGN.md, "FHE facts"). The
fresh processes run ``determinism_worker.py``; it gets the public context and input
ciphertexts as files, as a swarm worker would, never the secret key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hswarm import runtime
from hswarm.crypto import evaluator, keys, opcodes, params, public
from hswarm.program import Circuit, Program, compile_program, matvec

WORKER = Path(__file__).with_name("determinism_worker.py")
WORKER_TIMEOUT_S = 300
OP_PRESETS = ("insecure-ckks", "insecure-bfv", "insecure-bgv")
BOOTSTRAP_PRESET = "insecure-ckks-bootstrap"
# Thread settings of the worker process: None leaves OMP_NUM_THREADS unset (OpenMP's default).
THREADS = {"default-threads": None, "omp1": "1"}
MATRIX = [[1, -2, 3, 0], [0, 1, 0, 2], [2, 2, 2, 2], [-1, 0, 1, 0]]


@dataclasses.dataclass(frozen=True)
class OpCase:
    name: str
    op: str
    attrs: dict[str, Any]
    operands: tuple[str, ...]


def _attrs(op: str, exact: bool) -> dict[str, Any]:
    vector = [3, -1, 4, 1, -5, 9, 2, -6] if exact else [0.5, -0.25, 0.75, 0.125, -0.5, 0.3, -0.9, 0.2]
    table: dict[str, dict[str, Any]] = {
        "add": {},
        "sub": {},
        "mul": {},
        "negate": {},
        "add_plain": {"values": vector},
        "sub_plain": {"values": vector},
        "mul_plain": {"values": vector},
        "add_scalar": {"value": 7 if exact else 0.75},
        "mul_scalar": {"value": 3 if exact else 1.5},
        "rotate": {"steps": 3},
        "sum_slots": {},
        "dot": {},
        "dot_plain": {"values": vector},
        "matvec": {"matrix": MATRIX},
        "poly": {"coefficients": [1, 0, 2, 1] if exact else [0.5, -1.0, 0.25, 0.125]},
        "chebyshev": {"coefficients": [0.5, 0.3, -0.2, 0.1, 0.05, -0.01], "lo": -2.0, "hi": 2.0},
        "bootstrap": {},
    }
    return table[op]


def _cases(preset: str) -> list[OpCase]:
    """The operations checked under ``preset``: bootstrap on the bootstrapping preset (on a
    ciphertext with levels used), every other op the scheme supports on the plain ones."""
    p = params.preset(preset, allow_insecure=True)
    if p.can_bootstrap:
        return [OpCase("bootstrap", "bootstrap", {}, ("deep.ct",))]
    out = []
    for op, spec in opcodes.SPECS.items():
        if p.scheme in spec.schemes and op != "bootstrap":
            out.append(OpCase(op, op, _attrs(op, p.exact), ("a.ct", "b.ct")[: spec.operands]))
    return out


OP_CASES = [
    pytest.param(preset, case.name, id=f"{preset}-{case.name}")
    for preset in (*OP_PRESETS, BOOTSTRAP_PRESET)
    for case in _cases(preset)
]


@dataclasses.dataclass(frozen=True)
class WorkerRun:
    outputs: dict[str, bytes]
    sha256: dict[str, str]


def _worker_env(threads: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS" and not k.startswith("HSWARM_")}
    if THREADS[threads] is not None:
        env["OMP_NUM_THREADS"] = THREADS[threads]
    return env


def _run_worker(job_dir: Path, threads: str) -> WorkerRun:
    out_dir = job_dir / f"out-{threads}"
    out_dir.mkdir()
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(job_dir), str(out_dir)],
        env=_worker_env(threads),
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"worker exited with {proc.returncode}:\n{proc.stderr[-4000:]}"
    summary = json.loads((out_dir / "result.json").read_text())
    assert summary["omp_num_threads"] == THREADS[threads], "the worker did not get the thread setting"
    outputs = {name: (out_dir / f"{name}.ct").read_bytes() for name in summary["sha256"]}
    return WorkerRun(outputs, summary["sha256"])


def _write_job(
    job_dir: Path, bundle: public.PublicContext, files: dict[str, bytes], job: dict[str, Any]
) -> None:
    job_dir.mkdir()
    (job_dir / "context.bin").write_bytes(bundle.to_bytes())
    for name, data in files.items():
        (job_dir / name).write_bytes(data)
    job = {"context": "context.bin", "context_digest": bundle.digest, **job}
    (job_dir / "job.json").write_text(json.dumps(job, indent=1))


def _assert_same_bytes(got: bytes, want: bytes, what: str) -> None:
    same = got == want
    if not same:
        n = min(len(got), len(want))
        first = next((i for i in range(n) if got[i] != want[i]), n)
        pytest.fail(f"{what}: {len(got)} vs {len(want)} bytes, first difference at byte {first}")


class OpScenario:
    """Keys, input ciphertexts and in-process outputs of every case under one preset."""

    def __init__(self, preset: str, job_dir: Path) -> None:
        self.params = params.preset(preset, allow_insecure=True)
        self.cases = {case.name: case for case in _cases(preset)}
        slots = self.params.slots
        rotations = set().union(
            *(opcodes.rotation_indices(c.op, slots, c.attrs) for c in self.cases.values())
        )
        self.keys = keys.generate_keys(self.params, rotations)
        self.bundle = self.keys.public_context()
        rng = np.random.default_rng(7)
        if self.params.exact:
            self.values = {name: rng.integers(-50, 50, slots) for name in ("a.ct", "b.ct")}
        else:
            self.values = {name: rng.uniform(-1, 1, slots) for name in ("a.ct", "b.ct")}
        self.inputs = {name: self.keys.encrypt(v)[0] for name, v in self.values.items()}
        ev = evaluator.Evaluator(self.bundle)
        if self.params.can_bootstrap:
            # OpenFHE's bootstrap of a fresh ciphertext returns it unchanged: use levels first.
            deep = self.inputs["a.ct"]
            for _ in range(3):
                deep = ev.evaluate("mul", [deep, deep], {})
            self.inputs["deep.ct"] = deep
            self.values["deep.ct"] = self.values["a.ct"] ** 8
        self.evaluator = ev
        self.expected = self.evaluate_all(ev)
        self.job_dir = job_dir
        ops = [dataclasses.asdict(c) for c in self.cases.values()]
        _write_job(job_dir, self.bundle, self.inputs, {"ops": ops})
        self._runs: dict[str, WorkerRun] = {}

    def evaluate_all(self, ev: evaluator.Evaluator) -> dict[str, bytes]:
        return {
            c.name: ev.evaluate(c.op, [self.inputs[o] for o in c.operands], c.attrs)
            for c in self.cases.values()
        }

    def worker_run(self, threads: str) -> WorkerRun:
        if threads not in self._runs:
            self._runs[threads] = _run_worker(self.job_dir, threads)
        return self._runs[threads]


class ProgramScenario:
    """A compiled program run task by task in this process with ``runtime.run_circuit``."""

    def __init__(self, preset: str, job_dir: Path) -> None:
        self.params = params.preset(preset, allow_insecure=True)
        prog = Program()
        rng = np.random.default_rng(3)
        if self.params.can_bootstrap:
            x = prog.input("x", self.params.slots)
            y = x
            for _ in range(4):  # 8 levels on a depth-4 preset: the compiler inserts a bootstrap
                y = 0.5 * (y * y) + 0.25
            prog.output("y", y)
            values = {"x": rng.uniform(-1, 1, self.params.slots)}
        else:
            x = prog.input("x", 1500)  # two chunks of 1024 slots
            w = prog.input("w", 1500)
            z = prog.input("z", 16)
            prog.output("y", (x * x + 3) * w)
            prog.output("s", (x * w).sum())
            prog.output("r", (z * z - 1).rotate(3))
            prog.output("m", matvec(rng.uniform(-1, 1, (4, 16)), z).sigmoid(degree=13))
            values = {name: rng.uniform(-1, 1, n) for name, n in (("x", 1500), ("w", 1500), ("z", 16))}
        self.circuit = compile_program(prog, self.params)
        self.keys = keys.generate_keys(self.params, self.circuit.rotation_indices)
        inputs = runtime.encrypt_inputs(self.keys, self.circuit, values)
        ev = evaluator.Evaluator(self.keys.public_context())
        self.results = runtime.run_circuit(ev, self.circuit, inputs)
        self.job_dir = job_dir
        names = {sid: f"input-{sid}.ct" for sid in inputs}
        _write_job(
            job_dir,
            self.keys.public_context(),
            {names[sid]: data for sid, data in inputs.items()},
            {"circuit": {"file": "circuit.json", "inputs": {str(sid): name for sid, name in names.items()}}},
        )
        (job_dir / "circuit.json").write_text(json.dumps(self.circuit.to_json()))


class Scenarios:
    """Builds each scenario on first use, once per module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._ops: dict[str, OpScenario] = {}
        self._programs: dict[str, ProgramScenario] = {}

    def ops(self, preset: str) -> OpScenario:
        if preset not in self._ops:
            self._ops[preset] = OpScenario(preset, self.root / f"ops-{preset}")
        return self._ops[preset]

    def program(self, preset: str) -> ProgramScenario:
        if preset not in self._programs:
            self._programs[preset] = ProgramScenario(preset, self.root / f"program-{preset}")
        return self._programs[preset]


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> Scenarios:
    return Scenarios(tmp_path_factory.mktemp("determinism"))


def test_every_op_kind_is_covered_for_every_scheme_that_supports_it() -> None:
    covered = {
        (params.preset(preset, allow_insecure=True).scheme, case.op)
        for preset in (*OP_PRESETS, BOOTSTRAP_PRESET)
        for case in _cases(preset)
    }
    wanted = {(scheme, op) for op, spec in opcodes.SPECS.items() for scheme in spec.schemes}
    assert wanted - covered == set()


@pytest.mark.parametrize(("preset", "name"), OP_CASES)
def test_op_output_is_a_new_ciphertext_and_repeats_after_reload(
    scenarios: Scenarios, preset: str, name: str
) -> None:
    sc = scenarios.ops(preset)
    out = sc.expected[name]
    assert all(out != data for data in sc.inputs.values()), f"{name} returned an input unchanged"
    # An evaluator for another context displaces this one from OpenFHE's process-global
    # registry; the automatic reload must not change a single byte.
    other = next(p for p in OP_PRESETS if p != preset)
    evaluator.Evaluator(scenarios.ops(other).bundle)
    case = sc.cases[name]
    again = sc.evaluator.evaluate(case.op, [sc.inputs[o] for o in case.operands], case.attrs)
    _assert_same_bytes(again, out, f"{preset} {name} re-evaluated in this process")


def test_bootstrap_input_has_used_levels_and_output_is_refreshed(scenarios: Scenarios) -> None:
    sc = scenarios.ops(BOOTSTRAP_PRESET)
    ev = evaluator.Evaluator(sc.bundle)
    before = ev.load(sc.inputs["deep.ct"]).levels_used
    after = ev.load(sc.expected["bootstrap"]).levels_used
    assert before > ev.load(sc.inputs["a.ct"]).levels_used
    assert after < before
    got = sc.keys.decrypt([sc.expected["bootstrap"]])
    want = sc.values["deep.ct"]
    ring = ev.cc.GetRingDimension()
    np.testing.assert_allclose(got, want, rtol=0, atol=sc.params.tolerance(ring, 1.0, bootstrapped=True))


@pytest.mark.slow
@pytest.mark.parametrize("threads", list(THREADS))
@pytest.mark.parametrize(("preset", "name"), OP_CASES)
def test_op_output_is_byte_identical_in_a_fresh_process(
    scenarios: Scenarios, preset: str, name: str, threads: str
) -> None:
    sc = scenarios.ops(preset)
    run = sc.worker_run(threads)
    want = sc.expected[name]
    _assert_same_bytes(run.outputs[name], want, f"{preset} {name} in a fresh process ({threads})")
    assert run.sha256[name] == hashlib.sha256(want).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("threads", list(THREADS))
@pytest.mark.parametrize("preset", ["insecure-ckks", BOOTSTRAP_PRESET])
def test_compiled_program_gives_identical_task_outputs_in_a_fresh_process(
    scenarios: Scenarios, preset: str, threads: str
) -> None:
    sc = scenarios.program(preset)
    if sc.params.can_bootstrap:
        assert sc.circuit.bootstraps > 0, "the program should exercise inserted bootstraps"
    assert Circuit.from_json(sc.circuit.to_json()) == sc.circuit
    run = _run_worker(sc.job_dir, threads)
    got = {int(name.rsplit("-", 1)[1]): data for name, data in run.outputs.items()}
    assert sorted(got) == sorted(sc.results)
    for sid, want in sc.results.items():
        _assert_same_bytes(got[sid], want, f"{preset} circuit step {sid} ({threads})")
        assert run.sha256[f"circuit-step-{sid}"] == hashlib.sha256(want).hexdigest()
