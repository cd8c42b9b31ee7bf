"""The queen's persistent state: tables, the engine, transactions and migrations.

SQLAlchemy 2 Core tables for workers, contexts, blobs, jobs, tasks, results and the
append-only event log; an engine for SQLite (default; WAL, a busy timeout and
``BEGIN IMMEDIATE`` for writes, so a claim never races another) or PostgreSQL (by URL,
``postgresql+psycopg://``; claims use ``FOR UPDATE SKIP LOCKED``). The schema is
created by the Alembic migrations shipped in ``hswarm/queen/migrations`` and applied in
code at start; no ``alembic.ini`` is needed.

It does not know what the rows mean: the services (``jobs``, ``queue``, ``membership``,
``contexts``, ``events``) do. Blob bytes live in files (``blobs``), not here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite

from hswarm.queen import refusals

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_WRITE = "hswarm_write"  # execution option: this transaction will write

metadata = sa.MetaData()

_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only
_Digest = sa.String(71)  # sha256:<64 hex>

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("owner", sa.String(100), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("determinism_class", sa.String(200), nullable=False),
    sa.Column("executors", sa.Integer, nullable=False),
    sa.Column("memory_bytes", sa.BigInteger, nullable=False),
    sa.Column("credential_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("state", sa.String(16), nullable=False),  # alive | suspect | dead | gone
    sa.Column("registered_at", sa.Double, nullable=False),
    sa.Column("last_seen", sa.Double, nullable=False),
    sa.Column("load", sa.Double, nullable=False),
    sa.Column("contexts", sa.JSON, nullable=False),  # digests of cached key sets (routing hint)
    sa.Column("done", sa.Integer, nullable=False),
)

contexts = sa.Table(
    "contexts",
    metadata,
    sa.Column("digest", _Digest, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("key_tag", sa.String(200), nullable=False),
    sa.Column("rotation_indices", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("digest", _Digest, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),  # running | done | failed
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("context", _Digest, sa.ForeignKey("contexts.digest"), nullable=False),
    sa.Column("circuit", sa.JSON, nullable=False),
    sa.Column("replicas", sa.Integer, nullable=False),
    sa.Column("outputs", sa.JSON, nullable=False),  # program output step ids
    sa.Column("tasks_total", sa.Integer, nullable=False),
    sa.Column("tasks_done", sa.Integer, nullable=False),
    sa.Column("tasks_failed", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("finished_at", sa.Double, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(48), primary_key=True),
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("index", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("context", _Digest, nullable=False),  # the job's, for routing without a join
    sa.Column("state", sa.String(16), nullable=False),  # waiting | ready | leased | done | failed
    sa.Column("attempt", sa.Integer, nullable=False),  # claims so far; the current lease's number
    sa.Column("leased_by", sa.String(32), nullable=True, index=True),
    sa.Column("deadline", sa.Double, nullable=True),
    sa.Column("queued_at", sa.Double, nullable=True),  # when it last became ready (FIFO order)
    sa.Column("pending", sa.Integer, nullable=False),  # dependencies not done yet
    sa.Column("dependents", sa.JSON, nullable=False),  # indices of tasks that read its outputs
    sa.Column("spec", sa.JSON, nullable=False),  # {"steps": [...], "inputs": [...], "outputs": [...]}
    sa.Column("done_by", sa.String(32), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("error_by", sa.String(32), nullable=True),
    sa.Column("error_attempt", sa.Integer, nullable=True),
    sa.Index("ix_tasks_state_queued_at", "state", "queued_at"),
)

results = sa.Table(
    "results",
    metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("step_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("digest", _Digest, nullable=False),
    sa.Column("task_id", sa.String(48), nullable=True),  # None: a program input
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("job_id", sa.String(32), nullable=True, index=True),
    sa.Column("task_id", sa.String(48), nullable=True),
    sa.Column("worker_id", sa.String(32), nullable=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
)


class Store:
    """One database: an engine plus read and write transactions.

    ``write()`` is the only way to change rows; on SQLite it takes the write lock at
    ``BEGIN`` (``BEGIN IMMEDIATE``) so a read-then-update inside it cannot interleave
    with another writer. An exception inside either block rolls everything back, which
    is how a rejected request leaves the store unchanged.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.connect() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()

    def ping(self) -> None:
        """Raise StoreUnavailableError unless the database answers a query."""
        try:
            with self.read() as conn:
                conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one()
        except sa.exc.SQLAlchemyError as exc:
            raise refusals.StoreUnavailableError(f"cannot reach the store: {type(exc).__name__}") from exc

    def dispose(self) -> None:
        self.engine.dispose()


def create_engine(url: str) -> sa.Engine:
    """An engine for a SQLite or PostgreSQL URL, set up for concurrent queen threads."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=8,
            max_overflow=32,
        )
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    return sa.create_engine(url, pool_size=8, max_overflow=32, pool_pre_ping=True)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own would defer it).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA busy_timeout=30000",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA foreign_keys=ON",
    ):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


def insert_absent(conn: sa.Connection, table: sa.Table, row: Mapping[str, Any]) -> bool:
    """Insert a row unless its primary key exists; True when it was inserted."""
    dialect = conn.dialect.name
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    key = next(iter(table.primary_key.columns))
    # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT DO NOTHING.
    inserted = conn.execute(make(table).values(**row).on_conflict_do_nothing().returning(key)).first()
    return inserted is not None


def claim_ready(conn: sa.Connection, limit: int, prefer: list[str]) -> list[str]:
    """Ids of up to ``limit`` ready tasks, locked for this transaction: oldest first,
    tasks whose context the caller has cached before others. Inside ``Store.write()``."""
    order: list[Any] = []
    if prefer:
        order.append(sa.case((tasks.c.context.in_(prefer), 0), else_=1))
    order += [tasks.c.queued_at, tasks.c.id]
    query = (
        sa.select(tasks.c.id)
        .where(tasks.c.state == "ready")
        .order_by(*order)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite holds the write lock already
    )
    return list(conn.execute(query).scalars())
