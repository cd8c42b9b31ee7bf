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
import functools
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite

from hswarm.queen import refusals, statements

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_WRITE = "hswarm_write"  # execution option: this transaction will write
# PostgreSQL aborts one of two transactions that lock rows in opposite orders (deadlock)
# or that conflict under serialization; the loser may simply run again.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})
WRITE_ATTEMPTS = 5
T = TypeVar("T")

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
    sa.Column("streak", sa.Integer, nullable=False, server_default="0"),  # consecutive verified results
    sa.Column("valid", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lies", sa.Integer, nullable=False, server_default="0"),
    sa.Column("quarantined", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("quarantined_at", sa.Double, nullable=True),
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
    # bytes an executor needs to hold the keys (measured at upload; 0: unknown)
    sa.Column("memory", sa.BigInteger, nullable=False, server_default="0"),
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
    sa.Column("quorum", sa.Integer, nullable=False),  # distinct-owner votes a replicated task needs
    sa.Column("tasks_total", sa.Integer, nullable=False),
    sa.Column("tasks_done", sa.Integer, nullable=False),
    sa.Column("tasks_failed", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("finished_at", sa.Double, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("verify", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("reexecuted", sa.Integer, nullable=False, server_default="0"),  # tasks redone after a lie
)

# A job's program, written once: kept out of the small ``jobs`` row that every result
# batch updates (SQLite rewrites a whole row to change one counter).
circuits = sa.Table(
    "circuits",
    metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("circuit", sa.JSON, nullable=False),
    sa.Column("outputs", sa.JSON, nullable=False),  # program output step ids
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(48), primary_key=True),
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("index", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("context", _Digest, nullable=False),  # the job's, for routing without a join
    # waiting (for inputs) | ready (wants replicas) | leased (all wanted replicas out) | done | failed
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),  # replicas leased so far: the last one's number
    sa.Column("queued_at", sa.Double, nullable=True),  # when it last became ready (FIFO order)
    sa.Column("pending", sa.Integer, nullable=False),  # dependencies not done yet
    sa.Column("dependents", sa.JSON, nullable=False),  # indices of tasks that read its outputs
    sa.Column("spec", sa.JSON, nullable=False),  # {"steps": [...], "inputs": [...], "outputs": [...]}
    sa.Column("error", sa.Text, nullable=True),  # the last replica error
    sa.Column("wanted", sa.Integer, nullable=False, server_default="1"),  # replicas to lease now
    sa.Column("in_flight", sa.Integer, nullable=False, server_default="0"),  # replicas leased, no vote yet
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),  # replicas lost or errored
    sa.Column("single", sa.Boolean, nullable=False, server_default=sa.false()),  # adaptive: one vote
    sa.Column("audit", sa.Boolean, nullable=False, server_default=sa.false()),  # a guardian re-runs it
    sa.Column("dclass", sa.String(200), nullable=True),  # determinism class of its replicas
    sa.Column("digest", _Digest, nullable=True),  # the accepted result's digest
    sa.Index("ix_tasks_state_queued_at_id", "state", "queued_at", "id"),  # the ready queue, in order
)

results = sa.Table(
    "results",
    metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("step_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("digest", _Digest, nullable=False),
    sa.Column("task_id", sa.String(48), nullable=True),  # None: a program input
)

LIED = sa.text("verdict = 'lied'")  # the rows of the partial index of liars; queries must say it as it is

replicas = sa.Table(
    "replicas",
    metadata,
    sa.Column("task_id", sa.String(48), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("worker_id", sa.String(32), nullable=False),
    sa.Column("owner", sa.String(140), nullable=False),  # owner label, or the worker id without one
    sa.Column("dclass", sa.String(200), nullable=False),
    sa.Column("guardian", sa.Boolean, nullable=False),
    sa.Column("audit", sa.Boolean, nullable=False),  # leased as the audit of an unreplicated task
    sa.Column("state", sa.String(16), nullable=False),  # leased | voted | lost | failed | cancelled
    sa.Column("leased_at", sa.Double, nullable=False),
    sa.Column("deadline", sa.Double, nullable=True),
    sa.Column("digest", _Digest, nullable=True),  # of the outputs map (swarm.quorum compares these)
    sa.Column("outputs", sa.JSON, nullable=True),  # {step id: blob digest}
    sa.Column("seconds", sa.Double, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("verdict", sa.String(16), nullable=True),  # agreed | lied, once the task is judged
    sa.Index("ix_replicas_state_deadline", "state", "deadline"),
    # A job's status counts its voted replicas, its audits and its disagreements (tasks
    # whose voted replicas differ) from this index alone, and its liars from the next.
    sa.Index("ix_replicas_job_id_state", "job_id", "state", "task_id", "digest", "audit"),
    sa.Index("ix_replicas_lied", "job_id", "worker_id", sqlite_where=LIED, postgresql_where=LIED),
    sa.Index("ix_replicas_worker_id_state", "worker_id", "state"),
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
    with another writer, and the threads of one process take turns before that. An
    exception inside either block rolls everything back, which is how a rejected request
    leaves the store unchanged.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        # SQLite has one writer at a time, and a connection that finds the lock taken
        # sleeps and polls (up to 100 ms a try): threads of this process queue here
        # instead and start the moment the writer before them commits.
        self._writer = threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def can_run_inline(self) -> bool:
        """True when a short call (a lease, a batch of results) may run on the event loop
        rather than in a worker thread: on SQLite, whose statements cost microseconds of
        CPU and never wait on a network, while no thread holds the write lock (the call
        would wait for it, and every request with it). Handing a call to a thread and
        back costs 0.1-0.17 ms of CPU here, and the threads then contend for the GIL."""
        return self.dialect == "sqlite" and not self._writer.locked()

    @contextlib.contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        with self._writer, self.engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    def run_write(self, work: Callable[[sa.Connection], T]) -> T:
        """``work(conn)`` in a write transaction, run again (after a short random pause)
        when the database aborted it for a deadlock or a serialization conflict."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self.write() as conn:
                    return work(conn)
            except sa.exc.OperationalError as exc:
                sqlstate = getattr(exc.orig, "sqlstate", None)
                if sqlstate not in _TRANSIENT_SQLSTATES or attempt + 1 == WRITE_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0.0, 0.005 * 2**attempt))
        raise AssertionError("unreachable")

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

    def checkpoint(self) -> None:
        """On SQLite, copy the write-ahead log's committed pages into the database file
        (a passive checkpoint: it waits for no reader or writer). The sweeper calls it
        after each sweep (every second by default), so that no commit has to: a commit
        that crossed SQLite's automatic threshold ran the checkpoint itself, with its two
        fsyncs, for up to 28 ms of the event loop's time (the queen's hot calls run on
        it). A no-op on PostgreSQL."""
        if self.dialect != "sqlite":
            return
        raw = self.engine.raw_connection()  # outside any transaction: a checkpoint cannot run in one
        try:
            cursor = raw.cursor()
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            cursor.close()
        finally:
            raw.close()

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
    # psycopg prepares a statement on its 5th run and PostgreSQL may then keep one generic
    # plan for it, made while the tables were small (a sequential scan of replicas per
    # ready task, say), for the life of the connection. Plan each run for the data of now.
    options = {"options": "-c plan_cache_mode=force_custom_plan"}
    # No pre-ping: it costs a round trip per transaction (a tenth of a lease). A pooled
    # connection that the server dropped (a restart) fails its next statement instead;
    # SQLAlchemy then discards the whole pool, that one request answers 503 (the workers
    # retry it) and the next opens fresh connections.
    return sa.create_engine(url, pool_size=8, max_overflow=32, connect_args=options)


WAL_BACKSTOP_PAGES = 16384  # 64 MiB of 4 KiB pages, never reached while the sweeper runs


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own would defer it).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA busy_timeout=30000",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA foreign_keys=ON",
        # The sweeper checkpoints (Store.checkpoint); a commit does only past this backstop.
        f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}",
    ):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


def insert_absent(conn: sa.Connection, table: sa.Table, row: Mapping[str, Any]) -> bool:
    """Insert a row unless its primary key exists; True when it was inserted."""
    make = upsert(conn.dialect.name)
    key = next(iter(table.primary_key.columns))
    # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT DO NOTHING.
    inserted = conn.execute(make(table).values(**row).on_conflict_do_nothing().returning(key)).first()
    return inserted is not None


def refresh_statistics(conn: sa.Connection, table: sa.Table, added: int) -> None:
    """After ``added`` rows went into ``table``: on PostgreSQL, update its planner
    statistics now if autovacuum would (50 rows and a tenth of the table) rather than
    within its next minute, while the planner still takes a big new job's ready queue
    for a few rows (and plans each lease as a sort of all of them). SQLite plans well
    enough without statistics."""
    if conn.dialect.name != "postgresql" or added < 50:
        return
    query = sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST(:name AS regclass)")
    known = conn.execute(query, {"name": table.name}).scalar_one()
    if added > 0.1 * max(known, 0.0):
        conn.exec_driver_sql(f"ANALYZE {table.name}")


def upsert(dialect: str) -> Any:
    """The dialect's ``insert`` with ``on_conflict_do_nothing/update``."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def ready_for(
    conn: sa.Connection,
    *,
    owner: str,
    worker_id: str,
    dclass: str,
    may_audit: bool,
    audits_first: bool,
    limit: int,
    memory: int = 0,
    warm: Sequence[str] = (),
) -> list[Any]:
    """Up to ``limit`` ready tasks this worker may take a replica of, locked for this
    transaction: of its determinism class (or none yet), without a live replica of its
    owner, whose key set fits its ``memory`` budget (0: unknown, any), and audits only if
    ``may_audit``. Tasks of the key sets it holds (``warm``) come first, then the others,
    each oldest first. Inside ``Store.write()``."""
    params = _ready_params(owner, worker_id, dclass, limit, memory, warm)
    rows: list[Any] = []
    if warm:
        rows = statements.fetch(conn, _ready_query(may_audit, audits_first, "warm"), params)
    if len(rows) < limit:
        params["r_limit"] = limit - len(rows)
        rest = _ready_query(may_audit, audits_first, "cold" if warm else "any")
        rows += statements.fetch(conn, rest, params)
    return rows


def any_ready_for(conn: sa.Connection, *, owner: str, worker_id: str, dclass: str, memory: int = 0) -> bool:
    """Whether some ready task is one this worker may take a replica of (audits counted
    in): :func:`ready_for`'s test without its locks, for a read transaction. A worker
    that can take nothing (its budget holds no key set, say) learns it without waiting
    for the write lock."""
    params = _ready_params(owner, worker_id, dclass, 1, memory, ())
    return bool(statements.fetch(conn, _ready_query(True, False, "any", lock=False), params))


MAX_BYTES = 1 << 62


def _ready_params(
    owner: str, worker_id: str, dclass: str, limit: int, memory: int, warm: Sequence[str]
) -> dict[str, Any]:
    """The bound values of :func:`_ready_query` (a budget of 0, unknown, fits any key set)."""
    return {
        "r_owner": owner,
        "r_worker": worker_id,
        "r_dclass": dclass,
        "r_limit": limit,
        "r_memory": memory if memory > 0 else MAX_BYTES,
        "r_warm": sorted(warm),
    }


@functools.cache
def _ready_query(may_audit: bool, audits_first: bool, keys: str, lock: bool = True) -> sa.Select[Any]:
    """The query of :func:`ready_for`, built once per variant (building it costs more
    than running it). ``keys``: "warm" (tasks of the worker's key sets), "cold" (of
    the others) or "any"; ``lock``: lock the rows (PostgreSQL)."""
    mine = (
        sa.select(replicas.c.task_id)
        .where(
            replicas.c.task_id == tasks.c.id,
            sa.func.coalesce(replicas.c.state, "").in_(("leased", "voted")),
            sa.or_(
                replicas.c.owner == sa.bindparam("r_owner"), replicas.c.worker_id == sa.bindparam("r_worker")
            ),
        )
        .exists()
    )
    too_big = (
        sa.select(contexts.c.digest)
        .where(contexts.c.digest == tasks.c.context, contexts.c.memory > sa.bindparam("r_memory"))
        .exists()
    )
    dclass = sa.bindparam("r_dclass", type_=tasks.c.dclass.type)
    where = [
        tasks.c.state == "ready",
        sa.or_(tasks.c.dclass.is_(None), tasks.c.dclass == dclass),
        ~mine,
        ~too_big,
    ]
    warm = tasks.c.context.in_(sa.bindparam("r_warm", expanding=True))
    if keys == "warm":
        where.append(warm)
    elif keys == "cold":
        where.append(~warm)
    if not may_audit:
        where.append(~sa.and_(tasks.c.single, tasks.c.audit))
    order: list[Any] = [sa.case((sa.and_(tasks.c.single, tasks.c.audit), 0), else_=1)] if audits_first else []
    order += [tasks.c.queued_at, tasks.c.id]
    query = sa.select(tasks).where(*where).order_by(*order).limit(sa.bindparam("r_limit", type_=sa.Integer))
    # PostgreSQL; SQLite holds the write lock already
    return query.with_for_update(skip_locked=True) if lock else query
