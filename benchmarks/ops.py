"""Per-operation FHE benchmark: hswarm's evaluator against OpenFHE called directly.

For each preset it generates keys, then times every operation of ``opcodes.SPECS`` the
scheme supports three ways, in the same process, taking turns call by call:

- ``apply``: ``Evaluator.apply`` on loaded ciphertexts (the path used inside a task);
- ``direct``: the same OpenFHE calls on ``ev.cc`` and the native ciphertexts, with every
  plaintext encoded once outside the timed region;
- ``evaluate``: ``Evaluator.evaluate``, bytes in and out, so (de)serialization shows.

For the ops that encode a plaintext inside ``apply`` (plaintext vectors, BFV/BGV scalars),
a fourth variant, ``direct + encode``, encodes with OpenFHE inside the timed region too,
which separates hswarm's wrapper cost from the encoding cost a real caller pays anyway.
It also prints key and ciphertext sizes and the machine it ran on, and checks once per
op that hswarm and the direct calls produce byte-identical ciphertexts (proof that the
baseline does the same work).

It is a benchmark, not a test: it asserts nothing about timings. It measures one process
on one machine; the swarm's own overheads (queen, network, replication) are measured
elsewhere.

    python benchmarks/ops.py                      # secure and insecure presets, median of 5
    python benchmarks/ops.py --quick              # insecure presets only, median of 3
    python benchmarks/ops.py --presets insecure-ckks --repeat 9 --json /tmp/ops.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib.metadata
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hswarm.crypto import context, evaluator, keys, opcodes, params
from hswarm.program import functions

DEFAULT_PRESETS = (
    "ckks",
    "bfv",
    "bgv",
    "insecure-ckks",
    "insecure-bfv",
    "insecure-bgv",
    "insecure-ckks-bootstrap",
)
TARGET_OVERHEAD = 1.05
# A repetition of a fast op runs each variant for about this many seconds: one call of
# a sub-millisecond op is below the scheduler's noise.
BATCH_SECONDS = 0.05
MAX_BATCH = 2000
# Seconds of timing per preset (key generation excluded), shared among its ops: an op
# whose repetitions would overrun its share gets fewer, so that the secure presets
# (N = 2^14..2^15) finish in minutes on a 2-core machine.
PRESET_BUDGET_SECONDS = 150.0
# Never fewer repetitions than this (unless --repeat asks for fewer): on a shared
# machine a single repetition of a slow op gave ratios off by 4x.
MIN_REPEAT = 3
MATVEC_SIZE = 4
SIGMOID = ("sigmoid", -8.0, 8.0)
CHEBYSHEV_DEGREES = (27, 13, 5)  # the first one the preset's depth allows
CKKS_POLY = [0.1, 0.5, 0.0, -0.1, 0.0, 0.02]  # degree 5: OpenFHE's linear method, 3 levels
INT_POLY = [1, 2, 0, 1]  # degree 3: hswarm's power tree, 2 levels (+1 in BGV)

Native = Any
Thunk = Callable[[], Any]


@dataclasses.dataclass
class Case:
    """One op to time: hswarm's inputs and the OpenFHE calls that mirror it."""

    op: str
    label: str
    operands: list[evaluator.Ciphertext]
    attrs: dict[str, Any]
    direct: Thunk
    direct_encode: Thunk | None = None
    note: str = ""


@dataclasses.dataclass
class Row:
    op: str
    label: str
    repeat: int
    batch: int
    seconds: dict[str, float]
    samples: dict[str, list[float]]
    overhead: float
    overhead_min: float
    overhead_encode: float | None
    out_bytes: int
    levels: str
    same_bytes: bool
    note: str


# -- the direct OpenFHE side ------------------------------------------------------------


