"""Fixtures for the queen: a store on SQLite or PostgreSQL, a running app, real FHE inputs.

PostgreSQL tests use a fresh database ``hswarm_test_<random>`` on the local server
(``postgres@127.0.0.1:5432``, trust auth), created once per session and dropped at the
end; they are skipped, with the reason, when the server does not answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from queenkit import Driver, Material

from hswarm import runtime
from hswarm.crypto import keys, params, public
from hswarm.program import Program, compile_program
from hswarm.queen import app, settings, store

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
BACKENDS = ["sqlite", "postgresql"]


# -- databases ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """The URL of a fresh PostgreSQL database for this session, or None if unreachable."""
    import psycopg

    name = f"hswarm_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=3
        )
    except psycopg.OperationalError:
        yield None
        return
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{PG_SERVER}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'queen.db'}"
    url = request.getfixturevalue("pg_database")
    if url is None:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (user postgres, trust auth)")
    db = store.Store(url)
    try:
        db.migrate()
        with db.write() as conn:  # every test starts from empty tables
            names = ", ".join(t.name for t in store.metadata.sorted_tables)
            conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        db.dispose()
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[store.Store]:
    """A migrated store (no app)."""
    s = store.Store(db_url)
    s.migrate()
    yield s
    s.dispose()


@pytest.fixture
def make_settings(tmp_path: Path, db_url: str) -> Callable[..., settings.QueenSettings]:
    def make(**overrides: Any) -> settings.QueenSettings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "queen",
            "db_url": db_url,
            "sweep_interval_s": 3600.0,
        }
        values.update(overrides)
        return settings.QueenSettings(**values)

    return make


# -- FHE material -----------------------------------------------------------------------


def _program() -> Program:
    p = Program()
    x, y = p.input("x", 8), p.input("y", 8)
    a = x * y + 3
    p.output("a", a)
    p.output("b", (a - x).rotate(1))
    return p


@pytest.fixture(scope="session")
def fhe() -> Material:
    prm = params.preset("insecure-bfv", allow_insecure=True)
    circuit = compile_program(_program(), prm)
    ks = keys.generate_keys(prm, circuit.rotation_indices)
    pc = ks.public_context()
    leak = public.PublicContext(
        params=pc.params,
        key_tag=pc.key_tag,
        rotation_indices=pc.rotation_indices,
        context=pc.context,
        public_key=ks._secret_bytes,
        mult_keys=pc.mult_keys,
        rotation_keys=pc.rotation_keys,
    )
    values = {"x": np.arange(8), "y": np.arange(8) - 3}
    bgv = compile_program(_program(), params.preset("insecure-bgv", allow_insecure=True))
    return Material(
        circuit=circuit,
        context=pc.to_bytes(),
        secret_context=leak.to_bytes(),
        inputs=runtime.encrypt_inputs(ks, circuit, values),
        other_params_circuit=bgv.to_json(),
    )


@pytest.fixture
def make_queen(make_settings: Callable[..., settings.QueenSettings]) -> Iterator[Callable[..., Driver]]:
    """Start apps (TestClients entered, so the lifespan runs); stopped at the end."""
    drivers: list[Driver] = []

    def start(**overrides: Any) -> Driver:
        driver = Driver(TestClient(app.create_app(make_settings(**overrides))), make_settings(**overrides))
        driver.client.__enter__()
        drivers.append(driver)
        return driver

    yield start
    for driver in reversed(drivers):
        driver.stop()


@pytest.fixture
def queen(make_queen: Callable[..., Driver]) -> Driver:
    return make_queen()
