"""Replays ciphertext operations in a fresh process, for ``test_determinism``.

Usage: ``python determinism_worker.py JOB_DIR OUT_DIR``. ``JOB_DIR/job.json`` names the
public context bundle (and its digest), a list of operations on input ciphertext files,
and optionally a compiled circuit with its input ciphertexts by step id. The worker loads
them with :class:`~hswarm.crypto.evaluator.Evaluator` exactly as a swarm worker would,
writes every output ciphertext to ``OUT_DIR/<name>.ct`` and a summary (the SHA-256 of each
output and the thread setting it ran under) to ``OUT_DIR/result.json``.

It decides nothing: the test compares the bytes with its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from hswarm import runtime
from hswarm.crypto import evaluator, public
from hswarm.program import Circuit


def main(job_dir: Path, out_dir: Path) -> None:
    job = json.loads((job_dir / "job.json").read_text())
    bundle = public.PublicContext.from_bytes(
        (job_dir / job["context"]).read_bytes(), expected_digest=job["context_digest"]
    )
    ev = evaluator.Evaluator(bundle)
    digests: dict[str, str] = {}

    def emit(name: str, data: bytes) -> None:
        (out_dir / f"{name}.ct").write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()

    for entry in job.get("ops", []):
        operands = [(job_dir / name).read_bytes() for name in entry["operands"]]
        emit(entry["name"], ev.evaluate(entry["op"], operands, entry["attrs"]))

    circuit_job = job.get("circuit")
    if circuit_job is not None:
        circuit = Circuit.from_json(json.loads((job_dir / circuit_job["file"]).read_text()))
        inputs = {int(sid): (job_dir / name).read_bytes() for sid, name in circuit_job["inputs"].items()}
        for sid, data in runtime.run_circuit(ev, circuit, inputs).items():
            emit(f"circuit-step-{sid}", data)

    summary = {"omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "sha256": digests}
    (out_dir / "result.json").write_text(json.dumps(summary, indent=1, sort_keys=True))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: determinism_worker.py JOB_DIR OUT_DIR")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
