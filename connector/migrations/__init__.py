"""Alembic revisions of the work-order store, run by ``connector.store.migrate``."""
