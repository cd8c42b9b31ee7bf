"""The real CLI as a subprocess: the worked example, end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HSWARM = shutil.which("hswarm", path=os.path.dirname(sys.executable)) or "hswarm"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSWARM_")}
    return subprocess.run([HSWARM, *args], capture_output=True, text=True, timeout=600, env=env)


def test_logistic_regression_example_agrees_with_the_plaintext_model(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    done = _run(
        "example",
        "logistic-regression",
        "--preset",
        "insecure-ckks",
        "--allow-insecure",
        "--report",
        str(report),
    )
    assert done.returncode == 0, done.stderr
    assert "CORRECT" in done.stdout and "INSECURE" in done.stdout
    data = json.loads(report.read_text())
    assert data["correct"] is True and data["rows"] == 569 and data["ciphertexts"] == 9
    assert data["agreement"] >= 0.99
    assert data["insecure"] is True and "INSECURE" in data["params"]


def test_insecure_preset_without_permission_is_a_clear_error() -> None:
    done = _run("example", "logistic-regression", "--preset", "insecure-ckks")
    assert done.returncode == 2
    assert "cannot use insecure parameters" in done.stderr and "--allow-insecure" in done.stderr
    assert "Traceback" not in done.stderr


def test_presets_lists_secure_defaults_and_marks_insecure_ones() -> None:
    done = _run("presets")
    assert done.returncode == 0
    lines = dict(line.split(maxsplit=1) for line in done.stdout.splitlines())
    assert "INSECURE" not in lines["ckks"] and "INSECURE" in lines["insecure-ckks"]
