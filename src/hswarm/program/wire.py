"""Reading a :class:`~hswarm.program.graph.Program` from its JSON wire form.

Untrusted documents are replayed node by node through the same builder methods a client
calls, so a program read from the wire passes exactly the checks of one built in Python.
Writing is ``Program.to_json``. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hswarm import errors
from hswarm.program import graph


def _replay(exprs: list[graph.Expr], p: graph.Program, n: Mapping[str, Any]) -> graph.Expr:
    op, attrs = n["op"], n.get("attrs", {})
    args = [exprs[a] for a in n["args"]]
    if op == "input":
        return p.input(attrs["name"], n["length"])
    if op in ("add", "sub", "mul"):
        return args[0]._binary(op, args[1])
    if op in ("add_plain", "sub_plain", "mul_plain"):
        return args[0]._binary(op.split("_")[0], attrs["values"])
    if op in ("add_scalar", "mul_scalar"):
        value = attrs["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise errors.ProgramError(f"cannot read node: scalar {value!r} is not a number")
        return args[0]._binary(op.split("_")[0], value)
    if op == "negate":
        return -args[0]
    if op == "rotate":
        return args[0].rotate(attrs["steps"])
    if op == "sum":
        return args[0].sum()
    if op == "dot":
        return args[0].dot(args[1])
    if op == "dot_plain":
        return args[0].dot(attrs["values"])
    if op == "matvec":
        return graph.matvec(attrs["matrix"], args[0])
    if op == "poly":
        return args[0].poly(attrs["coefficients"])
    if op == "chebyshev":
        return args[0].chebyshev(attrs["function"], attrs["lo"], attrs["hi"], attrs["degree"])
    if op == "bootstrap":
        return args[0].bootstrap()
    raise errors.UnsupportedOperationError(f"cannot read node: unknown operation {op!r}")


def program_from_json(cls: type[graph.Program], doc: Mapping[str, Any]) -> graph.Program:
    if not isinstance(doc, Mapping) or doc.get("schema") != graph.SCHEMA:
        found = doc.get("schema") if isinstance(doc, Mapping) else type(doc).__name__
        raise errors.SchemaVersionError(
            f"cannot read the program: schema {found!r} is not {graph.SCHEMA!r}; upgrade hswarm on both sides"
        )
    program = cls()
    exprs: list[graph.Expr] = []
    try:
        for index, n in enumerate(doc["nodes"]):
            if n.get("id") != index or any(not 0 <= a < index for a in n["args"]):
                raise errors.ProgramError(
                    f"cannot read the program: node {index} is out of order or refers forward"
                )
            expr = _replay(exprs, program, n)
            if expr.node.id != index or expr.length != n["length"]:
                raise errors.ProgramError(
                    f"cannot read the program: node {index} does not match its declaration"
                )
            exprs.append(expr)
        for name, node_id in doc["outputs"].items():
            if not isinstance(node_id, int) or not 0 <= node_id < len(exprs):
                raise errors.ProgramError(f"cannot read the program: output {name!r} is invalid")
            program.output(name, exprs[node_id])
    except errors.HSwarmError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise errors.ProgramError(f"cannot read the program: malformed ({exc!r})") from exc
    if dict(doc.get("inputs", {})) != program.inputs:
        raise errors.ProgramError("cannot read the program: inputs do not match the nodes")
    return program
