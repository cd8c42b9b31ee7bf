"""Routing strategies in the queue, on SQLite and PostgreSQL: every strategy finishes a
verified job, and pheromone trails learn from verified results and forget a liar."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from queenkit import Material, digest, enroll, seed_job, wide

from hswarm import wire
from hswarm.queen import jobs, queue, refusals, settings, store
from hswarm.swarm import routing

Settings = Callable[..., settings.QueenSettings]


def _outputs(db: store.Store, spec: wire.TaskSpec, lie: str = "") -> dict[int, str]:
    out = {sid: digest(f"{spec.task_id}/{sid}{lie}".encode()) for sid in spec.outputs}
    with db.write() as conn:
        for d in out.values():
            store.insert_absent(conn, store.blobs, {"digest": d, "size": 1, "created_at": 0.0})
    return out


@pytest.mark.parametrize("strategy", routing.STRATEGIES)
def test_every_strategy_finishes_a_verified_job_and_trails_follow_verified_work(
    strategy: str, db: store.Store, make_settings: Settings, fhe: Material
) -> None:
    cfg = make_settings(routing=strategy)
    trails = routing.Trails(cfg.pheromone_params()) if strategy == "pheromone" else None
    workers = [enroll(db, cfg, f"w{i}", f"o{i}") for i in range(3)]
    liar = workers[2]
    job_id = seed_job(db, fhe, wide(fhe.circuit, 6), cfg, wire.Assurance(quorum=2, verify=True))
    rng = random.Random(3)
    now = 1000.0
    for _ in range(200):
        status = jobs.status(db, cfg, job_id)
        if status.state != "running":
            break
        for w in workers:
            now += 1.0
            request = wire.LeaseRequest(max_tasks=2, contexts=[status.context])
            try:
                grant = queue.lease(db, cfg, w, request, now=now, rng=rng, trails=trails)
            except refusals.QuarantinedError:
                continue
            results = [
                wire.TaskResult(
                    task_id=t.task_id,
                    attempt=t.attempt,
                    outputs=_outputs(db, t, "lie" if w == liar else ""),
                    seconds=0.5,
                )
                for t in grant.tasks
            ]
            if results:
                queue.accept_results(db, cfg, w, results, now=now, trails=trails)
    status = jobs.status(db, cfg, job_id)
    assert status.state == "done", status
    assert status.assurance.quarantined == [liar] and status.assurance.lies >= 1
    if trails is not None:
        key = routing.trail_key(status.context, fhe.circuit.tasks[0].kind)
        honest = [trails.level(w, key) for w in workers[:2]]
        assert min(honest) > cfg.pheromone_params().tau0  # verified results deposited
        assert trails.level(liar, key) < min(honest)
