"""Compiles a :class:`~hswarm.program.graph.Program` for given parameters into a
:class:`~hswarm.program.circuit.Circuit`, before anything is encrypted.

Four passes, in one walk over the nodes (they are already in topological order):

1. **Lowering** — each vector node becomes one step per ciphertext chunk of ``slots``
   values. Padding slots are tracked: a chunk is *clean* when its padding is known to be
   zero; a reduction (sum, dot) over a chunk with dirty padding first multiplies by a 0/1
   mask.
2. **Level analysis** — each step's depth is its deepest operand plus the op's cost from
   ``opcodes``. For BFV/BGV (leveled) a program deeper than the parameters is rejected
   with the node, the depth needed and the depth available. For CKKS with bootstrapping,
   a bootstrap is inserted on an operand exactly when the next op would exceed the depth
   (lazy placement, once per value): for a chain this is the fewest bootstraps possible,
   and no bootstrap is added on a path that does not need one.
3. **Keys** — the rotation indices every live step needs.
4. **Partition** — steps are grouped into tasks: a bootstrap is always its own task (so
   bootstraps spread over workers); the other steps are fused with the steps they are
   connected to between two bootstraps ("stages"), which keeps cheap chains in one task
   and independent chunks in separate tasks.

Pure: no ``openfhe``, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hswarm import errors
from hswarm.crypto import opcodes
from hswarm.crypto.params import Params
from hswarm.program.circuit import Circuit, Step, Task, Terminal
from hswarm.program.graph import Node, Program


@dataclasses.dataclass(frozen=True)
class _Lane:
    """One chunk of a lowered node: its step and whether its padding is zero."""

    step: int
    clean: bool


class _Builder:
    def __init__(self, params: Params) -> None:
        self.params = params
        self.steps: list[Step] = []
        self.refreshed: dict[int, int] = {}
        self.too_deep: list[tuple[Node, int]] = []
        self.node: Node | None = None

    def input(self, name: str, chunk: int, node: Node) -> int:
        step = Step(len(self.steps), "input", (), {"name": name, "chunk": chunk}, 0, node.id)
        self.steps.append(step)
        return step.id

    def emit(self, op: str, args: Sequence[int], attrs: Mapping[str, Any] | None = None) -> int:
        attrs = dict(attrs or {})
        node = self.node
        assert node is not None
        p = self.params
        try:
            opcodes.check(op, p.scheme, len(args), attrs, p.slots)
        except errors.UnsupportedOperationError as exc:
            raise errors.UnsupportedOperationError(f"cannot compile {node.describe()}: {exc}") from exc
        cost = opcodes.depth_cost(op, p.scheme, attrs)
        depth = max(self.steps[a].depth for a in args) + cost
        if op == "bootstrap":
            depth = 0
        elif depth > p.depth:
            if cost > p.depth or not p.can_bootstrap:
                self.too_deep.append((node, depth))
            else:
                args = [self._refresh(a) if self.steps[a].depth + cost > p.depth else a for a in args]
                depth = max(self.steps[a].depth for a in args) + cost
        step = Step(len(self.steps), op, tuple(args), attrs, depth, node.id)
        self.steps.append(step)
        return step.id

    def _refresh(self, step_id: int) -> int:
        if step_id not in self.refreshed:
            boot = Step(len(self.steps), "bootstrap", (step_id,), {}, 0, self.steps[step_id].node)
            self.steps.append(boot)
            self.refreshed[step_id] = boot.id
        return self.refreshed[step_id]


def compile_program(program: Program, params: Params) -> Circuit:
    """Check, lower, level, key and partition ``program`` for ``params``."""
    if not program.outputs:
        raise errors.ProgramError("cannot compile: the program declares no output")
    b = _Builder(params)
    lanes: dict[int, list[_Lane]] = {}
    for node in program.nodes:
        b.node = node
        lower = _LOWER.get(node.op)
        if lower is None:
            raise errors.UnsupportedOperationError(
                f"cannot compile {node.describe()}: unknown operation {node.op!r}"
            )
        lanes[node.id] = lower(b, node, [lanes[a] for a in node.args], [program.node(a) for a in node.args])
    if b.too_deep:
        _raise_too_deep(b, params)

    inputs = {
        name: Terminal(program.node(nid).length, tuple(lane.step for lane in lanes[nid]))
        for name, nid in program.inputs.items()
    }
    outputs = {
        name: Terminal(
            program.node(nid).length, tuple(lane.step for lane in lanes[nid]), program.node(nid).replicated
        )
        for name, nid in program.outputs.items()
    }
    live = _live_steps(b.steps, [s for t in outputs.values() for s in t.chunks])
    rotations: set[int] = set()
    for step in b.steps:
        if step.id in live and step.op != "input":
            rotations |= opcodes.rotation_indices(step.op, params.slots, step.attrs)
    tasks = _partition(b.steps, live, {s for t in outputs.values() for s in t.chunks})
    return Circuit(
        params=params.to_literal(),
        steps=tuple(b.steps),
        tasks=tuple(tasks),
        inputs=inputs,
        outputs=outputs,
        rotation_indices=tuple(sorted(rotations)),
        bootstraps=sum(1 for s in b.steps if s.op == "bootstrap" and s.id in live),
        depth=max((s.depth for s in b.steps if s.id in live), default=0),
    )


def _raise_too_deep(b: _Builder, params: Params) -> None:
    node, needed = b.too_deep[0]
    worst = max(depth for _, depth in b.too_deep)
    scheme = params.scheme.upper()
    if params.scheme == "ckks" and params.can_bootstrap:
        why = "a single operation needs more levels than a bootstrap restores; raise depth"
    elif params.scheme == "ckks":
        why = "use parameters with bootstrapping (e.g. preset ckks-bootstrap) or raise depth"
    else:
        why = f"{scheme} is leveled (no bootstrapping): raise depth or shorten the program"
    raise errors.DepthExceededError(
        f"cannot compile: {node.describe()} needs multiplicative depth {needed}, the {scheme} "
        f"parameters give {params.depth} (the whole program needs {worst}); {why}"
    )


# -- lowering ---------------------------------------------------------------------------

Lower = Callable[[_Builder, Node, list[list[_Lane]], list[Node]], list[_Lane]]


def _chunks(length: int, slots: int) -> int:
    return max(1, -(-length // slots))


def _valid(length: int, slots: int, index: int) -> int:
    """Meaningful values in chunk ``index`` of a vector of ``length``."""
    return min(slots, length - index * slots)


def _require_integers(b: _Builder, node: Node, values: Sequence[float], what: str) -> None:
    if b.params.exact and not all(float(v).is_integer() for v in values):
        raise errors.ProgramError(
            f"cannot compile {node.describe()}: {b.params.scheme.upper()} needs integer {what}"
        )


def _input(b: _Builder, node: Node, _: list[list[_Lane]], __: list[Node]) -> list[_Lane]:
    count = _chunks(node.length, b.params.slots)
    return [_Lane(b.input(node.attrs["name"], i, node), True) for i in range(count)]


def _pairs(a: list[_Lane], c: list[_Lane]) -> list[tuple[_Lane, _Lane]]:
    n = max(len(a), len(c))
    return [(a[min(i, len(a) - 1)], c[min(i, len(c) - 1)]) for i in range(n)]


def _elementwise(b: _Builder, node: Node, args: list[list[_Lane]], nodes: list[Node]) -> list[_Lane]:
    a, c = args
    if nodes[0].replicated != nodes[1].replicated:
        # a replicated value broadcasts over every chunk of the other operand
        a, c = ([a[0]] * len(c), c) if nodes[0].replicated else (a, [c[0]] * len(a))
    out = []
    for x, y in _pairs(a, c):
        clean = (x.clean or y.clean) if node.op == "mul" else (x.clean and y.clean)
        out.append(_Lane(b.emit(node.op, (x.step, y.step)), clean))
    return out


def _negate(b: _Builder, node: Node, args: list[list[_Lane]], _: list[Node]) -> list[_Lane]:
    return [_Lane(b.emit("negate", (x.step,)), x.clean) for x in args[0]]


def _plain(b: _Builder, node: Node, args: list[list[_Lane]], nodes: list[Node]) -> list[_Lane]:
    values = node.attrs["values"]
    _require_integers(b, node, values, "plaintext values")
    slots = b.params.slots
    lanes = args[0]
    count = _chunks(len(values), slots)
    if nodes[0].replicated:
        lanes = lanes * count
    out = []
    for i, x in enumerate(lanes):
        chunk = values[i * slots : (i + 1) * slots]
        clean = True if node.op == "mul_plain" else x.clean
        out.append(_Lane(b.emit(node.op, (x.step,), {"values": chunk}), clean))
    return out


def _scalar(b: _Builder, node: Node, args: list[list[_Lane]], _: list[Node]) -> list[_Lane]:
    value = node.attrs["value"]
    _require_integers(b, node, [value], "scalars")
    if b.params.exact:
        value = int(value)
    out = []
    for x in args[0]:
        clean = x.clean if node.op == "mul_scalar" else (x.clean and value == 0)
        out.append(_Lane(b.emit(node.op, (x.step,), {"value": value}), clean))
    return out


def _single_chunk(b: _Builder, node: Node, arg: Node, what: str) -> None:
    if arg.length > b.params.slots:
        raise errors.ProgramError(
            f"cannot compile {node.describe()}: {what} needs a vector of at most "
            f"{b.params.slots} values (one ciphertext), got {arg.length}"
        )


def _rotate(b: _Builder, node: Node, args: list[list[_Lane]], nodes: list[Node]) -> list[_Lane]:
    if nodes[0].replicated:
        return args[0]  # every slot holds the same value: rotation changes nothing
    _single_chunk(b, node, nodes[0], "rotate")
    (x,) = args[0]
    return [
        _Lane(b.emit("rotate", (x.step,), {"steps": node.attrs["steps"]}), nodes[0].length == b.params.slots)
    ]


def _masked(b: _Builder, lane: _Lane, length: int, index: int) -> int:
    """The lane's step, multiplied by a 0/1 mask if its padding may be non-zero."""
    valid = _valid(length, b.params.slots, index)
    if lane.clean or valid == b.params.slots:
        return lane.step
    return b.emit("mul_plain", (lane.step,), {"values": [1] * valid})


