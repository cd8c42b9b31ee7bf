"""Alembic migrations of the queen's store, applied in code by ``Store.migrate``."""
