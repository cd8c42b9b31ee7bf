"""Routing: which waiting tasks to offer a worker that asks for work.

The swarm pulls: a worker asks, and :func:`choose` picks up to ``k`` of the ``offers``
the caller may give it (tasks it is allowed to run: replicas of one task already go to
distinct owners) under one of the :data:`STRATEGIES`:

- ``fifo``: the oldest offers.
- ``random``: a uniform sample.
- ``least-loaded``: nothing while at least as many ``others`` are less loaded than
  this asker as tasks are waiting (they take them all); else warm keys first, oldest first.
- ``pheromone``: a sample without replacement, weighted ``τ^α · η^β``, where τ is the
  :class:`Trails` level of (worker, trail key) and ``η = warm · speed / (1 + load)``
  (``warm`` is 1 when the worker holds the task's context keys, else ``cold_eta``;
  ``speed`` is the asker's ``speed_hint``, 1 when unknown).

Where pheromone can win. In a pull system every worker gets work while the queue is
long, so routing only changes which worker runs which task. Pheromone gains from key
locality (a cold context costs a key transfer; a trail grows on the keys a worker ran
fast and verified) and at the tail: the tasks of a key are withheld from the asker when
at least as many ``others`` each weigh ``defer_ratio`` times more for that key as tasks
are ``waiting``. A long queue is never withheld; the last tasks go to clearly better
workers (warm, fast, verified, not overloaded) instead of whoever asks first, which
shortens the tail of a job, not the bulk of it.

``others`` are the workers that will ask soon, busy ones included (their load lowers
their weight): for instance a sample of a few dozen live workers. Leave out workers
that may not take the offers (quarantined, or whose owner already holds a replica of
one): a task withheld for a worker that cannot take it waits until the others change.
Both withholding rules cost O(len(others) × distinct trail keys) per call.

Pure: the caller passes the random generator and the time (``now``); nothing here reads
a clock. :class:`Trails` is the one mutable object, a small map the caller persists
with :meth:`Trails.to_json`.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from typing import Any

from hswarm import errors

STRATEGIES = ("fifo", "random", "least-loaded", "pheromone")
SCHEMA = "hswarm.trails/1"
_SEPARATOR = "|"
_PACE_WEIGHT = 0.1  # weight of a new result in a key's running mean of seconds


def trail_key(context: str, op_class: str) -> str:
    """The key trails are laid on: a context digest and an operation class."""
    if _SEPARATOR in context:
        raise ValueError(f"a context digest cannot contain {_SEPARATOR!r}: {context!r}")
    return f"{context}{_SEPARATOR}{op_class}"


def context_of(key: str) -> str:
    return key.partition(_SEPARATOR)[0]


@dataclasses.dataclass(frozen=True)
class Offer:
    task_id: str
    trail_key: str
    queued_at: float
    cost: float = 1.0


@dataclasses.dataclass(frozen=True)
class Asker:
    """A worker asking for work. ``warm``: context digests whose keys it has cached;
    ``load``: busy fraction of its executors; ``speed_hint``: its measured speed relative
    to the fleet (1 = typical), when the caller knows it."""

    worker: str
    warm: frozenset[str]
    load: float
    speed_hint: float | None = None


@dataclasses.dataclass(frozen=True)
class PheromoneParams:
    alpha: float = 1.0  # weight of the trail
    beta: float = 2.0  # weight of the visibility η
    evaporation_per_s: float = 0.05  # the learned part of τ halves in about 14 s
    tau0: float = 1.0  # the level of an unknown (worker, key)
    cold_eta: float = 0.1  # η of a task whose context keys the worker lacks (~ warm cost / cold cost)
    deposit: float = 1.0  # added per verified result at the key's typical pace
    tau_max: float = 20.0  # cap, so one veteran does not starve the rest
    defer_ratio: float = 4.0  # how much better the others must weigh to withhold a task

    def __post_init__(self) -> None:
        positive = ("alpha", "beta", "evaporation_per_s", "tau0", "deposit")
        for name in positive:
            if getattr(self, name) <= 0:
                raise errors.ParamsError(f"cannot build pheromone parameters: {name} must be > 0")
        if not 0 < self.cold_eta <= 1:
            raise errors.ParamsError("cannot build pheromone parameters: cold_eta must be in (0, 1]")
        if self.tau_max <= self.tau0:
            raise errors.ParamsError("cannot build pheromone parameters: tau_max must exceed tau0")
        if self.defer_ratio <= 1:
            raise errors.ParamsError("cannot build pheromone parameters: defer_ratio must exceed 1")


class Trails:
    """τ[worker, trail key]: ``tau0`` plus what verified results deposited, minus the
    debt of a lie; both decay toward ``tau0`` at ``evaporation_per_s``. Time only moves
    when the caller passes ``now`` (a clock step backwards is ignored)."""

    def __init__(self, params: PheromoneParams = PheromoneParams()) -> None:
        self.params = params
        self.now = 0.0
        self._gain: dict[tuple[str, str], tuple[float, float]] = {}  # (worker, key) -> (amount, at)
        self._debt: dict[str, tuple[float, float]] = {}  # worker -> (amount, at)
        self._pace: dict[str, float] = {}  # key -> running mean of result seconds

    def evaporate(self, now: float) -> None:
        self.now = max(self.now, now)

    def level(self, worker: str, key: str) -> float:
        gain, debt = self._gain.get((worker, key)), self._debt.get(worker)
        if gain is None and debt is None:  # most pairs: skip the arithmetic
            return self.params.tau0
        tau = self.params.tau0 + self._decayed(gain) - self._decayed(debt)
        return min(self.params.tau_max, max(0.0, tau))

    def deposit(self, worker: str, key: str, seconds: float, now: float) -> None:
        """A verified result of ``worker`` on ``key`` that took ``seconds``: faster than
        the key's running mean deposits more (``deposit · mean / seconds``)."""
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        self.evaporate(now)
        pace = self._pace.get(key, seconds)
        self._pace[key] = pace + _PACE_WEIGHT * (seconds - pace)
        room = self.params.tau_max - self.params.tau0 + self._decayed(self._debt.get(worker))
        gain = min(room, self._decayed(self._gain.get((worker, key))) + self.params.deposit * pace / seconds)
        self._gain[(worker, key)] = (gain, self.now)

    def zero(self, worker: str) -> None:
        """A proven lie: every trail of ``worker`` drops to 0, then evaporates back up."""
        for entry in [e for e in self._gain if e[0] == worker]:
            del self._gain[entry]
        self._debt[worker] = (self.params.tau0, self.now)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "now": self.now,
            "gain": [[w, k, a, t] for (w, k), (a, t) in self._gain.items()],
            "debt": [[w, a, t] for w, (a, t) in self._debt.items()],
            "pace": dict(self._pace),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], params: PheromoneParams = PheromoneParams()) -> Trails:
        if data.get("schema") != SCHEMA:
            raise errors.SchemaVersionError(
                f"cannot read the trails: schema {data.get('schema')!r} is not {SCHEMA!r}"
            )
        trails = cls(params)
        trails.now = float(data["now"])
        trails._gain = {(w, k): (float(a), float(t)) for w, k, a, t in data["gain"]}
        trails._debt = {w: (float(a), float(t)) for w, a, t in data["debt"]}
        trails._pace = {k: float(s) for k, s in data["pace"].items()}
        return trails

    def _decayed(self, entry: tuple[float, float] | None) -> float:
        if entry is None:
            return 0.0
        amount, at = entry
        return amount * math.exp(-self.params.evaporation_per_s * (self.now - at))


