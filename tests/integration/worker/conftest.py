"""Fixtures of the worker's tests: real BFV key material with compiled circuits (made
once per session), a fake queen, and worker subprocesses cleaned up after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_queen import FakeQueen
from worker_harness import (
    ENDLESS_ITERATIONS,
    SLOW_ITERATIONS,
    Material,
    WorkerProcess,
    batch,
    chain,
    make_material,
)


@pytest.fixture(scope="session")
def material() -> Material:
    return make_material(
        {"batch": batch(), "slow": chain(SLOW_ITERATIONS), "endless": chain(ENDLESS_ITERATIONS)}
    )


@pytest.fixture
def queen() -> Iterator[FakeQueen]:
    q = FakeQueen().start()
    yield q
    q.stop()


@pytest.fixture
def spawn_worker(tmp_path: Path) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def spawn(queen: FakeQueen, **settings: Any) -> WorkerProcess:
        worker = WorkerProcess(queen.url, tmp_path / f"cache-{len(started)}", **settings)
        started.append(worker)
        return worker

    yield spawn
    for worker in started:
        worker.close()
