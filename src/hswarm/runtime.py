"""Runs a compiled circuit with real ciphertexts: encrypting inputs and decrypting
outputs on the client, executing tasks on an evaluator.

``execute_task`` is what a worker does with one task; ``run_circuit`` runs every task in
one process, in order, and is the reference the swarm must reproduce byte for byte
(task boundaries are the same, so are the bytes). It does no networking and no
scheduling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hswarm import errors
from hswarm.crypto.evaluator import Ciphertext, Evaluator
from hswarm.crypto.keys import KeySet
from hswarm.program.circuit import Circuit, Task


def check_compatible(
    circuit: Circuit, params_literal: Mapping[str, Any], rotation_indices: tuple[int, ...]
) -> None:
    """Raise unless the circuit was compiled for these parameters and keys."""
    if dict(circuit.params) != dict(params_literal):
        raise errors.ContextError(
            "cannot run the circuit: it was compiled for other parameters than the keys'"
        )
    missing = set(circuit.rotation_indices) - set(rotation_indices)
    if missing:
        raise errors.KeyMaterialError(
            f"cannot run the circuit: the keys lack rotation indices {sorted(missing)}; "
            "generate keys with circuit.rotation_indices"
        )


def encrypt_inputs(keys: KeySet, circuit: Circuit, values: Mapping[str, Any]) -> dict[int, bytes]:
    """Encrypt each named input; returns ciphertext bytes by input step id."""
    check_compatible(circuit, keys.params.to_literal(), keys.rotation_indices)
    unknown = set(values) - set(circuit.inputs)
    missing = set(circuit.inputs) - set(values)
    if unknown or missing:
        raise errors.ProgramError(
            f"cannot encrypt inputs: missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    out: dict[int, bytes] = {}
    for name, term in circuit.inputs.items():
        vector = np.asarray(values[name])
        if vector.ndim != 1 or vector.size != term.length:
            raise errors.ProgramError(
                f"cannot encrypt input {name!r}: expected {term.length} values, got shape {vector.shape}"
            )
        for sid, data in zip(term.chunks, keys.encrypt(vector), strict=True):
            out[sid] = data
    return out


def execute_task(
    evaluator: Evaluator, circuit: Circuit, task: Task, inputs: Mapping[int, bytes]
) -> dict[int, bytes]:
    """Evaluate one task: its input ciphertexts (bytes by step id) to its outputs."""
    steps = [circuit.steps[sid] for sid in task.steps]
    return execute_steps(
        evaluator,
        [(s.id, s.op, s.args, s.attrs) for s in steps],
        inputs,
        task.inputs,
        task.outputs,
        label=f"task {task.id}",
    )


def execute_steps(
    evaluator: Evaluator,
    steps: Sequence[tuple[int, str, Sequence[int], Mapping[str, Any]]],
    inputs: Mapping[int, bytes],
    needed: Sequence[int],
    outputs: Sequence[int],
    label: str = "task",
) -> dict[int, bytes]:
    """Evaluate steps ``(id, op, args, attrs)`` in order: what a worker does with a leased
    task. ``needed`` are the step ids the steps read from outside; returns ``outputs``."""
    missing = set(needed) - set(inputs)
    if missing:
        raise errors.EvaluationError(f"cannot execute {label}: missing inputs for steps {sorted(missing)}")
    values: dict[int, Ciphertext] = {sid: evaluator.load(inputs[sid]) for sid in needed}
    for sid, op, args, attrs in steps:
        unknown = [a for a in args if a not in values]
        if unknown:
            raise errors.EvaluationError(f"cannot execute {label}: step {sid} reads unknown steps {unknown}")
        values[sid] = evaluator.apply(op, [values[a] for a in args], attrs)
    absent = [sid for sid in outputs if sid not in values]
    if absent:
        raise errors.EvaluationError(f"cannot execute {label}: outputs {absent} are not computed")
    return {sid: evaluator.dump(values[sid]) for sid in outputs}


def run_circuit(evaluator: Evaluator, circuit: Circuit, inputs: Mapping[int, bytes]) -> dict[int, bytes]:
    """Execute every task in order; returns the inputs and every task output by step id."""
    check_compatible(circuit, evaluator.params.to_literal(), evaluator.public.rotation_indices)
    results: dict[int, bytes] = dict(inputs)
    for task in circuit.tasks:
        results.update(execute_task(evaluator, circuit, task, results))
    return results


def decrypt_outputs(keys: KeySet, circuit: Circuit, results: Mapping[int, bytes]) -> dict[str, np.ndarray]:
    """Decrypt each named output from the result ciphertexts."""
    out = {}
    for name, term in circuit.outputs.items():
        missing = [sid for sid in term.chunks if sid not in results]
        if missing:
            raise errors.DecryptionError(f"cannot decrypt output {name!r}: no ciphertext for steps {missing}")
        values = keys.decrypt([results[sid] for sid in term.chunks])
        out[name] = values[:1] if term.replicated else values[: term.length]
    return out


def evaluate_locally(
    keys: KeySet, circuit: Circuit, values: Mapping[str, Any], evaluator: Evaluator | None = None
) -> dict[str, np.ndarray]:
    """Encrypt, run every task in this process and decrypt: the local reference. The
    default evaluator skips the parsing sandbox: every byte it reads was made here."""
    inputs = encrypt_inputs(keys, circuit, values)
    evaluator = evaluator or Evaluator(keys.public_context(), sandbox=False)
    return decrypt_outputs(keys, circuit, run_circuit(evaluator, circuit, inputs))
