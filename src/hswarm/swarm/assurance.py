"""What a job's verification bought: counts, and the bound on the chance that a wrong
result slipped through.

Assumptions: at most ``faults`` (f) workers are Byzantine, colluding or not;
evaluation is deterministic within a determinism class; replicas of a task go to
distinct owners; guardians are honest; a worker cannot tell whether its result will be
audited (the coin is flipped after the result arrives); a job closes only after its
audits; and a caught liar's unconfirmed results in open jobs are re-executed.

Reasoning. A replicated result has f + 1 matching votes from distinct owners, one of
them honest, so it is right (see ``quorum``). An audited result is decided by the
guardian, so it is right too. That leaves the unreplicated results nobody audited: a
trusted Byzantine worker may have lied on any of them. Each lie is audited with
probability ``audit_rate`` (a), and one caught lie re-executes all of that liar's
unconfirmed results in the job, so a liar that lied m times in the job leaves a wrong
result only if all m lies escaped: (1 - a)^m <= 1 - a. With L <= min(f, u) distinct
liars (u unaudited unreplicated results), the job is wrong only if at least one liar
escaped entirely, which happens with probability at most 1 - a^L. This is a worst case
over what the adversary controls (who lies, and where), not an estimate for an honest
fleet; it is 0 when f is 0 or when every result was replicated or audited.

Pure: counting is the caller's job; this module only holds the report and the bound.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class AssuranceReport:
    replicas: int  # worker executions, the first replica of each task included
    audits: int  # guardian re-executions
    disagreements: int  # tasks whose votes disagreed
    quarantines: int  # workers quarantined for lies in this job
    unreplicated: int  # tasks accepted on one trusted worker's vote
    unaudited_unreplicated: int  # of those, the ones no guardian checked
    wrong_bound: float  # see wrong_result_bound


def wrong_result_bound(faults: int, unaudited_unreplicated: int, audit_rate: float) -> float:
    """The worst-case chance that the job holds a wrong result: ``1 - a^min(f, u)``, or
    0 when f = 0 or u = 0 (see the module docstring)."""
    if faults < 0 or unaudited_unreplicated < 0 or not 0.0 <= audit_rate <= 1.0:
        raise ValueError(
            f"need faults >= 0, unaudited_unreplicated >= 0 and audit_rate in [0, 1]; got "
            f"{faults}, {unaudited_unreplicated}, {audit_rate}"
        )
    if faults == 0 or unaudited_unreplicated == 0:
        return 0.0
    return 1.0 - audit_rate ** min(faults, unaudited_unreplicated)
