"""Hot statements compiled once and run on the DBAPI cursor: :func:`execute_many` for an
INSERT or UPDATE of many rows (or :func:`bind_many` then :func:`execute_bound`, where a big
write should hold its transaction briefly), :func:`fetch` for a query's rows.

Both take a SQLAlchemy Core statement built once (a module constant) and run exactly its
SQL, with its bind and result processors, inside the caller's transaction; what they
skip is SQLAlchemy's per-execution work (cache key, parameter construction, result
wrapping), which cost the queen more CPU than SQLite took to run the statements: about
10 us a row for an executemany, 30-100 us a query. A database error is raised as
SQLAlchemy raises it, so callers handle one kind of error.

It does not build statements or know the schema: ``store`` and the services do.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A statement compiled for one dialect (and one row-key set, or one length of each
    IN list): its SQL, and for each bound value, in the driver's order, where it comes
    from (a parameter, an item of an IN list, or a value compiled into the statement)
    and its type's bind processor."""

    sql: str
    positional: bool
    binds: tuple[tuple[str, str, Any, Callable[[Any], Any] | None], ...]  # out name, source, ref, proc

    def bound(self, params: Mapping[str, Any]) -> Any:
        """The driver's parameters for ``params``: a tuple or a dict, processed."""
        values = []
        for _out, source, ref, proc in self.binds:
            if source == "fixed":  # compiled into the statement, processed once
                values.append(ref)
                continue
            value = params[ref] if source == "param" else params[ref[0]][ref[1]]
            values.append(proc(value) if proc is not None else value)
        if self.positional:
            return tuple(values)
        return {b[0]: v for b, v in zip(self.binds, values, strict=True)}


def _plan(
    dialect: sa.Dialect,
    compiled: Any,
    sql: str,
    names: Sequence[str] | None,
    given: Collection[str],
    items: Mapping[str, tuple[str, int]],
) -> _Plan:
    """Where each of ``names`` (the driver's parameters, in order) comes from: one of the
    ``given`` parameters, an item of an expanded IN list, or the statement itself."""
    by_name = {name: bind for bind, name in compiled.bind_names.items()}
    binds = []
    for out in names or ():
        if out in items:
            name, i = items[out]
            source, ref, bind = "item", (name, i), by_name[name]
        else:
            bind = by_name[out]
            if out in given:
                source, ref = "param", out
            elif bind.required:
                raise ValueError(f"cannot run the statement: its parameters lack {out!r}: {compiled}")
            else:
                source, ref = "fixed", bind.effective_value
        proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
        binds.append((out, source, proc(ref) if proc is not None and source == "fixed" else ref, proc))
    return _Plan(sql=sql, positional=compiled.positional, binds=tuple(binds))


