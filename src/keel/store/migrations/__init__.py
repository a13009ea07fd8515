"""Alembic migrations shipped inside the package; run them through keel.store.migrate."""
