"""The per-job bound on a wrong result slipping through."""

from __future__ import annotations

import pytest

from hswarm.swarm.assurance import wrong_result_bound


def test_replicated_or_audited_results_and_no_faults_bound_nothing() -> None:
    assert wrong_result_bound(faults=0, unaudited_unreplicated=50, audit_rate=0.1) == 0.0
    assert wrong_result_bound(faults=3, unaudited_unreplicated=0, audit_rate=0.1) == 0.0


def test_one_liar_escapes_with_one_minus_the_audit_rate() -> None:
    assert wrong_result_bound(faults=1, unaudited_unreplicated=10, audit_rate=0.25) == pytest.approx(0.75)


def test_several_liars_each_need_to_escape_only_once() -> None:
    assert wrong_result_bound(faults=2, unaudited_unreplicated=10, audit_rate=0.5) == pytest.approx(0.75)
    assert wrong_result_bound(faults=5, unaudited_unreplicated=1, audit_rate=0.5) == pytest.approx(0.5)


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError):
        wrong_result_bound(faults=1, unaudited_unreplicated=1, audit_rate=1.5)
