"""Alembic's entry point for the queen's store.

``Store.migrate`` passes an open connection in ``config.attributes["connection"]``; the
``alembic`` command line (for writing new revisions) may pass ``sqlalchemy.url``
instead. ``target_metadata`` is the store's tables, so ``--autogenerate`` compares the
migrations with ``hswarm.queen.store``. It configures no logging.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from hswarm.queen import store

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=store.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = store.create_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=store.metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    _main()
