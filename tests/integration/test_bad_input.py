"""Bad input gets a clear hswarm error and changes nothing (DESIGN.md, "Reliability and
bad input"): damaged, truncated or foreign ciphertexts, damaged public-context bundles,
unknown or malformed operations, documents of another schema, programs too deep for
their parameters, insecure or invalid parameters. After every case the evaluator still
evaluates a good ciphertext correctly.

Also: a secret key cannot get into a public bundle or a wire message, and bit flips in a
serialized ciphertext never crash the evaluator. The bit-flip fuzz runs this file as a
script in child processes (``python test_bad_input.py fuzz ...``), so that a native crash
fails the test instead of killing pytest.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hswarm import errors
from hswarm.crypto import evaluator, keys, params, public
from hswarm.program import Circuit, Program, compile_program

VALUES = np.array([0.5, -1.5, 2.0, 3.25, -0.75, 1.0, 0.0, -2.5])
INT_VALUES = np.array([3, -1, 4, 1, -5, 9, 2, -6])


def _preset(name: str, **overrides: Any) -> params.Params:
    return params.preset(name, allow_insecure=True, **overrides)


@dataclasses.dataclass
class World:
    """Key sets, evaluators and good ciphertexts the bad inputs are aimed at."""

    key_sets: dict[str, keys.KeySet]
    evaluators: dict[str, evaluator.Evaluator]
    cts: dict[str, bytes]
    bundle: bytes  # the serialized public context of "ckks"


@pytest.fixture(scope="module")
def world() -> World:
    key_sets = {
        "ckks": keys.generate_keys(_preset("insecure-ckks"), [1]),
        # Same parameters, another secret key: its ciphertexts are foreign to "ckks".
        "ckks-other": keys.generate_keys(_preset("insecure-ckks"), [1]),
        "bfv": keys.generate_keys(_preset("insecure-bfv"), []),
        "bgv": keys.generate_keys(_preset("insecure-bgv"), []),
    }
    cts = {name: ks.encrypt(INT_VALUES if ks.params.exact else VALUES)[0] for name, ks in key_sets.items()}
    evaluators = {name: evaluator.Evaluator(key_sets[name].public_context()) for name in ("ckks", "bfv")}
    return World(key_sets, evaluators, cts, key_sets["ckks"].public_context().to_bytes())


def _assert_evaluator_still_works(w: World, scheme: str) -> None:
    ks, ct = w.key_sets[scheme], w.cts[scheme]
    got = ks.decrypt([w.evaluators[scheme].evaluate("mul", [ct, ct], {})])
    if ks.params.exact:
        np.testing.assert_array_equal(got[: len(INT_VALUES)], INT_VALUES**2)
        return
    ring = w.evaluators[scheme].cc.GetRingDimension()
    np.testing.assert_allclose(
        got[: len(VALUES)], VALUES**2, rtol=0, atol=ks.params.tolerance(ring, float(np.max(VALUES**2)))
    )


# -- building bad documents ---------------------------------------------------------------


def _flip(data: bytes, position: int, mask: int = 0xFF) -> bytes:
    damaged = bytearray(data)
    damaged[position] ^= mask
    return bytes(damaged)


def _random_bytes(size: int) -> bytes:
    return np.random.default_rng(1).bytes(size)


def _program() -> Program:
    prog = Program()
    x = prog.input("x", 8)
    prog.output("y", (x * x + 3).rotate(1))
    return prog


def _program_doc(**changes: Any) -> dict[str, Any]:
    return {**_program().to_json(), **changes}


def _circuit_doc(**changes: Any) -> dict[str, Any]:
    return {**compile_program(_program(), _preset("insecure-ckks")).to_json(), **changes}


def _edited(doc: dict[str, Any], key: str, index: int, edit: Callable[[Any], Any]) -> dict[str, Any]:
    """``doc`` with ``doc[key][index]`` replaced by ``edit(copy of it)``."""
    doc = copy.deepcopy(doc)
    doc[key][index] = edit(doc[key][index])
    return doc


def _set(item: Any, key: Any, value: Any) -> Any:
    item[key] = value
    return item


def _without(item: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != key}


def _squarings(count: int) -> Program:
    prog = Program()
    y = prog.input("x", 8)
    for _ in range(count):
        y = y * y
    prog.output("y", y)
    return prog


def _literal(**changes: Any) -> dict[str, Any]:
    return {**params.PRESETS["insecure-bfv"], **changes}


def _ckks_literal(**changes: Any) -> dict[str, Any]:
    return {**params.PRESETS["insecure-ckks"], **changes}


# -- the table ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BadInput:
    action: Callable[[World], object]
    error: type[errors.HSwarmError]
    match: str  # a regular expression searched for in the message
    scheme: str = "ckks"  # the evaluator that must still work afterwards


def _case(
    case_id: str, action: Callable[[World], object], error: type[errors.HSwarmError], match: str, **kw: Any
) -> Any:
    marks = kw.pop("marks", ())
    return pytest.param(BadInput(action, error, match, **kw), id=case_id, marks=marks)


# Known defects of src/ (see the report that came with these tests): strict, so that the
# fix turns them into failures until the marker is removed.
CASES = [
    # ciphertext bytes
    _case("ct-empty", lambda w: w.evaluators["ckks"].load(b""), errors.DeserializationError, "cannot"),
    _case("ct-not-bytes", lambda w: w.evaluators["ckks"].load("text"), errors.DeserializationError, "cannot"),
    _case(
        "ct-random",
        lambda w: w.evaluators["ckks"].load(_random_bytes(len(w.cts["ckks"]))),
        errors.DeserializationError,
        "cannot",
    ),
    _case(
        "ct-random-short",
        lambda w: w.evaluators["ckks"].load(_random_bytes(100)),
        errors.DeserializationError,
        "cannot",
    ),
    _case(
        "ct-truncated-half",
        lambda w: w.evaluators["ckks"].load(w.cts["ckks"][: len(w.cts["ckks"]) // 2]),
        errors.DeserializationError,
        "cannot deserialize",
    ),
    _case(
        "ct-truncated-last-byte",
        lambda w: w.evaluators["ckks"].load(w.cts["ckks"][:-1]),
        errors.DeserializationError,
        "cannot deserialize",
    ),
    *(
        _case(
            f"ct-header-byte-{position}-flipped",
            lambda w, position=position: w.evaluators["ckks"].load(_flip(w.cts["ckks"], position)),
            errors.DeserializationError,
            "cannot",
        )
        for position in (0, 4, 42, 99)
    ),
    _case(
        "ct-header-bit-flipped",
        lambda w: w.evaluators["ckks"].load(_flip(w.cts["ckks"], 77, 0x10)),
        errors.DeserializationError,
        "cannot",
    ),
    _case(
        "ct-from-another-key-set",
        lambda w: w.evaluators["ckks"].load(w.cts["ckks-other"]),
        errors.ForeignContextError,
        "cannot use the ciphertext.*another",
    ),
    _case(
        "ct-bfv-into-ckks",
        lambda w: w.evaluators["ckks"].load(w.cts["bfv"]),
        errors.ForeignContextError,
        "cannot use the ciphertext",
    ),
    _case(
        "ct-ckks-into-bfv",
        lambda w: w.evaluators["bfv"].load(w.cts["ckks"]),
        errors.ForeignContextError,
        "cannot use the ciphertext",
        scheme="bfv",
    ),
    _case(
        "ct-bgv-into-bfv",
        lambda w: w.evaluators["bfv"].load(w.cts["bgv"]),
        errors.ForeignContextError,
        "cannot use the ciphertext",
        scheme="bfv",
    ),
    _case(
        "ct-truncated-operand-of-evaluate",
        lambda w: w.evaluators["ckks"].evaluate("add", [w.cts["ckks"], w.cts["ckks"][:-1]], {}),
        errors.DeserializationError,
        "cannot deserialize",
    ),
    _case(
        "ct-loaded-by-another-evaluator",
        lambda w: w.evaluators["ckks"].apply("negate", [w.evaluators["bfv"].load(w.cts["bfv"])], {}),
        errors.ForeignContextError,
        "cannot evaluate negate.*another context",
    ),
    # the public context bundle
    _case(
        "bundle-wrong-expected-digest",
        lambda w: public.PublicContext.from_bytes(w.bundle, expected_digest="sha256:" + "0" * 64),
        errors.DigestMismatchError,
        "cannot accept the public context: digest",
    ),
    _case(
        "bundle-digest-of-another-bundle",
        lambda w: public.PublicContext.from_bytes(
            w.bundle, expected_digest=w.key_sets["ckks-other"].public_context().digest
        ),
        errors.DigestMismatchError,
        "digest",
    ),
    _case(
        "bundle-empty", lambda w: public.PublicContext.from_bytes(b""), errors.DeserializationError, "cannot"
    ),
    _case(
        "bundle-truncated-half",
        lambda w: public.PublicContext.from_bytes(w.bundle[: len(w.bundle) // 2]),
        errors.DeserializationError,
        "truncated",
    ),
    _case(
        "bundle-truncated-last-byte",
        lambda w: public.PublicContext.from_bytes(w.bundle[:-1]),
        errors.DeserializationError,
        "truncated",
    ),
    _case(
        "bundle-truncated-in-header",
        lambda w: public.PublicContext.from_bytes(w.bundle[:40]),
        errors.DeserializationError,
        "truncated",
    ),
    _case(
        "bundle-bad-magic",
        lambda w: public.PublicContext.from_bytes(b"NOTHSWRM" + w.bundle[8:]),
        errors.DeserializationError,
        "magic",
    ),
    _case(
        "bundle-header-not-json",
        lambda w: public.PublicContext.from_bytes(_flip(w.bundle, 14)),
        errors.DeserializationError,
        "malformed header",
    ),
    _case(
        "bundle-section-byte-flipped",
        lambda w: public.PublicContext.from_bytes(_flip(w.bundle, len(w.bundle) - 100)),
        errors.DigestMismatchError,
        "section rotation_keys",
    ),
    _case(
        "bundle-trailing-bytes",
        lambda w: public.PublicContext.from_bytes(w.bundle + b"\0"),
        errors.DeserializationError,
        "trailing",
    ),
    # operations
    _case(
        "op-unknown",
        lambda w: w.evaluators["ckks"].evaluate("frobnicate", [w.cts["ckks"]], {}),
        errors.UnsupportedOperationError,
        "unknown operation 'frobnicate'",
    ),
    _case(
        "op-too-few-operands",
        lambda w: w.evaluators["ckks"].evaluate("add", [w.cts["ckks"]], {}),
        errors.UnsupportedOperationError,
        "cannot evaluate add: needs 2",
    ),
    _case(
        "op-too-many-operands",
        lambda w: w.evaluators["ckks"].evaluate("negate", [w.cts["ckks"]] * 2, {}),
        errors.UnsupportedOperationError,
        "cannot evaluate negate: needs 1",
    ),
    _case(
        "op-no-operands",
        lambda w: w.evaluators["ckks"].evaluate("sum_slots", [], {}),
        errors.UnsupportedOperationError,
        "operand",
    ),
    _case(
        "op-missing-attribute",
        lambda w: w.evaluators["ckks"].evaluate("rotate", [w.cts["ckks"]], {}),
        errors.UnsupportedOperationError,
        r"cannot evaluate rotate: attributes must be \['steps'\]",
    ),
    _case(
        "op-unexpected-attribute",
        lambda w: w.evaluators["ckks"].evaluate("add", [w.cts["ckks"]] * 2, {"steps": 1}),
        errors.UnsupportedOperationError,
        "cannot evaluate add: attributes",
    ),
    _case(
        "op-misspelled-attribute",
        lambda w: w.evaluators["ckks"].evaluate("mul_scalar", [w.cts["ckks"]], {"valeu": 2.0}),
        errors.UnsupportedOperationError,
        "attributes",
    ),
    _case(
        "op-scalar-not-a-number",
        lambda w: w.evaluators["ckks"].evaluate("mul_scalar", [w.cts["ckks"]], {"value": "two"}),
        errors.EvaluationError,
        "cannot evaluate mul_scalar",
    ),
    _case(
        "op-poly-without-coefficients",
        lambda w: w.evaluators["ckks"].evaluate("poly", [w.cts["ckks"]], {"coefficients": []}),
        errors.EvaluationError,
        "cannot evaluate poly",
    ),
    _case(
        "op-rotate-steps-not-an-integer",
        lambda w: w.evaluators["ckks"].evaluate("rotate", [w.cts["ckks"]], {"steps": "one"}),
        errors.UnsupportedOperationError,
        "attribute steps must be an integer",
    ),
    _case(
        "op-rotate-steps-fractional",
        lambda w: w.evaluators["ckks"].evaluate("rotate", [w.cts["ckks"]], {"steps": 1.5}),
        errors.UnsupportedOperationError,
        "attribute steps must be an integer",
    ),
    _case(
        "op-matvec-empty-matrix",
        lambda w: w.evaluators["ckks"].evaluate("matvec", [w.cts["ckks"]], {"matrix": []}),
        errors.UnsupportedOperationError,
        "attribute matrix must be a non-empty list",
    ),
    _case(
        "op-matvec-empty-row",
        lambda w: w.evaluators["ckks"].evaluate("matvec", [w.cts["ckks"]], {"matrix": [[]]}),
        errors.UnsupportedOperationError,
        "attribute matrix",
    ),
    _case(
        "op-matvec-ragged",
        lambda w: w.evaluators["ckks"].evaluate("matvec", [w.cts["ckks"]], {"matrix": [[1, 2], [3]]}),
        errors.UnsupportedOperationError,
        "rectangular",
    ),
    _case(
        "op-plaintext-longer-than-slots",
        lambda w: w.evaluators["ckks"].evaluate("add_plain", [w.cts["ckks"]], {"values": [1.0] * 5000}),
        errors.UnsupportedOperationError,
        "more than",
    ),
    _case(
        "op-chebyshev-empty-interval",
        lambda w: w.evaluators["ckks"].evaluate(
            "chebyshev", [w.cts["ckks"]], {"coefficients": [1.0, 2.0], "lo": 1.0, "hi": -1.0}
        ),
        errors.UnsupportedOperationError,
        "lo must be below hi",
    ),
    _case(
        "op-attrs-not-a-mapping",
        lambda w: w.evaluators["ckks"].evaluate("negate", [w.cts["ckks"]], None),
        errors.UnsupportedOperationError,
        "mapping",
    ),
    _case(
        "op-chebyshev-on-bfv",
        lambda w: w.evaluators["bfv"].evaluate(
            "chebyshev", [w.cts["bfv"]], {"coefficients": [1, 2, 3], "lo": -1, "hi": 1}
        ),
        errors.UnsupportedOperationError,
        "cannot evaluate chebyshev: not supported by BFV",
        scheme="bfv",
    ),
    _case(
        "op-bootstrap-on-bfv",
        lambda w: w.evaluators["bfv"].evaluate("bootstrap", [w.cts["bfv"]], {}),
        errors.UnsupportedOperationError,
        "cannot evaluate bootstrap: not supported by BFV",
        scheme="bfv",
    ),
    _case(
        "op-rotate-without-its-key",
        lambda w: w.evaluators["ckks"].evaluate("rotate", [w.cts["ckks"]], {"steps": 5}),
        errors.KeyMaterialError,
        r"cannot evaluate rotate: no rotation keys for indices \[5\]",
    ),
    _case(
        "op-sum-slots-without-its-keys",
        lambda w: w.evaluators["bfv"].evaluate("sum_slots", [w.cts["bfv"]], {}),
        errors.KeyMaterialError,
        "no rotation keys",
        scheme="bfv",
    ),
    _case(
        "op-bootstrap-without-bootstrapping-keys",
        lambda w: w.evaluators["ckks"].evaluate("bootstrap", [w.cts["ckks"]], {}),
        errors.KeyMaterialError,
        "cannot bootstrap",
    ),
    # program and circuit documents
    _case(
        "program-schema-newer",
        lambda w: Program.from_json(_program_doc(schema="hswarm.program/2")),
        errors.SchemaVersionError,
        "cannot read the program: schema 'hswarm.program/2'",
    ),
    _case(
        "program-schema-missing",
        lambda w: Program.from_json(_without(_program_doc(), "schema")),
        errors.SchemaVersionError,
        "schema",
    ),
    _case(
        "program-not-a-document",
        lambda w: Program.from_json([1, 2, 3]),  # type: ignore[arg-type]
        errors.SchemaVersionError,
        "schema",
    ),
    _case(
        "circuit-schema-older",
        lambda w: Circuit.from_json(_circuit_doc(schema="hswarm.circuit/0")),
        errors.SchemaVersionError,
        "cannot read the circuit: schema 'hswarm.circuit/0'",
    ),
    _case(
        "circuit-schema-of-a-program",
        lambda w: Circuit.from_json(_circuit_doc(schema="hswarm.program/1")),
        errors.SchemaVersionError,
        "schema",
    ),
    _case(
        "program-nodes-not-a-list",
        lambda w: Program.from_json(_program_doc(nodes=5)),
        errors.ProgramError,
        "cannot read the program: malformed",
    ),
    _case(
        "program-nodes-missing",
        lambda w: Program.from_json(_without(_program_doc(), "nodes")),
        errors.ProgramError,
        "malformed",
    ),
    _case(
        "program-node-not-an-object",
        lambda w: Program.from_json(_program_doc(nodes=["input x"])),
        errors.ProgramError,
        "malformed",
    ),
    _case(
        "program-node-without-op",
        lambda w: Program.from_json(_edited(_program_doc(), "nodes", 1, lambda n: _without(n, "op"))),
        errors.ProgramError,
        "malformed",
    ),
    _case(
        "program-node-refers-forward",
        lambda w: Program.from_json(_edited(_program_doc(), "nodes", 1, lambda n: _set(n, "args", [3, 3]))),
        errors.ProgramError,
        "node 1 is out of order or refers forward",
    ),
    _case(
        "program-node-out-of-order",
        lambda w: Program.from_json(_edited(_program_doc(), "nodes", 0, lambda n: _set(n, "id", 2))),
        errors.ProgramError,
        "out of order",
    ),
    _case(
        "program-node-wrong-length",
        lambda w: Program.from_json(_edited(_program_doc(), "nodes", 1, lambda n: _set(n, "length", 99))),
        errors.ProgramError,
        "node 1 does not match its declaration",
    ),
    _case(
        "program-node-unknown-op",
        lambda w: Program.from_json(_edited(_program_doc(), "nodes", 1, lambda n: _set(n, "op", "frob"))),
        errors.UnsupportedOperationError,
        "unknown operation 'frob'",
    ),
    _case(
        "program-output-dangling",
        lambda w: Program.from_json(_program_doc(outputs={"y": 99})),
        errors.ProgramError,
        "output 'y' is invalid",
    ),
    _case(
        "circuit-steps-not-a-list",
        lambda w: Circuit.from_json(_circuit_doc(steps=5)),
        errors.ProgramError,
        "cannot read the circuit: malformed",
    ),
    _case(
        "circuit-step-short",
        lambda w: Circuit.from_json(_edited(_circuit_doc(), "steps", 1, lambda s: s[:3])),
        errors.ProgramError,
        "malformed",
    ),
    _case(
        "circuit-step-refers-forward",
        lambda w: Circuit.from_json(_edited(_circuit_doc(), "steps", 1, lambda s: _set(s, 2, [3, 3]))),
        errors.ProgramError,
        "step 1 is out of order or refers forward",
    ),
    _case(
        "circuit-step-unknown-op",
        lambda w: Circuit.from_json(_edited(_circuit_doc(), "steps", 1, lambda s: _set(s, 1, "frob"))),
        errors.UnsupportedOperationError,
        "unknown operation 'frob'",
    ),
    _case(
        "circuit-step-wrong-attributes",
        lambda w: Circuit.from_json(_edited(_circuit_doc(), "steps", 1, lambda s: _set(s, 3, {"bogus": 1}))),
        errors.UnsupportedOperationError,
        "attributes",
    ),
    _case(
        "circuit-task-undeclared-input",
        lambda w: Circuit.from_json(_edited(_circuit_doc(), "tasks", 0, lambda t: _set(t, "inputs", []))),
        errors.ProgramError,
        "task 0 uses step 0 without declaring it",
    ),
    _case(
        "circuit-task-unknown-step",
        lambda w: Circuit.from_json(_edited(_circuit_doc(), "tasks", 0, lambda t: _set(t, "steps", [99]))),
        errors.ProgramError,
        "task 0 is malformed",
    ),
    # depth
    *(
        _case(
            f"program-too-deep-for-{name}",
            lambda w, name=name: compile_program(_squarings(4), _preset(f"insecure-{name}")),
            errors.DepthExceededError,
            # the node, the depth it needs, the depth the parameters give
            r"cannot compile: node #4 \(mul\) needs multiplicative depth 4\D+3\b",
        )
        for name in ("bfv", "bgv")
    ),
    _case(
        "program-too-deep-for-ckks-without-bootstrapping",
        lambda w: compile_program(_squarings(7), _preset("insecure-ckks")),
        errors.DepthExceededError,
        r"node #7 \(mul\) needs multiplicative depth 7\D+6\b",
    ),
    # parameters
    _case(
        "params-insecure-preset-not-allowed",
        lambda w: params.preset("insecure-ckks"),
        errors.InsecureParamsError,
        "cannot use insecure parameters",
    ),
    _case(
        "params-insecure-literal-not-allowed",
        lambda w: params.Params.from_literal(_literal()),
        errors.InsecureParamsError,
        "allow_insecure",
    ),
    _case(
        "params-insecure-refused-by-strict-evaluator",
        lambda w: evaluator.Evaluator(w.key_sets["bfv"].public_context(), allow_insecure=False),
        errors.InsecureParamsError,
        "insecure",
        scheme="bfv",
    ),
    *(
        _case(
            f"params-{name}",
            lambda w, literal=literal: params.Params.from_literal(literal, allow_insecure=True),
            errors.ParamsError,
            f"cannot build parameters: {field}",
        )
        for name, literal, field in (
            ("unknown-scheme", _literal(scheme="rsa"), "scheme"),
            ("unknown-field", _literal(colour="blue"), "colour"),
            ("ckks-field-on-bfv", _literal(scaling_mod_size=50), "scaling_mod_size"),
            ("depth-zero", _literal(depth=0), "depth"),
            ("depth-not-an-integer", _literal(depth="3"), "depth"),
            ("depth-boolean", _literal(depth=True), "depth"),
            ("slots-not-a-power-of-two", _literal(slots=1000), "slots"),
            ("slots-exceed-ring", _literal(slots=4096), "slots"),
            ("ring-dim-not-a-power-of-two", _literal(ring_dim=5000), "ring_dim"),
            ("insecure-without-ring-dim", _without(_literal(), "ring_dim"), "ring_dim"),
            ("security-unknown", _literal(security="HEStd_64_classic"), "security"),
            ("plaintext-modulus-not-ntt-friendly", _literal(plaintext_modulus=65536), "plaintext_modulus"),
            ("scaling-mod-size-too-small", _ckks_literal(scaling_mod_size=10), "scaling_mod_size"),
            ("first-mod-below-scaling", _ckks_literal(first_mod_size=40), "first_mod_size"),
            ("bootstrap-not-a-mapping", _ckks_literal(bootstrap=[1, 1]), "bootstrap"),
            (
                "level-budget-out-of-range",
                _ckks_literal(bootstrap={"level_budget": [0, 9]}),
                "bootstrap.level_budget",
            ),
        )
    ),
    _case(
        "params-not-a-mapping",
        lambda w: params.Params.from_literal(["ckks"], allow_insecure=True),  # type: ignore[arg-type]
        errors.ParamsError,
        "cannot build parameters",
    ),
    _case(
        "params-unknown-preset",
        lambda w: params.preset("ckks-turbo", allow_insecure=True),
        errors.ParamsError,
        "unknown preset 'ckks-turbo'",
    ),
]


@pytest.mark.parametrize("bad", CASES)
def test_bad_input_raises_a_clear_error_and_changes_nothing(
    world: World, bad: BadInput, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(params.ALLOW_INSECURE_ENV, raising=False)
    _assert_evaluator_still_works(world, bad.scheme)
    with pytest.raises(bad.error, match=bad.match) as caught:
        bad.action(world)
    message = str(caught.value)
    assert message.startswith(("cannot", "refusing")), message
    _assert_evaluator_still_works(world, bad.scheme)


@pytest.mark.parametrize("value", [None, "", "0", "false", "no"])
def test_insecure_params_need_explicit_permission(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    monkeypatch.delenv(params.ALLOW_INSECURE_ENV, raising=False)
    if value is not None:
        monkeypatch.setenv(params.ALLOW_INSECURE_ENV, value)
    with pytest.raises(errors.InsecureParamsError, match="cannot use insecure parameters"):
        params.preset("insecure-bgv")
    assert params.preset("insecure-bgv", allow_insecure=True).insecure
    monkeypatch.setenv(params.ALLOW_INSECURE_ENV, "1")
    assert params.preset("insecure-bgv").insecure
    with pytest.raises(errors.InsecureParamsError):
        params.preset("insecure-bgv", allow_insecure=False)


# -- the secret key stays on the client -----------------------------------------------------


@pytest.fixture(scope="module")
def secret_world() -> tuple[keys.KeySet, public.PublicContext, bytes]:
    ks = keys.generate_keys(_preset("insecure-ckks"), [1, 2])
    # The serialized secret key, as an attacker or a careless caller could obtain it.
    return ks, ks.public_context(), ks._secret_bytes


@pytest.mark.parametrize("section", public.SECTIONS)
@pytest.mark.parametrize("kind", ["native-secret-key", "text"])
def test_public_context_takes_only_serialized_bytes(
    secret_world: tuple[keys.KeySet, public.PublicContext, bytes], section: str, kind: str
) -> None:
    ks, bundle, secret = secret_world
    value = ks._secret_key if kind == "native-secret-key" else secret.decode("latin-1")
    with pytest.raises(
        errors.SecretKeyLeakError, match=f"refusing to build a PublicContext: section {section}"
    ):
        dataclasses.replace(bundle, **{section: value})


@pytest.mark.parametrize("section", public.SECTIONS)
def test_verify_public_finds_a_secret_key_in_any_section(
    secret_world: tuple[keys.KeySet, public.PublicContext, bytes], section: str
) -> None:
    _, bundle, secret = secret_world
    public.verify_public(bundle)  # the genuine bundle passes
    leaked = dataclasses.replace(bundle, **{section: secret})
    # As a receiver sees it: parsed from bytes, every section digest valid.
    received = public.PublicContext.from_bytes(leaked.to_bytes(), expected_digest=leaked.digest)
    with pytest.raises(errors.SecretKeyLeakError, match=f"refusing the public context: section {section}"):
        public.verify_public(received)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_key_set_refuses_pickling(
    secret_world: tuple[keys.KeySet, public.PublicContext, bytes], protocol: int
) -> None:
    ks, _, _ = secret_world
    with pytest.raises(errors.SecretKeyLeakError, match="refusing to pickle a KeySet"):
        pickle.dumps(ks, protocol=protocol)


def test_key_set_refuses_copying_and_json(
    secret_world: tuple[keys.KeySet, public.PublicContext, bytes],
) -> None:
    ks, _, secret = secret_world
    with pytest.raises(errors.SecretKeyLeakError):
        copy.deepcopy(ks)
    with pytest.raises(errors.SecretKeyLeakError):
        copy.copy(ks)
    with pytest.raises(TypeError):
        json.dumps(ks)
    assert secret.hex()[-64:] not in repr(ks)


def test_public_header_and_bundle_hold_no_secret_key_bytes(
    secret_world: tuple[keys.KeySet, public.PublicContext, bytes],
) -> None:
    ks, bundle, secret = secret_world
    header = json.dumps(bundle.header(), sort_keys=True)
    data = bundle.to_bytes()
    # The secret key starts with the crypto parameters every object shares; its key material
    # (the polynomial) follows. Sample it at several places.
    material = secret[len(secret) // 4 :]
    windows = [material[i : i + 64] for i in range(0, len(material) - 64, max(1, len(material) // 16))]
    assert len(windows) >= 8
    for window in windows:
        assert window not in data
        assert window.hex() not in header
        assert window.decode("latin-1") not in header
    assert hashlib.sha256(secret).hexdigest() not in header
    assert set(bundle.header()) == {"params", "key_tag", "rotation_indices", "sections"}
    assert [s["name"] for s in bundle.header()["sections"]] == list(public.SECTIONS)
    assert public.PublicContext.from_bytes(data, expected_digest=bundle.digest) == bundle
    assert ks.key_tag == bundle.key_tag


# -- bit flips: never a crash ---------------------------------------------------------------

FUZZ_HEADER_BYTES = 2000
FUZZ_BODY_FLIPS = 200
FUZZ_SEED = 20240611
FUZZ_TIMEOUT_S = 600  # a hang detector: generous, since a loaded 2-core machine runs it 3x slower
# A worker process has bounded memory: a few flipped bits must not make one load of a
# ~0.5 MB ciphertext take hundreds of megabytes (in a container that is an OOM kill).
FUZZ_RSS_BUDGET = 512 << 20
# Safety net for the machine running the tests, well above the budget.
FUZZ_ADDRESS_SPACE = 4 << 30


def _flips(size: int) -> list[tuple[int, int]]:
    header = [(pos, bit) for pos in range(min(FUZZ_HEADER_BYTES, size)) for bit in range(8)]
    rng = np.random.default_rng(FUZZ_SEED)
    positions = rng.integers(FUZZ_HEADER_BYTES, size, FUZZ_BODY_FLIPS)
    bits = rng.integers(0, 8, FUZZ_BODY_FLIPS)
    return header + [(int(pos), int(bit)) for pos, bit in zip(positions, bits, strict=True)]


def _fuzz_shard(workdir: Path, shard: int, shards: int) -> None:
    """Child process: load every flip of this shard, count outcomes, write a JSON report."""
    if hasattr(resource, "RLIMIT_AS"):
        resource.setrlimit(resource.RLIMIT_AS, (FUZZ_ADDRESS_SPACE, FUZZ_ADDRESS_SPACE))
    bundle = public.PublicContext.from_bytes((workdir / "context.bin").read_bytes())
    ct = (workdir / "ct.bin").read_bytes()
    ev = evaluator.Evaluator(bundle)
    reference = ev.evaluate("negate", [ct], {})
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    counts: collections.Counter[str] = collections.Counter()
    others: list[str] = []
    slowest: list[tuple[float, int, int]] = []
    blowup = None
    flips = _flips(len(ct))[shard::shards]
    for pos, bit in flips:
        print(f"{pos}:{bit}", flush=True)  # the last line names the flip that crashed, if any
        start = time.perf_counter()
        try:
            ev.load(_flip(ct, pos, 1 << bit))
            counts["loaded"] += 1
        except errors.HSwarmError as exc:
            counts[type(exc).__name__] += 1
        except Exception as exc:  # not an hswarm error: the test fails on these
            counts["other"] += 1
            others.append(f"{pos}:{bit} {type(exc).__name__}: {exc}"[:300])
        slowest = sorted([*slowest, (time.perf_counter() - start, pos, bit)], reverse=True)[:5]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if peak - baseline > FUZZ_RSS_BUDGET:
            blowup = {"pos": pos, "bit": bit, "mib": (peak - baseline) >> 20}
            break  # stop before a bigger one takes the machine's memory
    still_works = ev.evaluate("negate", [ct], {}) == reference
    report = {
        "planned": len(flips),
        "counts": counts,
        "others": others[:10],
        "blowup": blowup,
        "still_works": still_works,
        "slowest": [[round(s, 3), pos, bit] for s, pos, bit in slowest],
    }
    (workdir / f"fuzz-{shard}.json").write_text(json.dumps(report))


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


@pytest.mark.slow
def test_bit_flips_never_crash_the_evaluator(tmp_path: Path) -> None:
    ks = keys.generate_keys(_preset("insecure-ckks"), [])
    ct = ks.encrypt(VALUES)[0]
    (tmp_path / "context.bin").write_bytes(ks.public_context().to_bytes())
    (tmp_path / "ct.bin").write_bytes(ct)
    shards = max(1, min(4, os.cpu_count() or 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSWARM_")}
    env.update(OMP_NUM_THREADS="1", MALLOC_ARENA_MAX="2")
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "fuzz", str(tmp_path), str(shard), str(shards)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for shard in range(shards)
    ]
    total: collections.Counter[str] = collections.Counter()
    failures = []
    for shard, proc in enumerate(procs):
        try:
            out, err = proc.communicate(timeout=FUZZ_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            failures.append(f"shard {shard} hung (>{FUZZ_TIMEOUT_S} s) at flip {out.split()[-1:]}")
            continue
        if proc.returncode != 0:
            failures.append(
                f"shard {shard} crashed ({_describe_exit(proc.returncode)}) at flip (byte:bit) "
                f"{out.split()[-1:]}: {err.strip()[-1500:]}"
            )
            continue
        report = json.loads((tmp_path / f"fuzz-{shard}.json").read_text())
        counts = collections.Counter(report["counts"])
        total.update(counts)
        if report["blowup"]:
            b = report["blowup"]
            failures.append(
                f"shard {shard}: flipping byte {b['pos']} bit {b['bit']} made one load use {b['mib']} MiB"
            )
        elif sum(counts.values()) != report["planned"]:
            failures.append(f"shard {shard}: {sum(counts.values())} of {report['planned']} flips tried")
        if report["others"]:
            failures.append(f"shard {shard}: non-hswarm exceptions: {report['others']}")
        if not report["still_works"]:
            failures.append(f"shard {shard}: the evaluator's output changed after the fuzz")
        print(f"shard {shard}: {dict(counts)}; slowest loads (s, byte, bit): {report['slowest']}")
    print(f"bit-flip outcomes: {dict(total)}")
    assert not failures, "\n".join(failures)
    assert total["loaded"] > 0, "no flip in the body loaded: the fuzz did not reach OpenFHE"
    assert sum(total.values()) - total["loaded"] > 0


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "fuzz":
        sys.exit("usage: test_bad_input.py fuzz WORKDIR SHARD SHARDS")
    _fuzz_shard(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
