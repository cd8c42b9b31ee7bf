"""One module per schema revision; Alembic reads them, nothing imports them."""
