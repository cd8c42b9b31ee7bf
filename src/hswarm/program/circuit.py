"""A compiled program: the ciphertext-level circuit, its tasks, and what keygen needs.

Pure frozen data with a JSON wire form (schema ``hswarm.circuit/1``). A :class:`Step` is
one operation of ``hswarm.crypto.opcodes`` on chunk ciphertexts (or an ``input`` chunk);
a :class:`Task` is a subgraph one worker evaluates; :class:`Circuit` ties them to the
program's named inputs and outputs. Building it is ``compiler``'s job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from hswarm import errors
from hswarm.crypto import opcodes

SCHEMA = "hswarm.circuit/1"


@dataclasses.dataclass(frozen=True)
class Step:
    """One ciphertext value: an input chunk or the result of one operation."""

    id: int
    op: str
    args: tuple[int, ...]
    attrs: Mapping[str, Any]
    depth: int
    node: int


@dataclasses.dataclass(frozen=True)
class Task:
    """Steps one worker evaluates in order; ``inputs`` come from outside, ``outputs``
    are needed outside (by other tasks or as program outputs)."""

    id: int
    kind: str  # "compute" or "bootstrap"
    steps: tuple[int, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    deps: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Terminal:
    """A named program input or output: its length and chunk step ids."""

    length: int
    chunks: tuple[int, ...]
    replicated: bool = False


@dataclasses.dataclass(frozen=True)
class Circuit:
    params: Mapping[str, Any]
    steps: tuple[Step, ...]
    tasks: tuple[Task, ...]
    inputs: Mapping[str, Terminal]
    outputs: Mapping[str, Terminal]
    rotation_indices: tuple[int, ...]
    bootstraps: int
    depth: int  # the deepest level any step reaches

    def step(self, step_id: int) -> Step:
        return self.steps[step_id]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "params": dict(self.params),
            "steps": [[s.id, s.op, list(s.args), dict(s.attrs), s.depth, s.node] for s in self.steps],
            "tasks": [
                {
                    "id": t.id,
                    "kind": t.kind,
                    "steps": list(t.steps),
                    "inputs": list(t.inputs),
                    "outputs": list(t.outputs),
                    "deps": list(t.deps),
                }
                for t in self.tasks
            ],
            "inputs": {k: _terminal_json(v) for k, v in self.inputs.items()},
            "outputs": {k: _terminal_json(v) for k, v in self.outputs.items()},
            "rotation_indices": list(self.rotation_indices),
            "bootstraps": self.bootstraps,
            "depth": self.depth,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Circuit:
        if not isinstance(doc, Mapping) or doc.get("schema") != SCHEMA:
            found = doc.get("schema") if isinstance(doc, Mapping) else type(doc).__name__
            raise errors.SchemaVersionError(
                f"cannot read the circuit: schema {found!r} is not {SCHEMA!r}; upgrade hswarm on both sides"
            )
        try:
            steps = tuple(
                Step(int(i), str(op), tuple(int(a) for a in args), dict(attrs), int(depth), int(node))
                for i, op, args, attrs, depth, node in doc["steps"]
            )
            tasks = tuple(
                Task(
                    int(t["id"]),
                    str(t["kind"]),
                    tuple(t["steps"]),
                    tuple(t["inputs"]),
                    tuple(t["outputs"]),
                    tuple(t["deps"]),
                )
                for t in doc["tasks"]
            )
            circuit = cls(
                params=dict(doc["params"]),
                steps=steps,
                tasks=tasks,
                inputs={k: _terminal(v) for k, v in doc["inputs"].items()},
                outputs={k: _terminal(v) for k, v in doc["outputs"].items()},
                rotation_indices=tuple(int(i) for i in doc["rotation_indices"]),
                bootstraps=int(doc["bootstraps"]),
                depth=int(doc["depth"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.ProgramError(f"cannot read the circuit: malformed ({exc})") from exc
        circuit.check()
        return circuit

    def check(self) -> None:
        """Structural checks on a circuit from the wire: ids, references, order."""
        for index, step in enumerate(self.steps):
            if step.id != index or any(not 0 <= a < index for a in step.args):
                raise errors.ProgramError(
                    f"cannot read the circuit: step {index} is out of order or refers forward"
                )
            if step.op != "input":
                opcodes.check(
                    step.op,
                    str(self.params.get("scheme")),
                    len(step.args),
                    step.attrs,
                    int(self.params.get("slots", 0)) or None,
                )
        for task in self.tasks:
            inside = set(task.steps)
            for sid in task.steps:
                if not 0 <= sid < len(self.steps) or self.steps[sid].op == "input":
                    raise errors.ProgramError(f"cannot read the circuit: task {task.id} is malformed")
                for arg in self.steps[sid].args:
                    if arg not in inside and arg not in task.inputs:
                        raise errors.ProgramError(
                            f"cannot read the circuit: task {task.id} uses step {arg} "
                            "without declaring it as an input"
                        )


def _terminal_json(t: Terminal) -> dict[str, Any]:
    return {"length": t.length, "chunks": list(t.chunks), "replicated": t.replicated}


def _terminal(doc: Mapping[str, Any]) -> Terminal:
    return Terminal(
        int(doc["length"]), tuple(int(c) for c in doc["chunks"]), bool(doc.get("replicated", False))
    )
