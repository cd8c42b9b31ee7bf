"""Worker reputation and adaptive replication, after BOINC.

A worker's :class:`Standing` counts its consecutive verified results (``streak``). Once
the streak reaches ``trust_after``, the worker may run a task alone with probability
``1 - 1/streak``, capped at ``max_skip``; every such unreplicated result is still
audited by a guardian with probability ``audit_rate``. A proven lie resets the streak and
quarantines the worker until an operator releases it.

Pure: standings are frozen values that these functions replace, and every random choice
takes a uniform ``u`` in [0, 1) from the caller. Storing standings and re-executing a
liar's unconfirmed results are the caller's job.
"""

from __future__ import annotations

import dataclasses

from hswarm import errors


@dataclasses.dataclass(frozen=True)
class TrustPolicy:
    """``max_skip = 0`` turns adaptive replication off (every task is replicated)."""

    trust_after: int = 10
    max_skip: float = 0.9
    audit_rate: float = 0.1

    def __post_init__(self) -> None:
        if self.trust_after < 1:
            raise errors.ParamsError(
                f"cannot build the trust policy: trust_after must be >= 1, got {self.trust_after}"
            )
        if not 0.0 <= self.max_skip < 1.0:
            raise errors.ParamsError(
                f"cannot build the trust policy: max_skip must be in [0, 1), got {self.max_skip}"
            )
        if not 0.0 <= self.audit_rate <= 1.0:
            raise errors.ParamsError(
                f"cannot build the trust policy: audit_rate must be in [0, 1], got {self.audit_rate}"
            )


@dataclasses.dataclass(frozen=True)
class Standing:
    streak: int = 0  # consecutive verified results since the last lie
    valid: int = 0  # verified results ever
    lies: int = 0  # proven lies ever
    quarantined: bool = False


def credit(s: Standing) -> Standing:
    """A result of this worker was verified (by a quorum or an audit)."""
    return dataclasses.replace(s, streak=s.streak + 1, valid=s.valid + 1)


def penalize(s: Standing) -> Standing:
    """This worker was proven to lie: no more trust, and no more work until released."""
    return dataclasses.replace(s, streak=0, lies=s.lies + 1, quarantined=True)


def release(s: Standing) -> Standing:
    """An operator lets a quarantined worker back in; it earns trust from zero."""
    return dataclasses.replace(s, streak=0, quarantined=False)


def replication_probability(s: Standing, policy: TrustPolicy) -> float:
    """The chance that a task this worker runs is replicated."""
    if s.quarantined or s.streak < policy.trust_after:
        return 1.0
    return max(1.0 - policy.max_skip, 1.0 / s.streak)


def should_replicate(s: Standing, policy: TrustPolicy, u: float) -> bool:
    return _uniform(u) < replication_probability(s, policy)


def should_audit(policy: TrustPolicy, u: float) -> bool:
    """Whether a guardian re-executes this unreplicated result."""
    return _uniform(u) < policy.audit_rate


def _uniform(u: float) -> float:
    if not 0.0 <= u < 1.0:
        raise ValueError(f"u must be uniform in [0, 1), got {u}")
    return u
