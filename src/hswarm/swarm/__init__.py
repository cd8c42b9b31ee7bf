"""The swarm's decisions, pure: quorum on replica digests, reputation and adaptive
replication, routing (fifo, random, least-loaded, pheromone), per-job assurance, and a
discrete-event simulator that drives the same code. No I/O, no clock, and no randomness
unless the caller passes it in; it imports only the standard library and ``hswarm.errors``.
"""

from hswarm.swarm.assurance import AssuranceReport, wrong_result_bound
from hswarm.swarm.quorum import QuorumPolicy, Verdict, Vote, judge
from hswarm.swarm.reputation import Standing, TrustPolicy
from hswarm.swarm.routing import STRATEGIES, Asker, Offer, PheromoneParams, Trails, choose, trail_key
from hswarm.swarm.simulator import SimConfig, format_comparison, format_report, simulate

__all__ = [
    "STRATEGIES",
    "Asker",
    "AssuranceReport",
    "Offer",
    "PheromoneParams",
    "QuorumPolicy",
    "SimConfig",
    "Standing",
    "Trails",
    "TrustPolicy",
    "Verdict",
    "Vote",
    "choose",
    "format_comparison",
    "format_report",
    "judge",
    "simulate",
    "trail_key",
    "wrong_result_bound",
]
