"""``hswarm bench`` on real processes, at toy sizes: it runs plain OpenFHE, the local
evaluator and swarms of 1 and 2 workers, checks every decrypted result, and writes the
JSON report (with the fields the issue names) and the plots. Timings are not asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_bench_measures_vanilla_local_and_swarms_and_reports(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSWARM_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hswarm.cli",
            "bench",
            "--workers",
            "1,2",
            "--batch",
            "2",
            "--rounds",
            "1",
            "--chain",
            "1",
            "--no-verify",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| batch | vanilla |" in done.stdout and "INSECURE" in done.stdout
    r = json.loads(report.read_text())
    assert r["all_correct"] and r["baseline_bytes_identical"] and r["insecure"]
    runs = {(row["workload"], row["label"]) for row in r["rows"]}
    for workload in ("batch", "chain"):
        assert {(workload, "vanilla"), (workload, "local")} <= runs
        assert {(workload, "swarm k=1"), (workload, "swarm k=2")} <= runs
    assert isinstance(r["scaling_efficiency"], float) and r["scaling_efficiency"] > 0
    assert isinstance(r["swarm_vs_vanilla_throughput"], float) and r["swarm_vs_vanilla_throughput"] > 0
    swarm = [row for row in r["rows"] if row["run"] == "swarm"]
    # each bootstrap moves its input and output at least twice (client and worker)
    assert all(row["bytes_moved_per_bootstrap"] > 0 for row in swarm)
    assert all(row["key_bytes"] > 0 and row["key_download_s"] > 0 for row in swarm)
    for png in ("r-throughput.png", "r-scaling.png"):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")


def test_bench_refuses_bad_worker_counts_and_a_used_work_dir(tmp_path: Path) -> None:
    def bench(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "hswarm.cli", "bench", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    done = bench("--workers", "0,2")
    assert done.returncode == 2 and "--workers" in done.stderr
    (tmp_path / "swarm-1-unverified").mkdir()
    done = bench("--work-dir", str(tmp_path))
    assert done.returncode == 2 and "holds an earlier run" in done.stderr
