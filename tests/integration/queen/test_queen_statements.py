"""``statements.execute_many`` writes, and ``statements.fetch`` reads, exactly what
``conn.execute`` writes and reads, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from hswarm.queen import statements, store

W = store.workers


def _worker(wid: str, **changes: Any) -> dict[str, Any]:
    row = {
        "id": wid,
        "name": "n",
        "owner": "o",
        "role": "worker",
        "determinism_class": "test/x86_64",
        "executors": 2,
        "memory_bytes": 1 << 40,
        "credential_sha256": wid.ljust(64, "0"),
        "state": "alive",
        "registered_at": 1.5,
        "last_seen": 2.25,
        "load": 0.125,
        "contexts": ["sha256:" + "ab" * 32, {"nested": [1, None, "é"]}],
        "done": 3,
        "quarantined": False,
    }
    return {**row, **changes}


def _rows(db: store.Store, ids: list[str]) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(sa.select(W).where(W.c.id.in_(ids)).order_by(W.c.id)).mappings().all()
    return [{k: v for k, v in row.items() if k not in ("id", "credential_sha256")} for row in rows]


def test_inserts_and_updates_read_back_as_sqlalchemys_do(db: store.Store) -> None:
    fast = [_worker("f1"), _worker("f2", quarantined=True, contexts=[], load=0.0)]
    slow = [_worker("s1"), _worker("s2", quarantined=True, contexts=[], load=0.0)]
    with db.write() as conn:
        statements.execute_many(conn, sa.insert(W), fast)
        conn.execute(sa.insert(W), slow)
    assert _rows(db, ["f1", "f2"]) == _rows(db, ["s1", "s2"])

    # bound values and values compiled into the statement (a constant, a NULL, a boolean)
    update = (
        sa.update(W)
        .where(W.c.id == sa.bindparam("b_id"))
        .values(
            state="suspect",
            quarantined=True,
            quarantined_at=None,
            load=sa.bindparam("b_load", type_=W.c.load.type),
            contexts=sa.bindparam("b_contexts", type_=W.c.contexts.type),
            done=W.c.done + sa.bindparam("b_n"),
        )
    )
    changes = [
        {"b_load": 0.5, "b_contexts": {"k": [2]}, "b_n": 4},
        {"b_load": 1.0, "b_contexts": [], "b_n": 1},
    ]
    with db.write() as conn:
        statements.execute_many(conn, update, [{"b_id": f"f{i + 1}", **c} for i, c in enumerate(changes)])
        conn.execute(update, [{"b_id": f"s{i + 1}", **c} for i, c in enumerate(changes)])
    fast_rows = _rows(db, ["f1", "f2"])
    assert fast_rows == _rows(db, ["s1", "s2"])
    assert [(r["state"], r["quarantined"], r["done"], r["contexts"]) for r in fast_rows] == [
        ("suspect", True, 7, {"k": [2]}),
        ("suspect", True, 4, []),
    ]


def test_rows_bound_before_the_transaction_write_what_execute_many_writes(db: store.Store) -> None:
    insert = sa.insert(W)
    bound = statements.bind_many(db.engine.dialect, insert, [_worker("b1"), _worker("b2", contexts={})])
    with db.write() as conn:
        statements.execute_bound(conn, bound)
        statements.execute_many(conn, insert, [_worker("m1"), _worker("m2", contexts={})])
        statements.execute_bound(conn, statements.bind_many(conn.dialect, insert, []))  # nothing
    assert _rows(db, ["b1", "b2"]) == _rows(db, ["m1", "m2"])
    other = sa.dialects.postgresql.dialect() if db.dialect == "sqlite" else sa.dialects.sqlite.dialect()
    elsewhere = statements.bind_many(other, insert, [_worker("x1")])
    with pytest.raises(ValueError, match="rows bound for"), db.write() as conn:
        statements.execute_bound(conn, elsewhere)
    assert _rows(db, ["x1"]) == []


def test_a_failing_row_raises_sqlalchemys_error_and_writes_nothing(db: store.Store) -> None:
    with db.write() as conn:
        statements.execute_many(conn, sa.insert(W), [_worker("a")])
    with pytest.raises(sa.exc.IntegrityError), db.write() as conn:
        statements.execute_many(conn, sa.insert(W), [_worker("b"), _worker("a")])  # "a" is taken
    assert [r["name"] for r in _rows(db, ["a", "b"])] == ["n"]


def test_statements_it_cannot_run_are_refused(db: store.Store) -> None:
    with db.write() as conn:
        with pytest.raises(ValueError, match="RETURNING"):
            statements.execute_many(
                conn, sa.update(W).values(load=sa.bindparam("b")).returning(W.c.id), [{"b": 1.0}]
            )
        with pytest.raises(ValueError, match="lack"):
            update = sa.update(W).where(W.c.id == sa.bindparam("b_id")).values(load=sa.bindparam("b_load"))
            statements.execute_many(conn, update, [{"b_id": "x"}])


# -- fetch -----------------------------------------------------------------------------

_BY_IDS = (
    sa.select(W)
    .where(W.c.id.in_(sa.bindparam("ids", expanding=True)), W.c.state.in_(("alive", "suspect")))
    .order_by(W.c.id)
    .limit(sa.bindparam("n", type_=sa.Integer))
)
_BY_LOAD = (
    sa.select(W.c.id, W.c.load, W.c.quarantined).where(W.c.load > sa.bindparam("floor")).order_by(W.c.id)
)
_SEEN = (
    sa.update(W)
    .where(W.c.id == sa.bindparam("b_id"), W.c.state == "alive")
    .values(last_seen=sa.bindparam("b_now"))
    .returning(W.c.id, W.c.last_seen, W.c.contexts)
)


def test_fetch_reads_rows_as_sqlalchemy_does(db: store.Store) -> None:
    rows = [
        _worker("a"),
        _worker("b", quarantined=True, contexts={"k": [1.5, None]}, load=2.5),
        _worker("c", state="dead"),
    ]
    with db.write() as conn:
        conn.execute(sa.insert(W), rows)
    with db.read() as conn:
        for query, params in [
            (_BY_IDS, {"ids": ["a", "b", "c", "x"], "n": 10}),
            (_BY_IDS, {"ids": ["b"], "n": 1}),
            (_BY_IDS, {"ids": [], "n": 1}),  # SQLAlchemy's own empty IN
            (_BY_LOAD, {"floor": 0.2}),
        ]:
            fast = statements.fetch(conn, query, params)
            slow = conn.execute(query, params).all()
            assert [tuple(r) for r in fast] == [tuple(r) for r in slow]
            assert [r._mapping for r in fast] == [dict(r._mapping) for r in slow]
        got = statements.fetch(conn, _BY_IDS, {"ids": ["b", "a"], "n": 5})
    assert [(r.id, r.quarantined, r.contexts) for r in got] == [
        ("a", False, rows[0]["contexts"]),
        ("b", True, {"k": [1.5, None]}),
    ]


def test_fetch_runs_an_update_returning_in_the_transaction(db: store.Store) -> None:
    with db.write() as conn:
        conn.execute(sa.insert(W), [_worker("a"), _worker("d", state="dead")])
    with db.write() as conn:
        assert [tuple(r) for r in statements.fetch(conn, _SEEN, {"b_id": "a", "b_now": 9.5})] == [
            ("a", 9.5, _worker("a")["contexts"])
        ]
        assert statements.fetch(conn, _SEEN, {"b_id": "d", "b_now": 9.5}) == []  # not alive: no row
    with pytest.raises(RuntimeError), db.write() as conn:  # rolled back with its transaction
        statements.fetch(conn, _SEEN, {"b_id": "a", "b_now": 20.0})
        raise RuntimeError
    assert [r["last_seen"] for r in _rows(db, ["a", "d"])] == [9.5, 2.25]


def test_fetch_raises_sqlalchemys_errors(db: store.Store) -> None:
    broken = sa.select(W.c.id).where(sa.text("no_such_column = 1"))
    with pytest.raises(sa.exc.DBAPIError), db.read() as conn:
        statements.fetch(conn, broken)