def _add_all(b: _Builder, steps: list[int]) -> list[_Lane]:
    acc = steps[0]
    for s in steps[1:]:
        acc = b.emit("add", (acc, s))
    return [_Lane(acc, False)]


def _sum(b: _Builder, node: Node, args: list[list[_Lane]], nodes: list[Node]) -> list[_Lane]:
    if nodes[0].replicated:
        return args[0]
    parts = [b.emit("sum_slots", (_masked(b, x, nodes[0].length, i),)) for i, x in enumerate(args[0])]
    return _add_all(b, parts)


def _dot(b: _Builder, node: Node, args: list[list[_Lane]], nodes: list[Node]) -> list[_Lane]:
    if nodes[0].replicated or nodes[1].replicated:
        product = _elementwise(b, dataclasses.replace(node, op="mul"), args, nodes)
        vector = nodes[1] if nodes[0].replicated else nodes[0]
        return _sum(b, node, [product], [vector])
    length = nodes[0].length
    parts = []
    for i, (x, y) in enumerate(_pairs(*args)):
        if x.clean or y.clean or _valid(length, b.params.slots, i) == b.params.slots:
            parts.append(b.emit("dot", (x.step, y.step)))
        else:
            product = _Lane(b.emit("mul", (x.step, y.step)), False)
            parts.append(b.emit("sum_slots", (_masked(b, product, length, i),)))
    return _add_all(b, parts)