class Encoder:
    """Packs plaintexts with raw OpenFHE calls, the way a direct OpenFHE user would:
    CKKS sparse packing over ``slots``, BFV/BGV tiled over the ring (as hswarm's codec)."""

    def __init__(self, cc: Any, p: params.Params) -> None:
        self.cc = cc
        self.p = p
        self.ring = cc.GetRingDimension()

    def prepare(self, values: Sequence[Any]) -> list[Any]:
        if self.p.scheme == "ckks":
            return [float(v) for v in values]
        return np.tile(np.asarray(values, dtype=np.int64), self.ring // self.p.slots).tolist()

    def encode(self, prepared: list[Any], level: int) -> Native:
        if self.p.scheme == "ckks":
            return self.cc.MakeCKKSPackedPlaintext(prepared, 1, level, None, self.p.slots)
        return self.cc.MakePackedPlaintext(prepared)


def sum_slots(cc: Any, ct: Native, slots: int) -> Native:
    acc = ct
    for i in range(int(math.log2(slots))):
        acc = cc.EvalAdd(acc, cc.EvalRotate(acc, 1 << i))
    return acc


def matvec(cc: Any, ct: Native, diagonals: list[tuple[int, Callable[[], Native]]]) -> Native:
    acc = None
    for d, plain in diagonals:
        rotated = cc.EvalRotate(ct, d) if d else ct
        term = cc.EvalMult(rotated, plain())
        acc = term if acc is None else cc.EvalAdd(acc, term)
    return acc


def integer_poly(cc: Any, ct: Native, coefficients: list[int], scalar: Callable[[int], Native]) -> Native:
    degree = opcodes.poly_degree(coefficients)
    powers = {1: ct}
    for k in range(2, degree + 1):
        high = 1 << (k.bit_length() - 1)
        powers[k] = (
            cc.EvalSquare(powers[high // 2]) if high == k else cc.EvalMult(powers[high], powers[k - high])
        )
    acc = None
    for k in range(1, degree + 1):
        if coefficients[k]:
            term = cc.EvalMult(powers[k], scalar(coefficients[k]))
            acc = term if acc is None else cc.EvalAdd(acc, term)
    if coefficients[0]:
        acc = cc.EvalAdd(acc, scalar(coefficients[0]))
    return acc


def chebyshev_degree(p: params.Params) -> int:
    for degree in CHEBYSHEV_DEGREES:
        attrs = {"coefficients": [0.0] * (degree + 1), "lo": SIGMOID[1], "hi": SIGMOID[2]}
        if opcodes.depth_cost("chebyshev", "ckks", attrs) <= p.depth:
            return degree
    return CHEBYSHEV_DEGREES[-1]


def build_cases(
    ev: evaluator.Evaluator, p: params.Params, a: evaluator.Ciphertext, b: evaluator.Ciphertext
) -> list[Case]:
    """Every op the scheme supports (bootstrap excepted), on fresh ciphertexts a and b."""
    cc, slots, ckks = ev.cc, p.slots, p.scheme == "ckks"
    enc = Encoder(cc, p)
    x, y = a.native, b.native
    level = x.GetLevel() if ckks else 0
    rng = np.random.default_rng(1)
    values = rng.uniform(-1, 1, slots).tolist() if ckks else rng.integers(-5, 6, slots).tolist()
    prepared = enc.prepare(values)
    plain = enc.encode(prepared, level)
    add_value, mul_value = (1.5, 0.5) if ckks else (7, 3)

    if ckks:
        scalars: dict[Any, Native] = {}
        add_scalar, mul_scalar = float(add_value), float(mul_value)
    else:
        scalars = {v: enc.encode([v] * enc.ring, 0) for v in {add_value, mul_value, *INT_POLY}}
        add_scalar, mul_scalar = scalars[add_value], scalars[mul_value]

    def int_scalar_encoded(v: int) -> Native:
        return enc.encode([v] * enc.ring, 0)

    encode_note = "apply encodes the plaintext"
    cases = [
        Case("add", "add", [a, b], {}, lambda: cc.EvalAdd(x, y)),
        Case("sub", "sub", [a, b], {}, lambda: cc.EvalSub(x, y)),
        Case("mul", "mul (ct×ct, relin)", [a, b], {}, lambda: cc.EvalMult(x, y)),
        Case("negate", "negate", [a], {}, lambda: cc.EvalNegate(x)),
        Case(
            "add_plain",
            "add_plain",
            [a],
            {"values": values},
            lambda: cc.EvalAdd(x, plain),
            lambda: cc.EvalAdd(x, enc.encode(prepared, level)),
            encode_note,
        ),
        Case(
            "sub_plain",
            "sub_plain",
            [a],
            {"values": values},
            lambda: cc.EvalSub(x, plain),
            lambda: cc.EvalSub(x, enc.encode(prepared, level)),
            encode_note,
        ),
        Case(
            "mul_plain",
            "mul_plain",
            [a],
            {"values": values},
            lambda: cc.EvalMult(x, plain),
            lambda: cc.EvalMult(x, enc.encode(prepared, level)),
            encode_note,
        ),
        Case(
            "add_scalar",
            "add_scalar",
            [a],
            {"value": add_value},
            lambda: cc.EvalAdd(x, add_scalar),
            None if ckks else (lambda: cc.EvalAdd(x, int_scalar_encoded(add_value))),
            "" if ckks else "apply encodes the scalar as a packed plaintext",
        ),
        Case(
            "mul_scalar",
            "mul_scalar",
            [a],
            {"value": mul_value},
            lambda: cc.EvalMult(x, mul_scalar),
            None if ckks else (lambda: cc.EvalMult(x, int_scalar_encoded(mul_value))),
            "" if ckks else "apply encodes the scalar as a packed plaintext",
        ),
        Case("rotate", "rotate (1 step)", [a], {"steps": 1}, lambda: cc.EvalRotate(x, 1)),
        Case(
            "sum_slots",
            "sum_slots",
            [a],
            {},
            lambda: sum_slots(cc, x, slots),
            note=f"{int(math.log2(slots))} rotations",
        ),
        Case(
            "dot",
            "dot",
            [a, b],
            {},
            lambda: sum_slots(cc, cc.EvalMult(x, y), slots),
            note=f"mul + {int(math.log2(slots))} rotations",
        ),
        Case(
            "dot_plain",
            "dot_plain",
            [a],
            {"values": values},
            lambda: sum_slots(cc, cc.EvalMult(x, plain), slots),
            lambda: sum_slots(cc, cc.EvalMult(x, enc.encode(prepared, level)), slots),
            f"{encode_note}; {int(math.log2(slots))} rotations",
        ),
    ]

    matrix = (
        rng.uniform(-1, 1, (MATVEC_SIZE, MATVEC_SIZE))
        if ckks
        else rng.integers(-5, 6, (MATVEC_SIZE, MATVEC_SIZE))
    )
    rows = matrix.tolist()
    pre: list[tuple[int, Callable[[], Native]]] = []
    enc_inside: list[tuple[int, Callable[[], Native]]] = []
    for d in opcodes.matvec_diagonals(MATVEC_SIZE, MATVEC_SIZE, slots):
        diagonal = [0.0 if ckks else 0] * slots
        for r in range(MATVEC_SIZE):
            c = (r + d) % slots
            if c < MATVEC_SIZE:
                diagonal[r] = rows[r][c]
        if not any(diagonal):
            continue
        ready = enc.encode(enc.prepare(diagonal), level)
        pre.append((d, lambda ready=ready: ready))
        diag_prepared = enc.prepare(diagonal)
        enc_inside.append((d, lambda dp=diag_prepared: enc.encode(dp, level)))
    rotations = sum(1 for d, _ in pre if d)
    cases.append(
        Case(
            "matvec",
            f"matvec ({MATVEC_SIZE}×{MATVEC_SIZE})",
            [a],
            {"matrix": rows},
            lambda: matvec(cc, x, pre),
            lambda: matvec(cc, x, enc_inside),
            f"{encode_note}s ({len(pre)} diagonals); {rotations} rotations",
        )
    )

    if ckks:
        cases.append(
            Case(
                "poly",
                f"poly (degree {len(CKKS_POLY) - 1})",
                [a],
                {"coefficients": CKKS_POLY},
                lambda: cc.EvalPoly(x, CKKS_POLY),
            )
        )
        degree = chebyshev_degree(p)
        name, lo, hi = SIGMOID
        coefficients = functions.chebyshev_coefficients(name, lo, hi, degree)
        cases.append(
            Case(
                "chebyshev",
                f"chebyshev ({name}, degree {degree}, [{lo:g}, {hi:g}])",
                [a],
                {"coefficients": coefficients, "lo": lo, "hi": hi},
                lambda: cc.EvalChebyshevSeries(x, coefficients, lo, hi),
            )
        )
    else:
        cases.append(
            Case(
                "poly",
                f"poly (degree {len(INT_POLY) - 1})",
                [a],
                {"coefficients": INT_POLY},
                lambda: integer_poly(cc, x, INT_POLY, scalars.__getitem__),
                lambda: integer_poly(cc, x, INT_POLY, int_scalar_encoded),
                "apply encodes each coefficient; power tree",
            )
        )
    return cases


def bootstrap_case(ev: evaluator.Evaluator, p: params.Params, a: evaluator.Ciphertext) -> Case:
    """Bootstrap a ciphertext with all but one level used (on a fresh one OpenFHE's
    EvalBootstrap has nothing to refresh)."""
    x = a
    limit = context.total_depth(p) - 1  # bootstrapping needs one level left
    while x.levels_used < limit:
        x = ev.apply("mul", [x, x], {})
    cc, native = ev.cc, x.native
    return Case(
        "bootstrap",
        f"bootstrap (input: {x.levels_used}/{limit + 1} levels used)",
        [x],
        {},
        lambda: cc.EvalBootstrap(native),
    )


# -- timing -----------------------------------------------------------------------------


def timed_repetition(variants: dict[str, Thunk], batch: int, order: random.Random) -> dict[str, float]:
    """Seconds per call of each variant over ``batch`` calls each. The variants take turns
    call by call, so that load from other processes falls on all of them alike, in a
    shuffled order: with a fixed rotation one variant would mostly follow ``evaluate``,
    whose freed buffers and cold caches slow the next call (measured: 3-5% on a 0.6 ms BGV add).
    The garbage collector is off, as in timeit."""
    names = list(variants)
    total = dict.fromkeys(names, 0.0)
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(batch):
            for name in order.sample(names, len(names)):
                fn = variants[name]
                start = time.perf_counter()
                fn()
                total[name] += time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()
    return {name: seconds / batch for name, seconds in total.items()}


def measure(ev: evaluator.Evaluator, case: Case, repeat: int, budget: float) -> Row:
    """Time one case: ``repeat`` repetitions, fewer if they would not fit ``budget`` seconds."""
    began = time.perf_counter()
    operand_bytes = [ev.dump(ct) for ct in case.operands]
    variants: dict[str, Thunk] = {
        "apply": lambda: ev.apply(case.op, case.operands, case.attrs),
        "direct": case.direct,
        "evaluate": lambda: ev.evaluate(case.op, operand_bytes, case.attrs),
    }
    if case.direct_encode is not None:
        variants["direct+encode"] = case.direct_encode

    # Warm-up, once per op: also the check that the baseline computes the same thing.
    start = time.perf_counter()
    ours = variants["apply"]()
    single = time.perf_counter() - start
    start = time.perf_counter()
    theirs = case.direct()
    # The faster of two calls sizes the batches: one call alone is at the mercy of noise.
    single = min(single, time.perf_counter() - start)
    out = ev.dump(ours)
    same = out == ev.dump(evaluator.Ciphertext(theirs, ev.digest))
    if case.direct_encode is not None:
        same = same and out == ev.dump(evaluator.Ciphertext(case.direct_encode(), ev.digest))
    levels = (
        "—"
        if ev.params.scheme == "bfv"
        else f"{max(ct.levels_used for ct in case.operands)}→{ours.levels_used}"
    )
    del ours, theirs

    batch = max(1, min(MAX_BATCH, math.ceil(BATCH_SECONDS / max(single, 1e-9))))
    per_repetition = len(variants) * batch * single
    left = budget - (time.perf_counter() - began)
    reps = max(min(repeat, MIN_REPEAT), min(repeat, int(left / per_repetition)))
    samples: dict[str, list[float]] = {name: [] for name in variants}
    order = random.Random(case.op)  # reproducible shuffles
    for _ in range(reps):
        for name, seconds in timed_repetition(variants, batch, order).items():
            samples[name].append(seconds)
    seconds = {name: statistics.median(values) for name, values in samples.items()}
    encode = seconds.get("direct+encode")
    return Row(
        op=case.op,
        label=case.label,
        repeat=reps,
        batch=batch,
        seconds=seconds,
        samples=samples,
        overhead=seconds["apply"] / seconds["direct"],
        overhead_min=min(samples["apply"]) / min(samples["direct"]),
        overhead_encode=None if encode is None else seconds["apply"] / encode,
        out_bytes=len(out),
        levels=levels,
        same_bytes=same,
        note=case.note,
    )


# -- one preset -------------------------------------------------------------------------


def bench_preset(name: str, repeat: int, budget: float, log: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    p = params.preset(name, allow_insecure=True)
    ops_wanted = (
        ["bootstrap"]
        if p.can_bootstrap
        else [op for op, spec in opcodes.SPECS.items() if p.scheme in spec.schemes and op != "bootstrap"]
    )
    rng = np.random.default_rng(0)
    if p.scheme == "ckks":
        low = 0.5 if p.can_bootstrap else -1.0  # repeated squaring must not underflow
        first, second = rng.uniform(low, 1, p.slots), rng.uniform(low, 1, p.slots)
    else:
        first, second = rng.integers(-10, 11, p.slots), rng.integers(-10, 11, p.slots)

    log(f"{name}: generating keys")
    t = time.perf_counter()
    # Rotation keys: the union over the benchmarked ops (attrs only matter for rotate/matvec).
    probe = {"rotate": {"steps": 1}, "matvec": {"matrix": [[0] * MATVEC_SIZE] * MATVEC_SIZE}}
    indices: set[int] = set()
    for op in ops_wanted:
        indices |= opcodes.rotation_indices(op, p.slots, probe.get(op, {}))
    ks = keys.generate_keys(p, indices)
    keygen = time.perf_counter() - t
    pc = ks.public_context()
    encrypted = [ks.encrypt(first)[0], ks.encrypt(second)[0]]
    t = time.perf_counter()
    ev = evaluator.Evaluator(pc)
    load = time.perf_counter() - t
    a, b = ev.load(encrypted[0]), ev.load(encrypted[1])

    cases = [bootstrap_case(ev, p, a)] if p.can_bootstrap else build_cases(ev, p, a, b)
    rows: list[Row] = []
    timing_began = time.perf_counter()
    for i, case in enumerate(cases):
        share = (budget - (time.perf_counter() - timing_began)) / (len(cases) - i)
        log(f"{name}: {case.label} (budget {share:.1f} s)")
        rows.append(measure(ev, case, repeat, share))
    result = {
        "preset": name,
        "label": p.label,
        "scheme": p.scheme,
        "insecure": p.insecure,
        "bootstrap": p.can_bootstrap,
        "ring_dim": ev.cc.GetRingDimension(),
        "slots": p.slots,
        "depth": p.depth,
        "total_depth": context.total_depth(p),
        "keygen_s": keygen,
        "evaluator_load_s": load,
        "rotation_keys_count": len(pc.rotation_indices),
        "sizes": {
            "ciphertext": len(encrypted[0]),
            "context": len(pc.context),
            "public_key": len(pc.public_key),
            "mult_keys": len(pc.mult_keys),
            "rotation_keys": len(pc.rotation_keys),
            "public_context": pc.size,
        },
        "budget_s": budget,
        "timing_s": time.perf_counter() - timing_began,
        "reduced": [row.op for row in rows if row.repeat < repeat],
        "rows": [dataclasses.asdict(row) for row in rows],
    }
    del ev, ks, a, b, cases
    gc.collect()
    result["wall_s"] = time.perf_counter() - started
    result["load_average"] = [load_before, os.getloadavg()[0]]
    return result


# -- reporting --------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "openfhe": version("openfhe"),
        "hswarm": version("hswarm"),
        "numpy": version("numpy"),
    }


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    value = seconds * 1e3
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def ratio(value: float | None) -> str:
    if value is None:
        return "—"
    mark = " ⚠" if value > TARGET_OVERHEAD else ""
    return f"{value:.3f}×{mark}"


def render_preset(result: dict[str, Any], repeat: int) -> list[str]:
    s = result["sizes"]
    lines = [
        f"## {result['label']}",
        "",
        f"- ring dimension N={result['ring_dim']} (OpenFHE's choice), {result['slots']} slots, "
        f"depth {result['depth']} (context depth {result['total_depth']})",
        f"- key generation {result['keygen_s']:.2f} s; evaluator load {result['evaluator_load_s']:.2f} s; "
        f"preset wall time {result['wall_s']:.1f} s; 1-min load average {result['load_average'][0]:.1f} "
        f"before, {result['load_average'][1]:.1f} after",
        f"- timing took {result['timing_s']:.1f} s of a {result['budget_s']:g} s budget; "
        + (
            f"fewer than {repeat} repetitions (marked *) for: {', '.join(result['reduced'])}"
            if result["reduced"]
            else f"every op got {repeat} repetitions"
        ),
        f"- sizes: fresh ciphertext {size(s['ciphertext'])}; context {size(s['context'])}; "
        f"public key {size(s['public_key'])}; relinearization keys {size(s['mult_keys'])}; "
        f"rotation keys {size(s['rotation_keys'])} ({result['rotation_keys_count']} indices"
        f"{' + bootstrapping keys' if result['bootstrap'] else ''}); "
        f"public context total {size(s['public_context'])}",
        "",
        "| op | reps × calls | apply ms | direct ms | apply/direct | apply/direct (min) | direct+encode ms "
        "| apply/(direct+encode) | evaluate ms (bytes in/out) | out ct | levels used | same bytes | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for row in result["rows"]:
        sec = row["seconds"]
        reps = f"{row['repeat']}{'*' if row['repeat'] < repeat else ''} × {row['batch']}"
        lines.append(
            f"| {row['label']} | {reps} | {ms(sec['apply'])} | {ms(sec['direct'])} "
            f"| {ratio(row['overhead'])} | {ratio(row['overhead_min'])} | {ms(sec.get('direct+encode'))} "
            f"| {ratio(row['overhead_encode'])} "
            f"| {ms(sec['evaluate'])} | {size(row['out_bytes'])} | {row['levels']} "
            f"| {'yes' if row['same_bytes'] else 'NO'} | {row['note']} |"
        )
    lines.append("")
    return lines


def render(report: dict[str, Any]) -> str:
    m, repeat = report["machine"], report["repeat"]
    lines = [
        "# hswarm per-operation benchmark",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"OMP_NUM_THREADS={m['omp_num_threads']}, {m['platform']}",
        f"- software: Python {m['python']}, openfhe {m['openfhe']}, hswarm {m['hswarm']}, numpy {m['numpy']}",
        f"- run: {report['started']}, presets {', '.join(report['presets'])}",
        f"- method: median of {repeat} repetitions per op, fewer (marked *, at least "
        f"{min(repeat, MIN_REPEAT)}) where they would not fit the preset's timing budget of "
        f"{report['budget_s']:g} s shared among its ops; in a repetition "
        f"each variant runs a batch of calls lasting ≥{BATCH_SECONDS * 1e3:g} ms, the variants taking "
        "turns call by call in a shuffled order; one warm-up per op. Inputs are fresh ciphertexts "
        "(bootstrap: one with all but one level used).",
        "- apply = `Evaluator.apply` on loaded ciphertexts; direct = the same OpenFHE calls on `ev.cc` "
        "with plaintexts encoded once outside the timed region; direct+encode = direct, encoding inside "
        "the timed region (only for ops whose `apply` encodes); evaluate = `Evaluator.evaluate`, "
        "bytes in and out. same bytes = apply and direct gave byte-identical ciphertexts.",
        "- apply/direct is the ratio of the medians; apply/direct (min) the ratio of the fastest "
        f"repetitions. Target: ≤ {TARGET_OVERHEAD}× "
        "(⚠ marks a ratio above it).",
    ]
    loads = [load for result in report["results"] for load in result["load_average"]]
    # The benchmark itself keeps up to one OpenMP thread per core busy.
    if loads and max(loads) > m["usable_cores"] + 0.5:
        lines.append(
            f"- ⚠ busy machine: 1-min load average up to {max(loads):.1f} on {m['usable_cores']} usable "
            "cores, of which this benchmark accounts for at most one per core. Other processes took "
            "CPU time during the run, and OpenFHE's OpenMP threads wait for each other at every "
            "parallel section, so an op can take whole scheduler ticks (multiples of ~4-8 ms) instead "
            "of its own time. The variants of one row take turns call by call and "
            "share that noise, so compare ratios within a row, not absolute times across rows or runs; "
            "for clean absolute times rerun on an idle machine (OMP_NUM_THREADS=1 removes the waits but "
            "measures one core)."
        )
    lines.append("")
    for result in report["results"]:
        lines += render_preset(result, repeat)
    over = [
        f"{result['preset']}/{row['op']} {row['overhead']:.3f}× (min {row['overhead_min']:.3f}×)"
        for result in report["results"]
        for row in result["rows"]
        if row["overhead"] > TARGET_OVERHEAD
    ]
    lines.append(f"Ops above {TARGET_OVERHEAD}× apply/direct: {', '.join(over) if over else 'none'}.")
    lines.append(f"Total wall time {report['wall_s']:.1f} s.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--presets",
        help=f"comma-separated preset names (default: {','.join(DEFAULT_PRESETS)}); "
        f"known: {', '.join(params.PRESETS)}",
    )
    parser.add_argument("--repeat", type=int, help="repetitions per op; the median is reported (default 5)")
    parser.add_argument("--quick", action="store_true", help="insecure presets only, 3 repetitions")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement as JSON")
    parser.add_argument(
        "--budget",
        type=float,
        default=PRESET_BUDGET_SECONDS,
        help="seconds of timing per preset, key generation excluded; slow ops get fewer "
        f"repetitions (at least {MIN_REPEAT}) to fit (default {PRESET_BUDGET_SECONDS:g})",
    )
    args = parser.parse_args(argv)

    names = args.presets.split(",") if args.presets else list(DEFAULT_PRESETS)
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in params.PRESETS]
    if unknown:
        parser.error(f"unknown preset(s) {', '.join(unknown)}; known: {', '.join(params.PRESETS)}")
    if args.quick:
        names = [n for n in names if params.PRESETS[n]["security"] == params.INSECURE]
    repeat = args.repeat if args.repeat is not None else (3 if args.quick else 5)
    if repeat < 1 or not names:
        parser.error("need --repeat ≥ 1 and at least one preset")

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": machine(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "presets": names,
        "repeat": repeat,
        "budget_s": args.budget,
        "settings": {
            "batch_seconds": BATCH_SECONDS,
            "preset_budget_s": args.budget,
            "target_overhead": TARGET_OVERHEAD,
        },
        "results": [bench_preset(name, repeat, args.budget, log) for name in names],
    }
    report["wall_s"] = time.perf_counter() - started
    print(render(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
