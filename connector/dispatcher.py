"""The dispatcher: claimed work orders to the enclave pool, signed results to the store.

It keeps at most ``concurrency`` orders in the pool at once (the pool's
processes times their queue depth is enough to keep every core busy), and
claims more only as slots free up, so a crash never holds more claimed
orders than that. Claims are made under a stable ``claimer`` name: a
restarted bridge first gives back what its previous run held.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from connector.store import OrderRef, StoredOrder, WorkOrderStore
from enclave_bridge.pool import EnclavePool, PoolJob, Target

log = logging.getLogger("tcbridge.dispatcher")

# How long to sleep when nothing is claimable; new orders wake it earlier.
IDLE_POLL_S = 0.05


@dataclass
class DispatcherStats:
    dispatched: int = 0
    results: int = 0
    errors: int = 0
    in_flight: int = 0


class Dispatcher:
    def __init__(
        self,
        store: WorkOrderStore,
        pool: EnclavePool,
        target_for: Callable[[StoredOrder], Target],
        *,
        claimer: str,
        concurrency: int,
        max_seconds: float | None = None,
        paused: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.pool = pool
        self.target_for = target_for
        self.claimer = claimer
        self.concurrency = max(1, concurrency)
        self.max_seconds = max_seconds
        self.paused = paused
        self.stats = DispatcherStats()
        self.wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def recover(self) -> None:
        """Give back the claims an earlier run of this claimer left behind."""
        released = await self.store.release_claims(self.claimer)
        if released.requeued:
            log.info(
                "requeued %d orders claimed by a previous run", len(released.requeued)
            )
        for ref in released.exhausted:
            # Claimed twice and never answered: the pool answers it with an
            # error result now, so the requester is not left waiting.
            order = await self.store.get_order(ref)
            if order is not None:
                self._start(order, give_up=True)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                free = self.concurrency - len(self._tasks)
                orders: list[StoredOrder] = []
                if free > 0 and not self.paused():
                    orders = await self.store.claim_next(free, self.claimer)
                for order in orders:
                    self._start(order)
                if not orders:
                    self.wake.clear()
                    await _wait_any(stop, self.wake, IDLE_POLL_S)
                elif free - len(orders) <= 0:
                    await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await self._drain()

    def _start(self, order: StoredOrder, *, give_up: bool = False) -> None:
        task = asyncio.create_task(self._execute(order, give_up))
        self._tasks.add(task)
        self.stats.in_flight = len(self._tasks)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self.stats.in_flight = len(self._tasks)
            if not t.cancelled() and t.exception() is not None:
                log.error(
                    "dispatch of %s failed: %s", order.work_order_id, t.exception()
                )
                self.stats.errors += 1

        task.add_done_callback(done)

    async def _execute(self, order: StoredOrder, give_up: bool) -> None:
        if order.result is not None:
            # Made before the order was orphaned and seen again: keep it.
            await self._save(
                order.ref,
                order.result.status,
                order.result.response,
                order.result.signature,
                order.result.request_hash,
            )
            return
        self.stats.dispatched += 1
        job = PoolJob(
            order_key=_job_key(order.ref),
            request=order.request,
            target=self.target_for(order),
            max_seconds=0.0 if give_up else self.max_seconds,
        )
        result = await self.pool.submit(job)
        if result.result_signature is None:
            log.error(
                "work order %s: the pool could not sign a result for worker %s; "
                "it stays claimed until the worker's identity is loaded",
                order.work_order_id,
                order.worker_id,
            )
            return
        await self._save(
            order.ref,
            result.status,
            result.response_bytes,
            result.result_signature,
            result.request_hash or b"",
        )

    async def _save(
        self,
        ref: OrderRef,
        status: int,
        response: bytes,
        signature: bytes,
        request_hash: bytes,
    ) -> None:
        await self.store.save_result(
            ref,
            status=status,
            response=response,
            signature=signature,
            request_hash=request_hash,
            claimer=self.claimer,
        )
        self.stats.results += 1

    async def _drain(self) -> None:
        """On shutdown: let running orders finish briefly, then give back the rest."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.release_claims(self.claimer)


def _job_key(ref: OrderRef) -> str:
    return f"{ref.chain_id}:{ref.contract}:{ref.order_key.hex()}"


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
    try:
        await asyncio.wait(
            waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for w in waiters:
            w.cancel()