@contextlib.contextmanager
def _cursor(conn: sa.Connection, sql: str, params: Any) -> Iterator[Any]:
    """A DBAPI cursor of the connection's transaction; a database error is raised as
    SQLAlchemy would raise it (so a deadlock stays retryable)."""
    cursor = conn.connection.cursor()
    try:
        yield cursor
    except Exception as exc:
        raise sa.exc.DBAPIError.instance(sql, params, exc, conn.dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()


_compiled_many: dict[tuple[sa.Insert | sa.Update, str, tuple[str, ...]], _Plan] = {}


@dataclasses.dataclass(frozen=True)
class Bound:
    """Rows bound for one statement on one dialect (:func:`bind_many`): the SQL and the
    driver's parameters, ready for :func:`execute_bound`."""

    dialect: str
    sql: str
    params: list[Any]


def bind_many(dialect: sa.Dialect, statement: sa.Insert | sa.Update, rows: list[dict[str, Any]]) -> Bound:
    """The driver's parameters for ``rows`` of ``statement``, processed by the bind
    processors (JSON encoded, ...), outside any transaction: a big write binds its rows
    before it takes the write lock, and runs them with :func:`execute_bound`. Every row
    has the keys of the first. Plans are kept per statement object: pass one built once
    (a module constant), not one built per call."""
    if not rows:
        return Bound(dialect=dialect.name, sql="", params=[])
    keys = tuple(rows[0])
    plan = _compiled_many.get((statement, dialect.name, keys))
    if plan is None:  # a few statements, each with one or two key sets
        plan = _compiled_many[(statement, dialect.name, keys)] = _compile_many(dialect, statement, keys)
    return Bound(dialect=dialect.name, sql=plan.sql, params=[plan.bound(row) for row in rows])


def execute_bound(conn: sa.Connection, bound: Bound) -> None:
    """Run rows bound by :func:`bind_many` in the connection's transaction."""
    if bound.dialect != conn.dialect.name:
        raise ValueError(f"execute_bound: rows bound for {bound.dialect}, not {conn.dialect.name}")
    if bound.params:
        with _cursor(conn, bound.sql, bound.params[:1]) as cursor:
            cursor.executemany(bound.sql, bound.params)


def execute_many(conn: sa.Connection, statement: sa.Insert | sa.Update, rows: list[dict[str, Any]]) -> None:
    """``conn.execute(statement, rows)`` for an INSERT or UPDATE without RETURNING, on the
    DBAPI cursor: the same SQL, the same bind processors and the same transaction, but
    compiled once per dialect and key set. SQLAlchemy builds and processes each row's
    parameters for about 10 us of CPU, a fifth of what a batch of results cost the
    queen on SQLite. Pass a statement built once (see :func:`bind_many`)."""
    execute_bound(conn, bind_many(conn.dialect, statement, rows))


def _compile_many(dialect: sa.Dialect, statement: sa.Insert | sa.Update, keys: tuple[str, ...]) -> _Plan:
    compiled = statement.compile(dialect=dialect, column_keys=list(keys), for_executemany=True)
    if compiled.insert_prefetch or compiled.update_prefetch or compiled.returning:
        raise ValueError(f"execute_many: not for Python-side defaults or RETURNING: {compiled}")
    if any(bind.expanding for bind in compiled.bind_names):
        raise ValueError(f"execute_many: no expanding IN lists: {compiled}")
    names = compiled.positiontup if compiled.positional else list(compiled.bind_names.values())
    return _plan(dialect, compiled, compiled.string, names, keys, {})


@dataclasses.dataclass
class _Query:
    """A query compiled for one dialect, its IN lists' names, its row type and (once a
    cursor has described the columns) their result processors."""

    compiled: Any
    expanding: tuple[str, ...]
    literal_lists: dict[str, Any]  # IN lists written into the query: ``x.in_(("a", "b"))``
    row_type: type
    processors: tuple[Callable[[Any], Any] | None, ...] | None = None
    plans: dict[tuple[int, ...], _Plan] = dataclasses.field(default_factory=dict)


_queries: dict[tuple[sa.Executable, str], _Query] = {}
_PLANS_PER_QUERY = 512


def fetch(
    conn: sa.Connection, query: sa.Select[Any] | sa.Update, params: Mapping[str, Any] | None = None
) -> list[Any]:
    """The rows of ``conn.execute(query, params)``, run on the DBAPI cursor: the same SQL
    (IN lists expanded as SQLAlchemy expands them), the same bind and result processors,
    the same transaction, but compiled once per dialect and IN-list lengths. A row is a
    named tuple (attributes, unpacking, ``_mapping``). SQLAlchemy's own execution costs
    30-100 us of CPU a statement, a third of a one-task result on SQLite. Pass a query
    built once (a module constant): plans are kept per query object."""
    known = _queries.get((query, conn.dialect.name))
    if known is None:
        known = _queries[(query, conn.dialect.name)] = _compile_query(conn.dialect, query)
    params = {**known.literal_lists, **params} if known.literal_lists else params or {}
    lengths = tuple(len(params[name]) for name in known.expanding)
    if 0 in lengths:  # SQLAlchemy renders an empty IN as a false condition of its own
        return list(conn.execute(query, params).all())
    plan = known.plans.get(lengths)
    if plan is None:
        if len(known.plans) >= _PLANS_PER_QUERY:  # IN lists of many lengths: start again
            known.plans.clear()
        plan = known.plans[lengths] = _plan_fetch(conn.dialect, known, params)
    bound = plan.bound(params)
    with _cursor(conn, plan.sql, bound) as cursor:
        cursor.execute(plan.sql, bound)
        raw = cursor.fetchall()
        if known.processors is None:  # as SQLAlchemy does, given the driver's type codes
            known.processors = tuple(
                c.type.dialect_impl(conn.dialect).result_processor(conn.dialect, d[1])
                for c, d in zip(query.exported_columns, cursor.description, strict=True)
            )
    make, processors = known.row_type, known.processors
    if not any(processors):
        return [make(*r) for r in raw]
    return [make(*(p(v) if p is not None else v for p, v in zip(processors, r, strict=True))) for r in raw]


def _compile_query(dialect: sa.Dialect, query: sa.Select[Any] | sa.Update) -> _Query:
    compiled = query.compile(dialect=dialect)
    expanding = tuple(sorted(name for bind, name in compiled.bind_names.items() if bind.expanding))
    literal_lists = {
        name: bind.effective_value
        for bind, name in compiled.bind_names.items()
        if bind.expanding and not bind.required and bind.effective_value is not None
    }
    row_type = collections.namedtuple("Row", [c.key for c in query.exported_columns])  # type: ignore[misc]
    row_type._mapping = property(lambda self: dict(zip(self._fields, self, strict=True)))  # type: ignore[attr-defined]
    return _Query(compiled=compiled, expanding=expanding, literal_lists=literal_lists, row_type=row_type)


def _plan_fetch(dialect: sa.Dialect, known: _Query, params: Mapping[str, Any]) -> _Plan:
    expanded = known.compiled.construct_expanded_state(params)
    items = {
        item: (name, i)
        for name, items in (expanded.parameter_expansion or {}).items()
        for i, item in enumerate(items)
    }
    names = expanded.positiontup if known.compiled.positional else list(expanded.parameters)
    return _plan(dialect, known.compiled, expanded.statement, names, params, items)
