"""The work-order store: the database every tcbridge role shares.

Open it with ``open_store(url)``; it migrates the database to the newest
schema, then hands out a ``WorkOrderStore``::

    async with open_store("sqlite:///var/tcbridge.db") as store:
        await store.record_events(chain_id, registry, orders,
                                  checkpoint_block=head, recent_hashes=hashes)
        for order in await store.claim_next(8, claimer="pool-1"):
            ...

URLs: ``sqlite:///path`` (embedded, one host) or
``postgresql://user@host/db`` (several hosts); the async drivers
(aiosqlite, asyncpg) are chosen for you.

Who calls what (every call is one transaction and safe to repeat):

- watcher: ``get_checkpoint``; ``record_events`` (new orders, malformed
  logs, settlements and the checkpoint together); ``orphan_from_block``
  on a reorg; ``role_lock(chain, "watcher")``.
- pool: ``claim_next``; ``save_result``; ``release_claims`` for a dead
  process (retried once, then the pool signs an error result).
- submitter: ``ready_results``; ``reserve_nonce`` (allocate + store the
  raw transaction before broadcasting, optionally marking the orders
  SUBMITTED); ``record_fee_bump``; ``set_transaction_state``;
  ``pending_transactions``; ``requeue_submission``;
  ``role_lock(chain, "submitter")``.
- operators and metrics: ``counts_by_state``, ``oldest_age``, ``get_order``.

Work-order states and their transitions live in ``connector.states``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from connector.states import State
from connector.store.engine import create_engine, database_url
from connector.store.migrate import upgrade
from connector.store.records import (
    BadLog,
    Checkpoint,
    Fees,
    NewOrder,
    OrderRef,
    Recorded,
    Released,
    ResultToSave,
    Settlement,
    StoredOrder,
    StoredResult,
    StoredTransaction,
    StoredWorker,
)
from connector.store.repository import (
    DEFAULT_STREAM,
    RECENT_BLOCKS_KEPT,
    Clock,
    NonceReservation,
    WorkOrderStore,
    translate_error,
    utc_now,
)

__all__ = [
    "DEFAULT_STREAM",
    "RECENT_BLOCKS_KEPT",
    "BadLog",
    "Checkpoint",
    "Clock",
    "Fees",
    "NewOrder",
    "NonceReservation",
    "OrderRef",
    "Recorded",
    "Released",
    "ResultToSave",
    "Settlement",
    "State",
    "StoredOrder",
    "StoredResult",
    "StoredTransaction",
    "StoredWorker",
    "WorkOrderStore",
    "database_url",
    "open_store",
]


@asynccontextmanager
async def open_store(
    url: str | URL, *, clock: Clock = utc_now, migrate: bool = True
) -> AsyncIterator[WorkOrderStore]:
    """Connect, migrate to the newest schema (unless told not to), yield the store."""
    engine = create_engine(url)
    try:
        if migrate:
            try:
                await upgrade(engine)
            except (SQLAlchemyError, OSError) as exc:
                raise translate_error(exc) from exc
        yield WorkOrderStore(engine, clock=clock)
    finally:
        await engine.dispose()