def _dot_plain(b: _Builder, node: Node, args: list[list[_Lane]], nodes: list[Node]) -> list[_Lane]:
    values = node.attrs["values"]
    _require_integers(b, node, values, "plaintext values")
    if nodes[0].replicated:
        total = int(sum(values)) if b.params.exact else float(np.sum(values))
        return [_Lane(b.emit("mul_scalar", (args[0][0].step,), {"value": total}), False)]
    slots = b.params.slots
    parts = [
        b.emit("dot_plain", (x.step,), {"values": values[i * slots : (i + 1) * slots]})
        for i, x in enumerate(args[0])
    ]
    return _add_all(b, parts)


def _matvec(b: _Builder, node: Node, args: list[list[_Lane]], nodes: list[Node]) -> list[_Lane]:
    matrix = node.attrs["matrix"]
    _single_chunk(b, node, nodes[0], "matvec")
    _require_integers(b, node, [v for row in matrix for v in row], "matrix entries")
    if len(matrix) > b.params.slots:
        raise errors.ProgramError(
            f"cannot compile {node.describe()}: {len(matrix)} rows exceed {b.params.slots} slots"
        )
    (x,) = args[0]
    return [_Lane(b.emit("matvec", (x.step,), {"matrix": matrix}), True)]


def _poly(b: _Builder, node: Node, args: list[list[_Lane]], _: list[Node]) -> list[_Lane]:
    coeffs = node.attrs["coefficients"]
    _require_integers(b, node, coeffs, "coefficients")
    if b.params.exact:
        coeffs = [int(c) for c in coeffs]
    return [
        _Lane(b.emit("poly", (x.step,), {"coefficients": coeffs}), x.clean and coeffs[0] == 0)
        for x in args[0]
    ]


