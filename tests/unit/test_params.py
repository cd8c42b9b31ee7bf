from __future__ import annotations

import pytest

from hswarm import errors
from hswarm.crypto import params


def test_default_presets_are_secure_and_need_no_permission() -> None:
    for name in ("ckks", "bfv", "bgv", "ckks-bootstrap"):
        p = params.preset(name)
        assert p.security == "HEStd_128_classic"
        assert not p.insecure
        assert "INSECURE" not in p.label


def test_insecure_presets_are_refused_without_permission() -> None:
    with pytest.raises(errors.InsecureParamsError, match="HSWARM_ALLOW_INSECURE"):
        params.preset("insecure-ckks")


def test_insecure_presets_allowed_by_argument_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert params.preset("insecure-bfv", allow_insecure=True).insecure
    monkeypatch.setenv("HSWARM_ALLOW_INSECURE", "1")
    p = params.preset("insecure-bfv")
    assert p.insecure and "INSECURE" in p.label
    # an explicit refusal wins over the environment
    with pytest.raises(errors.InsecureParamsError):
        params.preset("insecure-bfv", allow_insecure=False)


def test_literal_round_trip_is_exact() -> None:
    for name in params.PRESETS:
        p = params.preset(name, allow_insecure=True)
        assert params.Params.from_literal(p.to_literal(), allow_insecure=True) == p


def test_params_are_frozen() -> None:
    p = params.preset("ckks")
    with pytest.raises(AttributeError):
        p.depth = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("literal", "fragment"),
    [
        ({"scheme": "rsa", "depth": 2, "slots": 8}, "scheme"),
        ({"scheme": "ckks", "depth": 0, "slots": 8}, "depth"),
        ({"scheme": "ckks", "depth": "3", "slots": 8}, "depth"),
        ({"scheme": "ckks", "depth": 3, "slots": 6}, "power of two"),
        ({"scheme": "ckks", "depth": 3, "slots": 8, "security": "HEStd_42"}, "security"),
        ({"scheme": "ckks", "depth": 3, "slots": 8, "security": "HEStd_NotSet"}, "ring_dim"),
        ({"scheme": "ckks", "depth": 3, "slots": 4096, "ring_dim": 4096}, "exceeds ring_dim/2"),
        ({"scheme": "ckks", "depth": 3, "slots": 8, "plaintext_modulus": 65537}, "unknown"),
        ({"scheme": "bfv", "depth": 3, "slots": 8, "scaling_mod_size": 50}, "unknown"),
        ({"scheme": "bfv", "depth": 3, "slots": 8, "ring_dim": 1 << 16}, "1 mod 2*ring_dim"),
        ({"scheme": "ckks", "depth": 3, "slots": 8, "bootstrap": {"level_budget": [0, 9]}}, "level_budget"),
        ({"scheme": "ckks", "depth": 3, "slots": 8, "bootstrap": {"levels": 3}}, "bootstrap"),
        ("ckks", "mapping"),
    ],
)
def test_invalid_literals_name_the_field(literal: object, fragment: str) -> None:
    with pytest.raises(errors.ParamsError, match="cannot build parameters") as info:
        params.Params.from_literal(literal, allow_insecure=True)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(errors.ParamsError, match="insecure-ckks"):
        params.preset("fast")
