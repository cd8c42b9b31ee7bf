"""How a worker sizes its executors per key set (``executor.plan``) and reads ``--cpus``."""

from __future__ import annotations

import pytest

from hswarm.worker import executor, settings

GIB = 1 << 30


def test_auto_runs_one_single_threaded_executor_per_core_when_memory_allows() -> None:
    got = executor.plan(16, None, None, memory_budget=64 * GIB, need=2 * GIB)
    assert got == executor.Plan(executors=16, threads=1, slots=1)


def test_auto_runs_fewer_multithreaded_executors_when_memory_is_short() -> None:
    # 30 GiB of keys per executor, 100 GiB budget: 3 fit, sharing 16 cores 5 each
    got = executor.plan(16, None, None, memory_budget=100 * GIB, need=30 * GIB)
    assert got == executor.Plan(executors=3, threads=5, slots=5)


def test_auto_keeps_one_executor_even_when_the_keys_exceed_the_budget() -> None:
    # the queen never sends such a key set; a worker told to run it anyway tries with one
    got = executor.plan(2, None, None, memory_budget=1 * GIB, need=4 * GIB)
    assert got == executor.Plan(executors=1, threads=2, slots=2)


def test_unknown_need_or_budget_does_not_limit() -> None:
    assert executor.plan(4, None, None).executors == 4
    assert executor.plan(4, None, None, memory_budget=0, need=GIB).executors == 4


def test_a_fixed_pool_is_capped_by_memory_and_keeps_its_threads() -> None:
    assert executor.plan(3, 3, 1, memory_budget=8 * GIB, need=GIB) == executor.Plan(3, 1, 1)
    assert executor.plan(3, 3, 1, memory_budget=2 * GIB, need=GIB) == executor.Plan(2, 1, 1)


@pytest.mark.parametrize(
    ("text", "cores"),
    [("0", (0,)), ("0-3", (0, 1, 2, 3)), ("3,1-2", (3, 1, 2)), ("1,1,0-1", (1, 0))],
)
def test_cpu_lists_read_like_taskset(text: str, cores: tuple[int, ...]) -> None:
    assert settings.parse_cpus(text) == cores


@pytest.mark.parametrize("text", ["", "a", "3-1", "1;2", "-1"])
def test_bad_cpu_lists_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="cannot read cpus"):
        settings.parse_cpus(text)
