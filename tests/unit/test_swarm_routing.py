"""Routing strategies and pheromone trails."""

from __future__ import annotations

import collections
import json
import math
import random

import pytest

from hswarm import errors
from hswarm.swarm.routing import STRATEGIES, Asker, Offer, PheromoneParams, Trails, choose, trail_key

A, B = trail_key("sha256:aa", "mul"), trail_key("sha256:bb", "mul")
OFFERS = [Offer(f"t{i}", A if i % 2 else B, queued_at=float(10 - i)) for i in range(8)]  # t7 is oldest


def asker(name: str = "w", warm: tuple[str, ...] = (), load: float = 0.0) -> Asker:
    return Asker(name, frozenset(warm), load)


def pick(strategy: str, who: Asker, offers: list[Offer], k: int, **kw: object) -> list[Offer]:
    kw.setdefault("trails", Trails())
    return choose(strategy, who, offers, k, rng=random.Random(0), **kw)  # type: ignore[arg-type]


def test_trail_keys_join_a_context_and_an_op_class() -> None:
    assert A == "sha256:aa|mul"
    with pytest.raises(ValueError):
        trail_key("a|b", "mul")


def test_every_strategy_returns_at_most_k_distinct_offers() -> None:
    for strategy in STRATEGIES:
        chosen = pick(strategy, asker(), OFFERS, 3)
        assert len(chosen) == len(set(chosen)) == 3 and set(chosen) <= set(OFFERS)
        assert pick(strategy, asker(), OFFERS, 0) == []
        assert pick(strategy, asker(), [], 2) == []


def test_fifo_offers_the_oldest() -> None:
    assert [o.task_id for o in pick("fifo", asker(), OFFERS, 2)] == ["t7", "t6"]


def test_random_is_uniform_and_seeded() -> None:
    rng = random.Random(1)
    counts = collections.Counter(
        o.task_id for _ in range(4000) for o in choose("random", asker(), OFFERS, 1, rng=rng, trails=None)
    )
    assert set(counts) == {o.task_id for o in OFFERS}
    assert max(counts.values()) < 1.3 * min(counts.values())
    assert pick("random", asker(), OFFERS, 3) == pick("random", asker(), OFFERS, 3)


def test_least_loaded_withholds_while_enough_lighter_askers_wait() -> None:
    busy = asker(load=0.5)
    two_idle = [asker("i1"), asker("i2")]
    assert pick("least-loaded", busy, OFFERS[:2], 2, others=two_idle) == []
    assert len(pick("least-loaded", busy, OFFERS[:3], 3, others=two_idle)) == 3
    assert len(pick("least-loaded", asker(), OFFERS[:2], 2, others=two_idle)) == 2  # equally light


def test_least_loaded_prefers_warm_keys_then_the_oldest() -> None:
    chosen = pick("least-loaded", asker(warm=("sha256:aa",)), OFFERS, 3)
    assert [o.task_id for o in chosen] == ["t7", "t5", "t3"]  # the oldest offers on key A


def test_pheromone_prefers_warm_keys_and_strong_trails() -> None:
    trails = Trails()
    rng = random.Random(7)

    def keys(who: Asker) -> collections.Counter[str]:
        return collections.Counter(
            o.trail_key
            for _ in range(2000)
            for o in choose("pheromone", who, OFFERS, 1, rng=rng, trails=trails)
        )

    warm_a = keys(asker(warm=("sha256:aa",)))
    assert warm_a[A] > 20 * warm_a[B]  # η^β: (1 / cold_eta)^2 = 100 times the weight
    trails.deposit("w", B, seconds=1.0, now=0.0)
    trails.deposit("w", B, seconds=0.2, now=0.0)  # five times faster than the key's pace
    strong_b = keys(asker())
    assert strong_b[B] > 3 * strong_b[A]