def choose(
    strategy: str,
    asker: Asker,
    offers: Sequence[Offer],
    k: int,
    *,
    rng: random.Random,
    trails: Trails | None,
    others: Sequence[Asker] = (),
    params: PheromoneParams = PheromoneParams(),
    waiting: int | None = None,
) -> list[Offer]:
    """Up to ``k`` of ``offers`` for ``asker`` (fewer, or none, under the withholding rules
    of ``least-loaded`` and ``pheromone``; see the module docstring). ``waiting`` is how
    many tasks wait in all when ``offers`` is only a window of the queue (default: the
    number of offers)."""
    if strategy not in STRATEGIES:
        raise errors.ParamsError(
            f"cannot route: unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k == 0 or not offers:
        return []
    queue = len(offers) if waiting is None else max(waiting, len(offers))
    if strategy == "fifo":
        return sorted(offers, key=lambda o: o.queued_at)[:k]
    if strategy == "random":
        return rng.sample(list(offers), min(k, len(offers)))
    if strategy == "least-loaded":
        lighter = sum(1 for o in others if o.load < asker.load)
        if lighter >= queue:
            return []
        return sorted(offers, key=lambda o: (context_of(o.trail_key) not in asker.warm, o.queued_at))[:k]
    if trails is None:
        raise ValueError("pheromone routing needs trails")

    contexts = {o.trail_key: context_of(o.trail_key) for o in offers}

    def weight(who: Asker, key: str) -> float:
        warm = 1.0 if contexts[key] in who.warm else params.cold_eta
        eta = warm * (who.speed_hint or 1.0) / (1.0 + who.load)
        return trails.level(who.worker, key) ** params.alpha * eta**params.beta

    def outweighed(key: str, bar: float) -> bool:
        """Whether at least ``queue`` others weigh ``bar`` or more for ``key``."""
        short, left = queue, len(others)
        for other in others:
            if short > left:
                return False
            left -= 1
            if weight(other, key) >= bar:
                short -= 1
                if not short:
                    return True
        return False

    mine: dict[str, float] = {}
    for key in contexts:
        mine[key] = weight(asker, key)
        if outweighed(key, params.defer_ratio * mine[key]):
            mine[key] = 0.0  # withheld: clearly better workers will ask for it soon
    # Weighted sampling without replacement (Efraimidis–Spirakis): the k smallest E/w, E ~ Exp(1).
    ranked = [(rng.expovariate(1.0) / mine[o.trail_key], o) for o in offers if mine[o.trail_key] > 0]
    ranked.sort(key=lambda pair: pair[0])
    return [o for _, o in ranked[:k]]
