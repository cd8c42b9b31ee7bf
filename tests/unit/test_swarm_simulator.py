"""The discrete-event simulator: determinism, Byzantine safety, quarantine, overhead."""

from __future__ import annotations

import json
import pathlib

import pytest

from hswarm import cli, errors
from hswarm.swarm import simulator
from hswarm.swarm.quorum import QuorumPolicy
from hswarm.swarm.reputation import TrustPolicy
from hswarm.swarm.routing import STRATEGIES

SMALL = simulator.SimConfig(workers=30, jobs=3, tasks_per_job=30, byzantine=0.2)
# 6 Byzantine of 20: f = 6 needs 7 matching votes and, to stay decidable, 7 + 6 replicas.
BYZANTINE = dict(workers=20, byzantine=0.3, jobs=3, tasks_per_job=20)
F_BOUND = QuorumPolicy(quorum=2, faults=6, max_replicas=13)


def test_a_run_is_a_function_of_its_config() -> None:
    first = simulator.simulate(SMALL)
    assert simulator.simulate(SMALL) == first
    assert simulator.simulate(simulator.SimConfig(**{**SMALL.__dict__, "seed": 1})) != first


def test_the_report_has_every_figure() -> None:
    result = simulator.simulate(SMALL)
    for key in (
        "simulated",
        "jobs",
        "tasks",
        "wrong_results_accepted",
        "lies_detected",
        "quarantined",
        "liars",
        "time_to_quarantine",
        "makespan",
        "throughput",
        "verification_overhead",
        "replicas_per_task",
        "audits",
        "wrong_bound_max",
    ):
        assert key in result, key
    assert result["simulated"] is True and result["tasks_accepted"] == result["tasks"] == 90
    assert set(result["time_to_quarantine"]) == {"median", "max"}
    text = simulator.format_report(result)
    assert text.startswith("SIMULATED") and "wrong results accepted" in text


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_with_f_set_right_no_wrong_result_is_accepted_and_liars_are_caught(strategy: str) -> None:
    cfg = simulator.SimConfig(
        **BYZANTINE, strategy=strategy, quorum=F_BOUND, trust=TrustPolicy(max_skip=0.0), seed=3
    )
    result = simulator.simulate(cfg)
    assert result["f_bound_holds"]
    assert result["wrong_results_accepted"] == 0
    assert result["undecidable"] == 0 and result["tasks_accepted"] == result["tasks"]
    assert result["liars"] >= 4 and result["lies_detected"] >= result["liars"]
    assert result["quarantined"] == result["liars"]
    assert 0 <= result["time_to_quarantine"]["median"] <= result["time_to_quarantine"]["max"]
    assert result["wrong_bound_max"] == 0.0  # everything was replicated


def test_liars_that_never_earn_trust_cannot_profit_from_adaptive_replication() -> None:
    cfg = simulator.SimConfig(
        **BYZANTINE, quorum=F_BOUND, fault_modes=("garbage", "collude", "replay"), seed=4
    )
    result = simulator.simulate(cfg)
    assert result["wrong_results_accepted"] == 0
    assert result["quarantined"] == result["liars"] == 6


def test_crashed_workers_leases_come_back() -> None:
    cfg = simulator.SimConfig(workers=10, byzantine=0.3, fault_modes=("crash",), jobs=2, tasks_per_job=40)
    result = simulator.simulate(cfg)
    assert result["tasks_accepted"] == result["tasks"] and result["liars"] == 0
    assert result["makespan"] > simulator.LEASE_TTL_S


def test_overhead_falls_to_the_boinc_rate_once_trust_is_built() -> None:
    trust = TrustPolicy(audit_rate=0.05)
    result = simulator.simulate(simulator.SimConfig(workers=20, jobs=30, tasks_per_job=50, trust=trust))
    # Trusted workers: a task is replicated with probability 1 - max_skip, else run once
    # and audited with audit_rate; cost 2p + (1 - p)(1 + a) executions per task.
    floor = 2 * 0.1 + 0.9 * (1 + trust.audit_rate)
    assert result["verification_overhead"] > result["steady_overhead"]
    assert result["steady_overhead"] <= 1.2
    assert result["steady_overhead"] == pytest.approx(floor, abs=0.04)
    assert result["wrong_results_accepted"] == 0


def test_the_comparison_table_names_every_strategy_against_fifo() -> None:
    results = [
        simulator.simulate(simulator.SimConfig(workers=20, jobs=2, tasks_per_job=20, strategy=s))
        for s in STRATEGIES
    ]
    table = simulator.format_comparison(results)
    assert table.startswith("SIMULATED")
    assert all(s in table for s in STRATEGIES) and "1.00x" in table


@pytest.mark.parametrize(
    "fields",
    [
        {"workers": 0},
        {"byzantine": 1.0},
        {"fault_modes": ("meteor",)},
        {"strategy": "lifo"},
        {"speeds": (2.0, 1.0)},
    ],
)
def test_an_invalid_config_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(errors.ParamsError, match="cannot build the simulation"):
        simulator.SimConfig(**fields)  # type: ignore[arg-type]


def test_the_cli_prints_simulated_figures_and_writes_json(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "sim.json"
    argv = ["simulate", "--workers", "20", "--jobs", "2", "--tasks", "10", "--report", str(report)]
    assert cli.main([*argv, "--strategy", "all"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("SIMULATED") and "VS FIFO" in out
    runs = json.loads(report.read_text())
    assert runs["simulated"] is True and [r["strategy"] for r in runs["runs"]] == list(STRATEGIES)
    assert cli.main([*argv, "--strategy", "fifo"]) == 0
    assert "strategy fifo" in capsys.readouterr().out
    assert cli.main([*argv, "--byzantine", "1.5"]) == 2
    assert "cannot build the simulation" in capsys.readouterr().err
