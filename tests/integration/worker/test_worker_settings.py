"""The worker's settings: read from HSWARM_* variables, derived defaults, refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic
import pytest

from hswarm.worker.settings import GIB, WorkerSettings, determinism_class


def test_defaults_are_derived_from_the_required_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HSWARM_QUEEN_URL", "http://queen.example:8470/")
    monkeypatch.setenv("HSWARM_TOKEN", "s3cret")
    config = WorkerSettings()
    assert config.queen_url == "http://queen.example:8470"
    assert config.token.get_secret_value() == "s3cret" and "s3cret" not in repr(config)
    assert config.name.endswith(f"-{os.getpid()}")
    assert config.owner == "" and config.role == "worker"
    assert config.executors == 1 and config.lease_batch == 1 and config.executor_threads is None
    assert config.cache_bytes == 2 * GIB and config.long_poll_s == 10 and config.fault is None
    assert config.cache_dir == (Path(".hswarm") / f"worker-{config.name}").resolve()


def test_several_executors_lease_as_many_and_run_single_threaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HSWARM_EXECUTORS", "4")
    monkeypatch.setenv("HSWARM_ROLE", "guardian")
    config = WorkerSettings(queen_url="http://q", token="t", name="a/b c")
    assert config.executors == 4 and config.lease_batch == 4 and config.executor_threads == 1
    assert config.role == "guardian"
    assert config.cache_dir is not None and config.cache_dir.name == "worker-a_b_c"
    assert WorkerSettings(queen_url="http://q", token="t", executors=4, lease_batch=8).lease_batch == 8


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"fault": "flip-bits"}, "cannot inject fault 'flip-bits': unknown mode 'flip-bits'; valid modes"),
        ({"queen_url": "queen:8470"}, "must start with http:// or https://"),
        ({"role": "king"}, "role"),
        ({"executors": 0}, "executors"),
        ({"long_poll_s": 31}, "long_poll_s"),
    ],
)
def test_bad_settings_are_refused(overrides: dict[str, object], needle: str) -> None:
    literal = {"queen_url": "http://q", "token": "t", **overrides}
    with pytest.raises(pydantic.ValidationError, match=needle):
        WorkerSettings(**literal)


def test_fault_from_the_environment_is_parsed_into_its_canonical_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HSWARM_FAULT", " Collude:ring-1 ")
    config = WorkerSettings(queen_url="http://q", token="t")
    assert config.fault == "collude:ring-1" and str(config.injected_fault) == "collude:ring-1"
    monkeypatch.setenv("HSWARM_FAULT", "")  # empty: no fault
    assert WorkerSettings(queen_url="http://q", token="t").injected_fault is None
    monkeypatch.setenv("HSWARM_FAULT", "lie")
    with pytest.raises(pydantic.ValidationError, match="valid modes: garbage, wrong-value, replay"):
        WorkerSettings(queen_url="http://q", token="t")


def test_queen_url_and_token_are_required() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        WorkerSettings()
    assert {e["loc"][0] for e in info.value.errors()} == {"queen_url", "token"}


def test_determinism_class_names_library_and_architecture() -> None:
    assert determinism_class().startswith("openfhe-1.")
