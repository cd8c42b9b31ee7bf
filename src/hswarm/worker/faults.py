"""Fault injection: a worker that misbehaves on purpose, for tests and chaos runs only.

A :class:`Fault` is parsed from the text an operator gives (``--fault`` or
``HSWARM_FAULT``) by :func:`parse`; its canonical text is what the worker declares to
the queen in its ``Registration`` (the queen refuses faulty workers unless its settings
allow them). The modes:

- ``garbage``: every output is random bytes of the honest output's length.
- ``wrong-value``: every output is a valid encryption of zeros under the context's
  public key (made in the executor child: only there is OpenFHE loaded).
- ``replay``: the digests of outputs it uploaded for an earlier task; honest until one exists.
- ``bitflip``: the honest output with one bit flipped deep in the serialized body, so it
  still deserializes.
- ``slow[:SECONDS]``: honest, but sleeps before posting each result (default 2 s).
- ``crash``: the process exits abruptly (status 70) after computing its first task and
  before posting it, so its lease has to expire at the queen.
- ``collude:GROUP``: the same wrong bytes as every other worker of GROUP, derived from
  (GROUP, task id, step id): colluders agree with each other, never with the truth.
- ``sleeper:N``: honest for its first N tasks, then lies like ``wrong-value``.

A lying worker still follows the protocol (it uploads its wrong blobs and posts a normal
``TaskResult``): only verification can catch it. This module holds the parsing, the
pure byte transforms and the :class:`Saboteur`'s decisions (which task lies, what to
replay); it does no I/O, no sleeping, no logging and no OpenFHE. The supervisor acts on
its decisions and the executor child tells the byte lies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import threading
from collections.abc import Mapping

from hswarm import errors

CRASH_STATUS = 70  # EX_SOFTWARE: the process died on its own, not on a signal
DEFAULT_SLOW_S = 2.0
MAX_SLOW_S = 3600.0
MAX_GROUP = 64
REPLAY_HISTORY = 256  # earlier output digests a replaying worker keeps
BITFLIP_TAIL = 256  # bytes at the end of a ciphertext that hold its metadata, not coefficients

# Mode -> argument it takes ("" none, "?" optional, "!" required) and what it does.
MODES: dict[str, tuple[str, str]] = {
    "garbage": ("", "every output is random bytes"),
    "wrong-value": ("", "every output is a valid encryption of zeros"),
    "replay": ("", "each result repeats the digests of outputs uploaded for an earlier task"),
    "bitflip": ("", "every output has one bit flipped deep in its body"),
    "slow": ("?", "results are honest but posted after a {seconds:g} s sleep"),
    "crash": ("", "the process exits abruptly (status 70) in the middle of its first task"),
    "collude": ("!", "every output is the wrong bytes all workers of group {group!r} agree on"),
    "sleeper": (
        "!",
        "its first {honest_tasks} task(s) are honest, then every output is an encryption of zeros",
    ),
}
LYING_MODES = ("garbage", "wrong-value", "bitflip", "collude", "sleeper")  # told in the executor
VALID = "garbage, wrong-value, replay, bitflip, slow[:SECONDS], crash, collude:GROUP, sleeper:N"
_GROUP = re.compile(r"^[A-Za-z0-9._-]+$")


class FaultModeError(errors.HSwarmError):
    """cannot inject the fault: unknown mode or bad argument; valid modes: garbage, wrong-value,
    replay, bitflip, slow[:SECONDS], crash, collude:GROUP, sleeper:N."""


@dataclasses.dataclass(frozen=True)
class Fault:
    """A parsed fault mode; ``str()`` gives its canonical text (what the queen is told)."""

    mode: str
    seconds: float = 0.0  # slow
    group: str = ""  # collude
    honest_tasks: int = 0  # sleeper

    def __str__(self) -> str:
        if self.mode == "slow":
            return f"slow:{self.seconds:g}"
        if self.mode == "collude":
            return f"collude:{self.group}"
        if self.mode == "sleeper":
            return f"sleeper:{self.honest_tasks}"
        return self.mode

    @property
    def description(self) -> str:
        return MODES[self.mode][1].format(**dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class Lie:
    """What an executor child does to a task's honest outputs: ``kind`` is garbage,
    wrong-value, bitflip or collude (with the colluders' ``group``)."""

    kind: str
    group: str = ""


def parse(text: str) -> Fault:
    """The :class:`Fault` for ``text`` (``mode`` or ``mode:argument``), or FaultModeError
    naming the valid modes."""
    raw = text.strip()
    name, colon, argument = raw.partition(":")
    mode = name.strip().lower()
    argument = argument.strip()
    if mode not in MODES:
        raise FaultModeError(f"cannot inject fault {text!r}: unknown mode {mode!r}; valid modes: {VALID}")
    takes = MODES[mode][0]
    if takes == "" and colon:
        raise FaultModeError(f"cannot inject fault {text!r}: {mode} takes no argument; valid modes: {VALID}")
    if takes == "!" and not argument:
        shape = "collude:GROUP" if mode == "collude" else "sleeper:N"
        raise FaultModeError(f"cannot inject fault {text!r}: {mode} needs an argument, as in {shape}")
    if mode == "slow":
        return Fault(mode, seconds=_seconds(text, argument) if colon else DEFAULT_SLOW_S)
    if mode == "collude":
        if len(argument) > MAX_GROUP or not _GROUP.match(argument):
            raise FaultModeError(
                f"cannot inject fault {text!r}: the collusion group must be 1 to {MAX_GROUP} "
                "letters, digits, '.', '_' or '-'"
            )
        return Fault(mode, group=argument)
    if mode == "sleeper":
        try:
            count = int(argument)
        except ValueError:
            count = -1
        if count < 0:
            raise FaultModeError(
                f"cannot inject fault {text!r}: sleeper:N needs N, the number of honest tasks, "
                "as a whole number >= 0"
            )
        return Fault(mode, honest_tasks=count)
    return Fault(mode)


def _seconds(text: str, argument: str) -> float:
    try:
        seconds = float(argument)
    except ValueError:
        seconds = math.nan
    if not 0.0 <= seconds <= MAX_SLOW_S:  # also refuses NaN
        raise FaultModeError(
            f"cannot inject fault {text!r}: slow:SECONDS needs a number of seconds in [0, {MAX_SLOW_S:g}]"
        )
    return seconds


# -- the byte lies (pure) ----------------------------------------------------------------


def garbage(honest: bytes) -> bytes:
    """Random bytes as long as the honest output (they do not deserialize)."""
    return os.urandom(len(honest))


def flip_bit(honest: bytes, offset: int, bit: int = 0) -> bytes:
    """The honest bytes with bit ``bit`` of byte ``offset`` flipped."""
    if not 0 <= offset < len(honest) or not 0 <= bit < 8:
        raise ValueError(f"cannot flip bit {bit} of byte {offset}: out of range for {len(honest)} bytes")
    flipped = bytearray(honest)
    flipped[offset] ^= 1 << bit
    return bytes(flipped)


def body_offset(length: int, draw: bytes) -> int:
    """A byte offset in the last half of a serialized ciphertext, short of its metadata tail:
    the polynomial coefficients live there, so a flip still deserializes. ``draw`` (random
    bytes) picks it, so independent faulty workers do not agree by accident."""
    low, high = length // 2, max(length // 2 + 1, length - BITFLIP_TAIL)
    return low + int.from_bytes(hashlib.sha256(draw).digest()[:8], "big") % (high - low)


def collusion_bytes(group: str, task_id: str, step_id: int, length: int) -> bytes:
    """The wrong output every worker of ``group`` returns for step ``step_id`` of task
    ``task_id``: SHAKE-256 expanding sha256(group, task id, step id) to ``length`` bytes."""
    seed = hashlib.sha256(json.dumps([group, task_id, int(step_id)]).encode()).digest()
    return hashlib.shake_256(seed).digest(length)


# -- per-worker decisions ----------------------------------------------------------------


class Saboteur:
    """The decisions of one faulty worker, shared by its task threads: which task lies and
    how, and which earlier digests a replay posts. It acts on nothing itself."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self._lock = threading.Lock()
        self._started = 0
        self._uploaded: list[tuple[str, str]] = []  # (task id, digest), oldest first

    @property
    def crashes(self) -> bool:
        return self.fault.mode == "crash"

    @property
    def delay_s(self) -> float:
        """Seconds to sleep before posting a result."""
        return self.fault.seconds if self.fault.mode == "slow" else 0.0

    def begin(self) -> Lie | None:
        """Count a task that starts; the lie its executor tells, or None for the truth."""
        with self._lock:
            self._started += 1
            started = self._started
        mode = self.fault.mode
        if mode == "sleeper":
            return Lie("wrong-value") if started > self.fault.honest_tasks else None
        if mode in LYING_MODES:
            return Lie(mode, self.fault.group)
        return None

    def replay(self, task_id: str, honest: Mapping[int, str]) -> dict[int, str]:
        """For a replaying worker, the outputs to post instead of ``honest``: digests it
        uploaded for earlier tasks (most recent first), never the honest digest of the same
        step. Outputs it has nothing to replay for stay honest."""
        if self.fault.mode != "replay":
            return dict(honest)
        with self._lock:
            earlier = list(dict.fromkeys(d for t, d in reversed(self._uploaded) if t != task_id))
        posted: dict[int, str] = {}
        for i, (sid, digest) in enumerate(sorted(honest.items())):
            others = [d for d in earlier if d != digest]
            posted[sid] = others[i % len(others)] if others else digest
        return posted

    def remember(self, task_id: str, digests: Mapping[int, str]) -> None:
        """Record outputs uploaded for ``task_id`` (what a replay can post later)."""
        with self._lock:
            self._uploaded.extend((task_id, d) for _, d in sorted(digests.items()))
            del self._uploaded[:-REPLAY_HISTORY]
