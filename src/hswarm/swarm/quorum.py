"""Replica quorum: whether a task's result is accepted, how many more replicas it needs,
and which workers it proves to be liars.

:func:`judge` reads the votes that have arrived for one task (one digest per worker for
the whole task result) and returns a :class:`Verdict`. It keeps no state, leases nothing
and punishes nobody: the caller (the queen, or the simulator) acts on the verdict and
calls it again whenever a vote arrives or a lease is lost.

Why no wrong digest is accepted: a replicated task is accepted only when
``policy.needed() >= faults + 1`` votes from distinct owners, in one determinism class,
carry the same digest. Each vote comes from a distinct worker, so with at most ``faults``
Byzantine workers (colluding or not, spread over any owners) at least one of those votes
is honest, and evaluation is deterministic within a class: the digest is the honest one.
The guarantee does not cover ``single`` tasks (adaptive replication, see
``reputation``) nor guardians, which are trusted by definition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

from hswarm import errors


@dataclasses.dataclass(frozen=True)
class Vote:
    """One worker's result for a task: the digest of its whole outputs map."""

    worker: str
    owner: str
    dclass: str
    digest: str
    guardian: bool = False


@dataclasses.dataclass(frozen=True)
class QuorumPolicy:
    """How much agreement a replicated task needs. ``faults`` is f, the number of
    Byzantine workers the answer must survive; ``max_replicas`` caps the replicas one
    task may use before it is declared undecidable (``needed() + faults`` keeps every
    task decidable when at most f workers lie and owners are distinct)."""

    quorum: int = 2
    faults: int = 1
    max_replicas: int = 7

    def __post_init__(self) -> None:
        if self.quorum < 1:
            raise errors.ParamsError(
                f"cannot build the quorum policy: quorum must be >= 1, got {self.quorum}"
            )
        if self.faults < 0:
            raise errors.ParamsError(
                f"cannot build the quorum policy: faults must be >= 0, got {self.faults}"
            )
        if self.max_replicas < self.needed():
            raise errors.ParamsError(
                f"cannot build the quorum policy: max_replicas ({self.max_replicas}) is below the "
                f"{self.needed()} matching votes a task needs; raise it to at least {self.needed()}"
            )

    def needed(self) -> int:
        """Matching votes from distinct owners a replicated task needs."""
        return max(self.quorum, self.faults + 1)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What to do with a task. ``digest`` is set only when accepted. ``dclass`` is the
    accepted class, or while pending the class of the leading digest (lease the next
    replicas there). ``wanted`` is how many replicas to lease now, on top of those in
    flight. ``liars`` are the workers an acceptance proves wrong."""

    state: Literal["accepted", "pending", "undecidable"]
    digest: str | None
    dclass: str | None
    wanted: int
    liars: frozenset[str]
    reason: str


def judge(
    votes: Sequence[Vote], policy: QuorumPolicy, *, in_flight: int = 0, single: bool = False
) -> Verdict:
    """Decide one task from its votes, in arrival order.

    - A worker votes once: its later votes are ignored. Workers of one owner count as one
      vote for a digest. Votes are compared only within one determinism class.
    - The first guardian vote is trusted and accepted at once.
    - ``single``: adaptive replication let a trusted worker run the task alone, so one
      vote suffices, until a vote in that class disagrees; then the task needs the full
      ``policy.needed()`` like any replicated one (escalation).
    - Pending: ``wanted`` is the fewest extra replicas that could settle the task if every
      replica in flight agrees with the leading digest. With nothing in flight it is at
      least 1, so disagreement always escalates; judge again on each arrival.
    - Undecidable: when the votes, the replicas in flight and ``wanted`` would exceed
      ``policy.max_replicas``.
    """
    if in_flight < 0:
        raise ValueError(f"in_flight must be >= 0, got {in_flight}")
    first: dict[str, Vote] = {}
    for v in votes:
        first.setdefault(v.worker, v)
    ballots = list(first.values())
    guardian = next((v for v in ballots if v.guardian), None)
    if guardian is not None:
        return _accepted(ballots, guardian.dclass, guardian.digest, f"guardian {guardian.worker} vouched")

    owners: dict[tuple[str, str], set[str]] = {}  # (dclass, digest) -> owners, in order of first vote
    digests: dict[str, set[str]] = {}
    for v in ballots:
        owners.setdefault((v.dclass, v.digest), set()).add(v.owner)
        digests.setdefault(v.dclass, set()).add(v.digest)

    def need(dclass: str | None) -> int:
        return 1 if single and (dclass is None or len(digests[dclass]) == 1) else policy.needed()

    counts: dict[tuple[str, str], set[str]] = {}
    for v in ballots:  # the first digest, in arrival order, to reach its need wins
        group = counts.setdefault((v.dclass, v.digest), set())
        group.add(v.owner)
        if len(group) >= need(v.dclass):
            why = f"{len(group)} distinct owner(s) agree in class {v.dclass} (need {need(v.dclass)})"
            return _accepted(ballots, v.dclass, v.digest, why)

    # The leading digest is the one closest to its need; the earliest wins a tie.
    lead = min(owners, key=lambda g: need(g[0]) - len(owners[g]), default=None)
    dclass = lead[0] if lead else None
    have = len(owners[lead]) if lead else 0
    wanted = max(0, need(dclass) - have - in_flight)
    split = any(len(d) > 1 for d in digests.values())
    status = (
        f"best digest has {have} of {need(dclass)} distinct owners, {in_flight} in flight"
        f"{', votes disagree' if split else ''}"
    )
    if len(ballots) + in_flight + wanted > policy.max_replicas:
        return Verdict(
            "undecidable",
            None,
            dclass,
            0,
            frozenset(),
            f"cannot decide within {policy.max_replicas} replicas: {len(ballots)} votes, {status}",
        )
    return Verdict("pending", None, dclass, wanted, frozenset(), f"{status}; lease {wanted} more")


def _accepted(ballots: list[Vote], dclass: str, digest: str, why: str) -> Verdict:
    liars = frozenset(v.worker for v in ballots if v.dclass == dclass and v.digest != digest)
    reason = f"accepted: {why}" + (f"; {len(liars)} worker(s) disagreed" if liars else "")
    return Verdict("accepted", digest, dclass, 0, liars, reason)
