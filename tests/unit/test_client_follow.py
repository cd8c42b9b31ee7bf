"""How the SDK follows a job: long polls that wake at each hundredth of the job, not at
each task (a status costs the queen counts over the job's replicas)."""

from __future__ import annotations

import asyncio

import pytest

from hswarm import errors, wire
from hswarm.client.session import PROGRESS_STEPS, SwarmClient, SwarmConfig

_ASSURANCE = wire.AssuranceReport(
    verified=False,
    quorum=1,
    faults=0,
    replicas=0,
    unreplicated=0,
    audits=0,
    disagreements=0,
    lies=0,
    quarantined=[],
    reexecuted=0,
    wrong_bound=1.0,
)


class _Queen:
    """Answers a long poll the moment its condition holds: one more task done than asked,
    or the job's end; ``fail_at`` makes the job fail there."""

    def __init__(self, total: int, fail_at: int | None = None) -> None:
        self.total, self.fail_at, self.asked = total, fail_at, []

    async def job(self, job_id: str, *, wait_s: float = 0.0, done: int = -1) -> wire.JobStatus:
        assert wait_s > 0
        self.asked.append(done)
        now = min(self.total, done + 1)
        state = "done" if now == self.total else "running"
        if self.fail_at is not None and now >= self.fail_at:
            state = "failed"
        return wire.JobStatus(
            job_id=job_id,
            state=state,
            label="",
            context="sha256:" + "0" * 64,
            tasks_total=self.total,
            tasks_done=now,
            tasks_failed=int(state == "failed"),
            created_at=0.0,
            finished_at=None,
            results={},
            error="boom" if state == "failed" else None,
            assurance=_ASSURANCE,
        )


def _client() -> SwarmClient:
    return SwarmClient(SwarmConfig(preset="insecure-ckks", allow_insecure=True, progress=False))


def test_a_big_job_is_followed_in_hundredths_and_its_end_is_seen() -> None:
    queen = _Queen(total=5000)
    accepted = wire.JobAccepted(job_id="j", tasks=5000)
    status = asyncio.run(_client()._follow(queen, accepted))  # type: ignore[arg-type]
    assert status.state == "done" and status.tasks_done == 5000
    assert len(queen.asked) <= PROGRESS_STEPS + 2  # not one status per task
    assert queen.asked[:3] == [-1, 49, 99]  # wakes after 1, then at each 50 tasks more


def test_a_small_job_is_followed_task_by_task() -> None:
    queen = _Queen(total=7)
    status = asyncio.run(_client()._follow(queen, wire.JobAccepted(job_id="j", tasks=7)))  # type: ignore[arg-type]
    assert status.state == "done" and queen.asked == [-1, 0, 1, 2, 3, 4, 5, 6]


def test_a_failed_job_raises_with_its_error() -> None:
    queen = _Queen(total=1000, fail_at=300)
    with pytest.raises(errors.EvaluationError, match="boom"):
        asyncio.run(_client()._follow(queen, wire.JobAccepted(job_id="j", tasks=1000)))  # type: ignore[arg-type]
