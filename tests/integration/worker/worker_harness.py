"""Helpers of the worker's tests: BFV key material with compiled circuits and reference
results, worker processes started as an operator would (a subprocess with ``HSWARM_*``
settings) and read through their log lines, and small process helpers."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from fake_queen import TOKEN, FakeQueen, digest

from hswarm import runtime
from hswarm.crypto import evaluator, keys, params
from hswarm.program import Circuit, Program, compile_program
from hswarm.worker import executor

SLOW_ITERATIONS = 250  # 500 steps: about a second or more on a 2-core machine
ENDLESS_ITERATIONS = 5000  # a task that runs far longer than any test waits


def chain(iterations: int) -> Program:
    p = Program()
    z = p.input("z", 8)
    y = z
    for _ in range(iterations):
        y = y.rotate(1) + z
    p.output("y", y)
    return p


def batch() -> Program:
    p = Program()
    x, z = p.input("x", 2048), p.input("z", 8)
    p.output("y", x * x + 3 * x - 1)
    p.output("w", (z * z).rotate(1) + z)
    return p


@dataclasses.dataclass
class Material:
    """One BFV key set (its public context as a blob) and circuits compiled for it."""

    keys: keys.KeySet
    context_bytes: bytes
    context: str
    circuits: dict[str, Circuit]
    inputs: dict[str, dict[int, bytes]]
    _references: dict[str, dict[int, bytes]] = dataclasses.field(default_factory=dict)

    def reference(self, name: str) -> dict[int, bytes]:
        """Every task's outputs computed here, without sandbox: the bytes to match."""
        if name not in self._references:
            ev = evaluator.Evaluator(self.keys.public_context(), sandbox=False)
            self._references[name] = runtime.run_circuit(ev, self.circuits[name], self.inputs[name])
        return self._references[name]

    def publish(self, queen: FakeQueen, name: str) -> dict[int, str]:
        """Upload the context and the circuit's inputs to the queen; input digests by step."""
        queen.add_blob(self.context_bytes)
        return {sid: queen.add_blob(data) for sid, data in self.inputs[name].items()}


def task_request(
    directory: Path, material: Material, name: str, index: int = 0, **extra: Any
) -> executor.TaskRequest:
    """An executor request for task ``index`` of circuit ``name``, its inputs written as
    files under ``directory`` (inputs computed by earlier tasks taken from the reference)."""
    circuit = material.circuits[name]
    task = circuit.tasks[index]
    available = (
        {**material.inputs[name], **material.reference(name)} if name == "batch" else material.inputs[name]
    )
    inputs = {}
    for sid in task.inputs:
        path = directory / f"{name}-{sid}.ct"
        path.write_bytes(available[sid])
        inputs[sid] = (digest(available[sid]), str(path))
    out = directory / "out"
    out.mkdir(exist_ok=True)
    return executor.TaskRequest(
        task_id=f"{name}-{task.id}",
        steps=[(s.id, s.op, list(s.args), dict(s.attrs)) for s in (circuit.steps[i] for i in task.steps)],
        inputs=inputs,
        outputs=list(task.outputs),
        out_dir=str(out),
        **extra,
    )


def make_material(programs: dict[str, Program]) -> Material:
    prm = params.preset("insecure-bfv", allow_insecure=True)
    circuits = {name: compile_program(p, prm) for name, p in programs.items()}
    rotations = sorted({i for c in circuits.values() for i in c.rotation_indices})
    ks = keys.generate_keys(prm, rotations)
    rng = np.random.default_rng(7)
    inputs = {
        name: runtime.encrypt_inputs(ks, c, {k: rng.integers(-50, 50, t.length) for k, t in c.inputs.items()})
        for name, c in circuits.items()
    }
    context_bytes = ks.public_context().to_bytes()
    return Material(ks, context_bytes, digest(context_bytes), circuits, inputs)


# -- worker subprocesses -----------------------------------------------------------------

_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
for noisy in ("httpx", "httpcore"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
from hswarm.worker import WorkerSettings, run
sys.exit(run(WorkerSettings()))
"""


class WorkerProcess:
    """A worker started as ``python -c …`` with ``HSWARM_*`` settings; its log is kept."""

    def __init__(self, queen_url: str, cache_dir: Path, **settings: Any) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HSWARM_")}
        env.update(
            HSWARM_QUEEN_URL=queen_url,
            HSWARM_TOKEN=TOKEN,
            HSWARM_NAME="test-worker",
            HSWARM_CACHE_DIR=str(cache_dir),
            HSWARM_LONG_POLL_S="0.5",
            # One OpenMP thread per executor: on a loaded 2-core machine the default
            # (every core) runs these small tasks ~10x slower.
            HSWARM_EXECUTOR_THREADS="1",
        )
        env.update({f"HSWARM_{k.upper()}": str(v) for k, v in settings.items()})
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SCRIPT],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    @property
    def log(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_line(self, pattern: str, timeout_s: float = 60.0, start: int = 0) -> re.Match[str]:
        """The first log line (from index ``start``) matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    match = regex.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no log line matches {pattern!r}; log:\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.2))

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout_s: float = 60.0) -> int:
        code = self.proc.wait(timeout_s)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(predicate: Any, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
