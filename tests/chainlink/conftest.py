"""Fixtures for the adapter tests: the vector worker, sealed cheaply (from the pool tests)."""

from __future__ import annotations

from tests.pool.conftest import (  # noqa: F401 - fixtures used by this package
    sealed_worker,
    vector_details,
    vector_keys,
)
