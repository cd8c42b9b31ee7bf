"""Quorum on replica digests: acceptance, escalation, budget, owners, classes, guardians,
and the safety property under at most f colluding liars."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hswarm import errors
from hswarm.swarm.quorum import QuorumPolicy, Vote, judge

POLICY = QuorumPolicy()  # quorum 2, faults 1, max 7


def vote(worker: str, digest: str, owner: str = "", dclass: str = "x86", guardian: bool = False) -> Vote:
    return Vote(worker, owner or f"owner-{worker}", dclass, digest, guardian)


def test_two_distinct_owners_agreeing_are_accepted() -> None:
    verdict = judge([vote("a", "D"), vote("b", "D")], POLICY)
    assert (verdict.state, verdict.digest, verdict.dclass, verdict.wanted) == ("accepted", "D", "x86", 0)
    assert verdict.liars == frozenset()


def test_a_fresh_task_wants_the_quorum_minus_what_is_in_flight() -> None:
    assert judge([], POLICY).wanted == 2
    assert judge([], POLICY, in_flight=1).wanted == 1
    pending = judge([vote("a", "D")], POLICY, in_flight=1)
    assert (pending.state, pending.digest, pending.wanted) == ("pending", None, 0)


def test_workers_of_one_owner_count_once_and_a_worker_votes_once() -> None:
    same_owner = judge([vote("a", "D", owner="o"), vote("b", "D", owner="o")], POLICY)
    assert (same_owner.state, same_owner.wanted) == ("pending", 1)
    twice = judge([vote("a", "D"), vote("a", "D")], POLICY)
    assert (twice.state, twice.wanted) == ("pending", 1)
    changed_mind = judge([vote("a", "D"), vote("a", "E"), vote("b", "D")], POLICY)
    assert changed_mind.state == "accepted" and changed_mind.liars == frozenset()


def test_disagreement_escalates_until_a_digest_has_its_votes() -> None:
    split = judge([vote("a", "D"), vote("b", "E")], POLICY)
    assert (split.state, split.wanted) == ("pending", 1)
    assert "disagree" in split.reason
    settled = judge([vote("a", "D"), vote("b", "E"), vote("c", "D")], POLICY)
    assert (settled.state, settled.digest, settled.liars) == ("accepted", "D", frozenset({"b"}))


def test_faults_raise_the_votes_needed_beyond_the_quorum() -> None:
    policy = QuorumPolicy(quorum=2, faults=2, max_replicas=7)
    assert policy.needed() == 3
    colluders = [vote("l1", "BAD"), vote("l2", "BAD")]
    assert judge(colluders, policy).state == "pending"
    accepted = judge([*colluders, vote("h1", "OK"), vote("h2", "OK"), vote("h3", "OK")], policy)
    assert (accepted.digest, accepted.liars) == ("OK", frozenset({"l1", "l2"}))


def test_the_replica_budget_makes_a_task_undecidable() -> None:
    policy = QuorumPolicy(quorum=2, faults=1, max_replicas=3)
    assert judge([vote("a", "D"), vote("b", "E")], policy).state == "pending"
    verdict = judge([vote("a", "D"), vote("b", "E"), vote("c", "F")], policy)
    assert (verdict.state, verdict.wanted) == ("undecidable", 0)
    assert "3 replicas" in verdict.reason
    assert judge([vote("a", "D"), vote("b", "E")], policy, in_flight=2).state == "undecidable"


def test_votes_are_compared_only_within_a_determinism_class() -> None:
    across = judge([vote("a", "D", dclass="x86"), vote("b", "D", dclass="arm")], POLICY)
    assert across.state == "pending"
    verdict = judge(
        [vote("a", "D", dclass="x86"), vote("b", "E", dclass="arm"), vote("c", "D", dclass="x86")], POLICY
    )
    assert (verdict.digest, verdict.dclass, verdict.liars) == ("D", "x86", frozenset())


def test_the_first_guardian_vote_is_trusted() -> None:
    votes = [vote("w", "BAD"), vote("g", "OK", guardian=True), vote("g2", "X", guardian=True)]
    verdict = judge(votes, POLICY)
    assert (verdict.state, verdict.digest, verdict.liars) == ("accepted", "OK", frozenset({"w", "g2"}))
    assert "guardian g" in verdict.reason


def test_single_needs_one_vote_until_one_disagrees() -> None:
    assert judge([], POLICY, single=True).wanted == 1
    assert judge([vote("a", "D")], POLICY, single=True).state == "accepted"
    split = judge([vote("a", "D"), vote("b", "E")], POLICY, single=True)
    assert (split.state, split.wanted) == ("pending", 1)


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"quorum": 0}, "quorum"),
        ({"faults": -1}, "faults"),
        ({"quorum": 2, "faults": 3, "max_replicas": 3}, "max_replicas"),
    ],
)
def test_an_invalid_policy_is_refused(fields: dict[str, int], text: str) -> None:
    with pytest.raises(errors.ParamsError, match=text):
        QuorumPolicy(**fields)


def test_in_flight_cannot_be_negative() -> None:
    with pytest.raises(ValueError):
        judge([], POLICY, in_flight=-1)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_no_wrong_digest_is_ever_accepted_with_at_most_f_liars(data: st.DataObject) -> None:
    """Replicas go to distinct owners as the verdicts ask, votes arrive in any order, the
    liars may collude (share a wrong digest) and share owners with anyone: an accepted
    digest is always the honest one, and only liars are named. With distinct owners the
    task is also always decided within ``needed() + f`` replicas."""
    n = data.draw(st.integers(4, 16), label="workers")
    f = data.draw(st.integers(0, (n - 1) // 3), label="faults")
    quorum = data.draw(st.integers(1, f + 2), label="quorum")
    policy = QuorumPolicy(quorum=quorum, faults=f, max_replicas=max(quorum, f + 1) + f)
    liars = set(data.draw(st.lists(st.integers(0, n - 1), max_size=f, unique=True), label="liars"))
    distinct = data.draw(st.booleans(), label="distinct owners")
    owners = [f"o{i}" if distinct else f"o{data.draw(st.integers(0, 3))}" for i in range(n)]
    lies = {i: data.draw(st.sampled_from(["BAD1", "BAD2", f"BAD-{i}"])) for i in liars}
    fleet = data.draw(st.permutations(range(n)), label="lease order")

    votes: list[Vote] = []
    in_flight: list[int] = []
    used: set[str] = set()
    while True:
        verdict = judge(votes, policy, in_flight=len(in_flight))
        if verdict.state == "accepted":
            assert verdict.digest == "OK"
            assert verdict.liars <= {f"w{i}" for i in liars}
            return
        assert verdict.state == "pending" or not distinct, verdict.reason
        if verdict.state == "undecidable":
            return
        for _ in range(verdict.wanted):
            free = [i for i in fleet if owners[i] not in used]
            if not free:
                break
            used.add(owners[free[0]])
            in_flight.append(free[0])
        if not in_flight:
            assert not distinct, "ran out of owners with distinct owners"
            return
        worker = in_flight.pop(data.draw(st.integers(0, len(in_flight) - 1), label="arrival"))
        votes.append(Vote(f"w{worker}", owners[worker], "x86", lies.get(worker, "OK")))
