"""Shared test set-up: a clean ``HSWARM_*`` environment for every test."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_hswarm_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HSWARM_"):
            monkeypatch.delenv(name)
