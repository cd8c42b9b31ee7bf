"""``store.execute_many`` writes exactly what ``conn.execute`` writes, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from hswarm.queen import store

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
        store.execute_many(conn, sa.insert(W), fast)
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
        store.execute_many(conn, update, [{"b_id": f"f{i + 1}", **c} for i, c in enumerate(changes)])
        conn.execute(update, [{"b_id": f"s{i + 1}", **c} for i, c in enumerate(changes)])
    fast_rows = _rows(db, ["f1", "f2"])
    assert fast_rows == _rows(db, ["s1", "s2"])
    assert [(r["state"], r["quarantined"], r["done"], r["contexts"]) for r in fast_rows] == [
        ("suspect", True, 7, {"k": [2]}),
        ("suspect", True, 4, []),
    ]


def test_a_failing_row_raises_sqlalchemys_error_and_writes_nothing(db: store.Store) -> None:
    with db.write() as conn:
        store.execute_many(conn, sa.insert(W), [_worker("a")])
    with pytest.raises(sa.exc.IntegrityError), db.write() as conn:
        store.execute_many(conn, sa.insert(W), [_worker("b"), _worker("a")])  # "a" is taken
    assert [r["name"] for r in _rows(db, ["a", "b"])] == ["n"]


def test_statements_it_cannot_run_are_refused(db: store.Store) -> None:
    with db.write() as conn:
        with pytest.raises(ValueError, match="RETURNING"):
            store.execute_many(
                conn, sa.update(W).values(load=sa.bindparam("b")).returning(W.c.id), [{"b": 1.0}]
            )
        with pytest.raises(ValueError, match="lack"):
            update = sa.update(W).where(W.c.id == sa.bindparam("b_id")).values(load=sa.bindparam("b_load"))
            store.execute_many(conn, update, [{"b_id": "x"}])