def _chebyshev(b: _Builder, node: Node, args: list[list[_Lane]], _: list[Node]) -> list[_Lane]:
    attrs = {k: node.attrs[k] for k in ("coefficients", "lo", "hi")}
    return [_Lane(b.emit("chebyshev", (x.step,), attrs), False) for x in args[0]]


def _bootstrap(b: _Builder, node: Node, args: list[list[_Lane]], _: list[Node]) -> list[_Lane]:
    if b.params.scheme == "ckks" and not b.params.can_bootstrap:
        raise errors.ProgramError(
            f"cannot compile {node.describe()}: the parameters have no bootstrapping; "
            "use a preset with bootstrap (e.g. ckks-bootstrap)"
        )
    return [_Lane(b.emit("bootstrap", (x.step,)), x.clean) for x in args[0]]


_LOWER: dict[str, Lower] = {
    "input": _input,
    "add": _elementwise,
    "sub": _elementwise,
    "mul": _elementwise,
    "negate": _negate,
    "add_plain": _plain,
    "sub_plain": _plain,
    "mul_plain": _plain,
    "add_scalar": _scalar,
    "mul_scalar": _scalar,
    "rotate": _rotate,
    "sum": _sum,
    "dot": _dot,
    "dot_plain": _dot_plain,
    "matvec": _matvec,
    "poly": _poly,
    "chebyshev": _chebyshev,
    "bootstrap": _bootstrap,
}


# -- partition --------------------------------------------------------------------------


def _live_steps(steps: Sequence[Step], roots: Sequence[int]) -> set[int]:
    live: set[int] = set()
    stack = list(roots)
    while stack:
        sid = stack.pop()
        if sid not in live:
            live.add(sid)
            stack.extend(steps[sid].args)
    return live


def _partition(steps: Sequence[Step], live: set[int], outputs: set[int]) -> list[Task]:
    # stage = bootstraps on the longest path from the inputs; merging connected steps
    # within one stage can never create a cycle between tasks.
    stage: dict[int, int] = {}
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for s in steps:
        if s.id not in live or s.op == "input":
            continue
        stage[s.id] = max((stage.get(a, 0) + (steps[a].op == "bootstrap") for a in s.args), default=0)
        parent[s.id] = s.id
        if s.op == "bootstrap":
            continue
        for a in s.args:
            if a in parent and steps[a].op != "bootstrap" and stage[a] == stage[s.id]:
                parent[find(a)] = find(s.id)

    groups: dict[int, list[int]] = {}
    for sid in sorted(parent):
        groups.setdefault(find(sid), []).append(sid)
    owner = {sid: root for root, members in groups.items() for sid in members}
    consumers: dict[int, set[int]] = {}
    for root, members in groups.items():
        for sid in members:
            for a in steps[sid].args:
                if a in owner and owner[a] != root:
                    consumers.setdefault(a, set()).add(root)

    deps = {
        root: {owner[a] for sid in members for a in steps[sid].args if a in owner and owner[a] != root}
        for root, members in groups.items()
    }
    order: list[int] = []
    done: set[int] = set()
    pending = sorted(groups, key=lambda r: groups[r][0])
    while pending:  # Kahn's algorithm, ties broken by first step: deterministic
        ready = next(r for r in pending if deps[r] <= done)
        pending.remove(ready)
        order.append(ready)
        done.add(ready)
    index = {root: i for i, root in enumerate(order)}

    tasks = []
    for root in order:
        members = groups[root]
        inside = set(members)
        inputs = sorted({a for sid in members for a in steps[sid].args if a not in inside})
        outs = sorted(sid for sid in members if sid in consumers or sid in outputs)
        kind = "bootstrap" if steps[members[0]].op == "bootstrap" else "compute"
        tasks.append(
            Task(
                index[root],
                kind,
                tuple(members),
                tuple(inputs),
                tuple(outs),
                tuple(sorted(index[d] for d in deps[root])),
            )
        )
    return tasks