def test_pheromone_withholds_a_short_queue_from_a_clearly_worse_asker() -> None:
    cold, warm_peers = asker(), [asker(f"p{i}", warm=("sha256:aa",), load=1.0) for i in range(3)]
    few = [o for o in OFFERS if o.trail_key == A][:3]
    assert pick("pheromone", cold, few, 2, others=warm_peers) == []
    assert len(pick("pheromone", cold, OFFERS, 2, others=warm_peers)) == 2  # a long queue is never held
    assert len(pick("pheromone", cold, few, 2, others=warm_peers[:2])) == 2  # too few better peers
    equal = [asker(f"q{i}") for i in range(3)]
    assert len(pick("pheromone", cold, few, 2, others=equal)) == 2


def test_a_window_of_a_long_queue_is_never_withheld() -> None:
    few = [o for o in OFFERS if o.trail_key == A][:3]
    warm_peers = [asker(f"p{i}", warm=("sha256:aa",), load=1.0) for i in range(3)]
    assert len(pick("pheromone", asker(), few, 2, others=warm_peers, waiting=50)) == 2
    idle = [asker(f"i{i}") for i in range(3)]
    assert len(pick("least-loaded", asker(load=0.5), few, 2, others=idle, waiting=50)) == 2


def test_a_zeroed_worker_gets_nothing_by_pheromone_then_recovers() -> None:
    trails = Trails()
    trails.deposit("liar", A, seconds=1.0, now=0.0)
    trails.zero("liar")
    assert trails.level("liar", A) == trails.level("liar", B) == 0.0
    assert pick("pheromone", asker("liar"), OFFERS, 3, trails=trails) == []
    trails.evaporate(math.log(2) / trails.params.evaporation_per_s)
    assert trails.level("liar", A) == pytest.approx(trails.params.tau0 / 2)


def test_deposits_favour_fast_results_and_evaporate_toward_tau0() -> None:
    trails = Trails()
    trails.deposit("typical", A, seconds=2.0, now=0.0)
    trails.deposit("fast", A, seconds=0.5, now=0.0)
    gained = trails.level("typical", A) - 1.0, trails.level("fast", A) - 1.0
    assert gained[0] == pytest.approx(1.0) and gained[1] > 3 * gained[0]
    trails.evaporate(math.log(2) / trails.params.evaporation_per_s)
    assert trails.level("typical", A) - 1.0 == pytest.approx(gained[0] / 2)
    assert trails.level("unknown", A) == trails.params.tau0
    trails.evaporate(0.0)  # a clock step backwards changes nothing
    assert trails.level("typical", A) - 1.0 == pytest.approx(gained[0] / 2)


def test_trails_are_capped_at_tau_max() -> None:
    trails = Trails(PheromoneParams(tau_max=3.0))
    for _ in range(10):
        trails.deposit("w", A, seconds=1.0, now=0.0)
    assert trails.level("w", A) == 3.0


def test_trails_survive_a_json_round_trip() -> None:
    trails = Trails()
    trails.deposit("a", A, seconds=1.0, now=5.0)
    trails.deposit("b", B, seconds=3.0, now=6.0)
    trails.zero("b")
    trails.evaporate(9.0)
    again = Trails.from_json(json.loads(json.dumps(trails.to_json())))
    assert again.to_json() == trails.to_json()
    for worker in ("a", "b", "c"):
        for key in (A, B):
            assert again.level(worker, key) == trails.level(worker, key)


def test_bad_requests_are_refused() -> None:
    with pytest.raises(errors.ParamsError, match="unknown strategy"):
        pick("round-robin", asker(), OFFERS, 1)
    with pytest.raises(ValueError, match="needs trails"):
        pick("pheromone", asker(), OFFERS, 1, trails=None)
    with pytest.raises(ValueError):
        pick("fifo", asker(), OFFERS, -1)
    with pytest.raises(ValueError):
        Trails().deposit("w", A, seconds=0.0, now=0.0)
    with pytest.raises(errors.SchemaVersionError):
        Trails.from_json({"schema": "hswarm.trails/0"})
    with pytest.raises(errors.ParamsError, match="cold_eta"):
        PheromoneParams(cold_eta=0.0)
