"""BOINC-style adaptive replication: the trust rule, its cap, lies and quarantine."""

from __future__ import annotations

import pytest

from hswarm import errors
from hswarm.swarm.reputation import (
    Standing,
    TrustPolicy,
    credit,
    penalize,
    release,
    replication_probability,
    should_audit,
    should_replicate,
)

POLICY = TrustPolicy()  # trust after 10, skip at most 90 %, audit 10 %


def streak(n: int) -> Standing:
    s = Standing()
    for _ in range(n):
        s = credit(s)
    return s


def test_credit_counts_consecutive_verified_results() -> None:
    assert streak(3) == Standing(streak=3, valid=3)


def test_every_task_is_replicated_until_trust_is_earned() -> None:
    assert replication_probability(streak(9), POLICY) == 1.0
    assert should_replicate(streak(9), POLICY, 0.999)


def test_trusted_workers_are_replicated_with_probability_one_over_streak_capped() -> None:
    policy = TrustPolicy(trust_after=4, max_skip=0.9)
    assert replication_probability(streak(4), policy) == pytest.approx(0.25)
    assert replication_probability(streak(8), policy) == pytest.approx(0.125)
    assert replication_probability(streak(1000), policy) == pytest.approx(0.1)  # the cap
    assert should_replicate(streak(8), policy, 0.1)
    assert not should_replicate(streak(8), policy, 0.2)


def test_max_skip_zero_turns_adaptive_replication_off() -> None:
    assert replication_probability(streak(10_000), TrustPolicy(max_skip=0.0)) == 1.0


def test_a_lie_resets_the_streak_and_quarantines_until_release() -> None:
    liar = penalize(streak(50))
    assert liar == Standing(streak=0, valid=50, lies=1, quarantined=True)
    assert replication_probability(liar, POLICY) == 1.0
    assert credit(liar).quarantined  # verified work does not lift a quarantine
    back = release(credit(liar))
    assert back == Standing(streak=0, valid=51, lies=1, quarantined=False)


def test_audits_sample_the_audit_rate() -> None:
    assert should_audit(POLICY, 0.05)
    assert not should_audit(POLICY, 0.1)
    assert not should_audit(TrustPolicy(audit_rate=0.0), 0.0)


@pytest.mark.parametrize("u", [-0.1, 1.0, 2.0])
def test_u_must_be_uniform_in_the_unit_interval(u: float) -> None:
    with pytest.raises(ValueError):
        should_audit(POLICY, u)


@pytest.mark.parametrize(
    "fields", [{"trust_after": 0}, {"max_skip": 1.0}, {"max_skip": -0.1}, {"audit_rate": 1.5}]
)
def test_an_invalid_trust_policy_is_refused(fields: dict[str, float]) -> None:
    with pytest.raises(errors.ParamsError, match="cannot build the trust policy"):
        TrustPolicy(**fields)  # type: ignore[arg-type]
