"""``WorkOrderStore``: the async API over the store's tables.

Every method runs in its own database transaction and is idempotent,
keyed by (chain id, contract, order key): calling it again after a crash
or a retry changes nothing more. Every work-order state change goes
through ``_move``, which checks the change against ``connector.states``
and writes it with a WHERE on the state it checked, so when two processes
race for one order exactly one of them moves it.

SQLAlchemy and driver exceptions become ``StoreError`` in one place,
``_transaction``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from connector.states import (
    MAX_ATTEMPTS,
    State,
    check_transition,
    is_allowed,
    sources_of,
)
from connector.store import models as m
from connector.store.locks import RoleLocks
from connector.store.records import (
    BadLog,
    Checkpoint,
    Fees,
    NewOrder,
    OrderRef,
    ReadyCompletion,
    Recorded,
    Released,
    ResultToSave,
    Settlement,
    StoredOrder,
    StoredResult,
    StoredTransaction,
    StoredWorker,
    as_bytes,
    as_id,
    chain_key,
    contract_key,
)
from enclave_bridge.errors import BugError, InvalidTransition, StoreError

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# The stream name the work-order watchers use unless they read several.
DEFAULT_STREAM = "work_orders"
# Block hashes a checkpoint remembers: a watcher can locate a fork point up
# to this deep, far more than the confirmations it waits for.
RECENT_BLOCKS_KEPT = 256
# Bound on the values in one IN (...) list (SQLite caps bound parameters).
_CHUNK = 500

WO = m.WorkOrder
# The hot paths use the Core tables, not the ORM classes: no unit of work,
# no ORM bulk plumbing, and statements whose compiled form SQLAlchemy caches.
WT: Table = m.WorkOrder.__table__  # type: ignore[assignment]
RT: Table = m.Result.__table__  # type: ignore[assignment]
CBT: Table = m.CheckpointBlock.__table__  # type: ignore[assignment]
TOT: Table = m.TransactionOrder.__table__  # type: ignore[assignment]

# States in which an order already has its result saved.
_PAST_RESULT = frozenset(
    {State.RESULT_READY, State.SUBMITTED, State.COMPLETED, State.FAILED}
)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class NonceReservation:
    """A nonce allocated inside an open transaction, waiting for its raw tx.

    Obtained from ``WorkOrderStore.reserve_nonce``; ``record`` stores the
    signed transaction in the same database transaction as the allocation,
    so after a crash either both exist or neither does.
    """

    def __init__(
        self,
        store: WorkOrderStore,
        session: AsyncSession,
        chain_id: str,
        sender: str,
        nonce: int,
    ) -> None:
        self._store = store
        self._session = session
        self.chain_id = chain_id
        self.sender = sender
        self.nonce = nonce
        self.recorded = False

    async def record(
        self,
        raw: bytes,
        tx_hash: bytes | str,
        orders: Sequence[OrderRef],
        fees: Fees | None = None,
        *,
        submit: bool = False,
    ) -> None:
        """Store the signed transaction for this nonce and the orders it carries.

        With ``submit``, the orders also move RESULT_READY -> SUBMITTED in
        the same transaction: once the raw transaction is durable it will be
        broadcast (again, after a crash), so the orders count as submitted.
        """
        if self.recorded:
            raise BugError("a nonce reservation records exactly one transaction")
        await self._store._insert_transaction(
            self._session,
            self.chain_id,
            self.sender,
            self.nonce,
            raw,
            as_bytes(tx_hash),
            orders,
            fees or Fees(),
            submit=submit,
        )
        self.recorded = True


class WorkOrderStore:
    """The work-order store on one database; open it with ``open_store``."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._clock = clock
        self._dialect = engine.dialect.name
        self._locks = RoleLocks(engine)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._dialect

    # -- events and checkpoints (the watcher) ---------------------------------

    async def record_events(
        self,
        chain_id: int | str,
        contract: str,
        orders: Sequence[NewOrder],
        malformed: Sequence[BadLog] = (),
        *,
        checkpoint_block: int,
        recent_hashes: Mapping[int, bytes | str] | None = None,
        stream: str = DEFAULT_STREAM,
        last_tx_id: str | None = None,
        settlements: Sequence[Settlement] = (),
    ) -> Recorded:
        """Record confirmed events and advance the checkpoint, in ONE transaction.

        New orders are inserted (RECEIVED, or SKIPPED); an order already
        stored is left alone, except an ORPHANED one, which goes back to
        RECEIVED (keeping its result when its request is unchanged).
        ``settlements`` (completions, cancellations) then close orders as
        the state table allows; one it does not allow is logged and left,
        so a surprising chain never stalls the watcher.
        ``recent_hashes`` (block number -> hash) is merged into what the
        checkpoint remembers; hashes older than ``RECENT_BLOCKS_KEPT`` blocks
        behind ``checkpoint_block``, or above it, are dropped.
        """
        chain, where = chain_key(chain_id), contract_key(contract)
        now = self._clock()
        rows = [_order_row(chain, where, order, now) for order in orders]

        async with self._transaction() as session:
            new_keys = await self._insert_orders(session, rows)
            seen = [row for row in rows if row["order_key"] not in new_keys]
            revived = await self._revive(session, chain, where, seen, now)
            bad = await self._insert_malformed(session, chain, where, malformed, now)
            settled = await self._settle(session, chain, where, settlements, now)
            await self._write_checkpoint(
                session,
                chain,
                where,
                stream,
                checkpoint_block,
                recent_hashes or {},
                last_tx_id,
                now,
            )

        new: dict[bytes, None] = {}  # insertion-ordered, each key once
        logging_moves = log.isEnabledFor(logging.INFO)
        for row in rows:
            if row["order_key"] in new_keys and row["order_key"] not in new:
                new[row["order_key"]] = None
                if logging_moves:
                    _log_move(row, State(row["state"]))
        return Recorded(
            new=[OrderRef(chain, where, key) for key in new],
            revived=revived,
            duplicates=len(rows) - len(new_keys) - len(revived),
            malformed=bad,
            settled=settled,
        )

    async def get_checkpoint(
        self, chain_id: int | str, contract: str, stream: str = DEFAULT_STREAM
    ) -> Checkpoint | None:
        """Where the watcher of this stream stopped, or None if it never ran."""
        async with self._transaction() as session:
            point = (
                await session.execute(
                    select(m.Checkpoint).where(
                        m.Checkpoint.chain_id == chain_key(chain_id),
                        m.Checkpoint.contract == contract_key(contract),
                        m.Checkpoint.stream == stream,
                    )
                )
            ).scalar_one_or_none()
            if point is None:
                return None
            blocks = await session.execute(
                select(m.CheckpointBlock.block_number, m.CheckpointBlock.block_hash)
                .where(m.CheckpointBlock.checkpoint_id == point.id)
                .order_by(m.CheckpointBlock.block_number)
            )
            hashes = {number: block_hash for number, block_hash in blocks}

        return Checkpoint(point.block_number, hashes, point.last_tx_id)

    async def orphan_from_block(
        self, chain_id: int | str, contract: str, block_number: int
    ) -> list[OrderRef]:
        """Roll back everything seen at or above ``block_number`` (a reorg).

        Orders submitted in those blocks become ORPHANED (their results are
        kept, should they re-appear); orders submitted earlier whose
        completion was confirmed in those blocks go back to RESULT_READY, to
        be completed again (a reorg deeper than the confirmation depth);
        malformed-log records there are
        dropped; every checkpoint of the contract at or above the block goes
        back to ``block_number - 1`` and forgets the hashes from there up.
        Returns the orphaned orders.
        """
        chain, where = chain_key(chain_id), contract_key(contract)
        now = self._clock()

        async with self._transaction() as session:
            moved = await self._move(
                session,
                State.ORPHANED,
                sources_of(State.ORPHANED),
                and_(
                    WO.chain_id == chain,
                    WO.contract == where,
                    WO.block_number >= block_number,
                ),
                now,
                completion_block=None,
            )
            # Submitted before the fork but completed after it: the completion
            # is gone from the chain, the result is not; it is sent again.
            await self._move(
                session,
                State.RESULT_READY,
                {State.COMPLETED, State.FAILED},
                and_(
                    WO.chain_id == chain,
                    WO.contract == where,
                    WO.block_number < block_number,
                    WO.completion_block >= block_number,
                ),
                now,
                completion_block=None,
            )
            await session.execute(
                delete(m.MalformedLog).where(
                    m.MalformedLog.chain_id == chain,
                    m.MalformedLog.contract == where,
                    m.MalformedLog.block_number >= block_number,
                )
            )
            points = select(m.Checkpoint.id).where(
                m.Checkpoint.chain_id == chain, m.Checkpoint.contract == where
            )
            await session.execute(
                delete(m.CheckpointBlock).where(
                    m.CheckpointBlock.checkpoint_id.in_(points),
                    m.CheckpointBlock.block_number >= block_number,
                )
            )
            await session.execute(
                update(m.Checkpoint)
                .where(
                    m.Checkpoint.chain_id == chain,
                    m.Checkpoint.contract == where,
                    m.Checkpoint.block_number >= block_number,
                )
                .values(block_number=block_number - 1, last_tx_id=None, updated_at=now)
            )

        return [OrderRef(chain, where, row.order_key) for row in moved]

    # -- claims and results (the pool) ----------------------------------------

    async def claim_next(
        self,
        limit: int,
        claimer: str,
        *,
        chain_id: int | str | None = None,
        per_requester: int | None = None,
    ) -> list[StoredOrder]:
        """Claim up to ``limit`` RECEIVED orders for ``claimer``, fairly.

        Requesters take turns: each requester's oldest order first, then each
        one's second, and so on, so one requester flooding thousands of
        orders does not starve the others. With ``per_requester``, a
        requester never has more than that many orders CLAIMED (in the pool)
        at once. ``chain_id`` keeps a bridge to its own chain's orders when
        several share one database.

        On PostgreSQL the candidates are locked with ``FOR UPDATE SKIP
        LOCKED``, so concurrent claimers take disjoint sets without waiting;
        on SQLite the single UPDATE runs under the database's one write
        lock. Either way the WHERE on state makes a double claim impossible.
        Each claim counts one attempt. An order that comes back with a
        ``result`` was executed before (then orphaned): sign nothing new,
        save that result again.
        """
        if limit <= 0:
            return []
        now = self._clock()
        who = func.coalesce(WO.requester_address, WO.requester_id)
        scope = [] if chain_id is None else [WO.chain_id == chain_key(chain_id)]
        turn = func.row_number().over(partition_by=who, order_by=(WO.updated_at, WO.id))
        ranked = (
            select(WO.id, WO.updated_at, who.label("who"), turn.label("turn"))
            .where(WO.state == State.RECEIVED.value, *scope)
            .subquery("ranked")
        )
        picks = select(ranked.c.id)
        if per_requester is not None:
            busy = (
                select(who.label("who"), func.count().label("n"))
                .where(WO.state == State.CLAIMED.value, *scope)
                .group_by(who)
                .subquery("busy")
            )
            picks = picks.select_from(
                ranked.outerjoin(busy, busy.c.who == ranked.c.who)
            ).where(ranked.c.turn + func.coalesce(busy.c.n, 0) <= per_requester)
        picks = picks.order_by(ranked.c.turn, ranked.c.updated_at, ranked.c.id).limit(limit)
        # A CTE, not a plain IN (subquery): PostgreSQL may rescan a subquery
        # inside a join, and a rescan of a LIMIT ... SKIP LOCKED picks new
        # rows each time (measured: a claim of 2 took 5). A locking CTE is
        # evaluated exactly once. The window function stays in the unlocked
        # subquery (PostgreSQL allows no FOR UPDATE beside one).
        candidates = (
            select(WO.id)
            .where(WO.id.in_(picks), WO.state == State.RECEIVED.value)
            .with_for_update(skip_locked=True)
            .cte("candidates")
        )

        async with self._transaction() as session:
            moved = await self._move(
                session,
                State.CLAIMED,
                {State.RECEIVED},
                WO.id.in_(select(candidates.c.id)),
                now,
                claimed_by=claimer,
                claimed_at=now,
                attempts=WO.attempts + 1,
            )
            orders = await self._load(session, WO.id.in_([row.id for row in moved]))

        return orders

    async def release_claims(
        self, claimer: str | None = None, *, claimed_before: datetime | None = None
    ) -> Released:
        """Give back CLAIMED orders of a dead pool process (CLAIMED -> RECEIVED).

        Selects the orders claimed by ``claimer``, or claimed before
        ``claimed_before``, or both. Orders with a retry left go back to
        RECEIVED; the others stay CLAIMED and are listed as exhausted: the
        pool must sign an error result for them.
        """
        if claimer is None and claimed_before is None:
            raise BugError("release_claims needs a claimer or a claim time")
        conditions = [WO.state == State.CLAIMED.value]
        if claimer is not None:
            conditions.append(WO.claimed_by == claimer)
        if claimed_before is not None:
            conditions.append(WO.claimed_at < claimed_before)
        now = self._clock()

        async with self._transaction() as session:
            moved = await self._move(
                session,
                State.RECEIVED,
                {State.CLAIMED},
                and_(*conditions),
                now,
                claimed_by=None,
                claimed_at=None,
            )
            left = await session.execute(
                select(WO.chain_id, WO.contract, WO.order_key).where(*conditions)
            )
            exhausted = [OrderRef(*row) for row in left]

        return Released(
            requeued=[OrderRef(r.chain_id, r.contract, r.order_key) for r in moved],
            exhausted=exhausted,
        )

    async def save_result(
        self,
        ref: OrderRef,
        *,
        status: int,
        response: bytes,
        signature: bytes,
        request_hash: bytes,
        claimer: str | None = None,
    ) -> State:
        """Store the signed result of a claimed order: CLAIMED -> RESULT_READY.

        The first result saved for an order is the one kept; saving again
        (a retry, or the result of an order that was orphaned and re-claimed)
        changes nothing and still moves the order on. An order orphaned
        while it was being executed keeps the result and stays ORPHANED.
        With ``claimer``, the order must be claimed by that process.
        Returns the order's state afterwards.
        """
        item = ResultToSave(ref, status, response, signature, request_hash)
        (outcome,) = await self.save_results([item], claimer=claimer)
        if isinstance(outcome, InvalidTransition):
            raise outcome

        return outcome

    async def save_results(
        self, items: Sequence[ResultToSave], *, claimer: str | None = None
    ) -> list[State | InvalidTransition]:
        """``save_result`` for many orders in ONE transaction.

        One commit for a batch of results instead of one per order: the
        dispatcher saves what the pool finished together. Each item's
        outcome is its state afterwards, or the InvalidTransition that a
        lost claim raises for that item alone (the others are saved).

        Set-based: one locking read of the orders, one guarded UPDATE that
        moves the claimed ones, one INSERT of the results, whatever the
        batch size. A refused item leaves no trace: results are inserted
        only for the orders the UPDATE moved (and for ORPHANED ones, which
        keep their result and stay put).
        """
        if not items:
            return []
        now = self._clock()
        outcomes: list[State | InvalidTransition] = []
        to_move: dict[int, Any] = {}  # order id -> the row read
        results: dict[int, ResultToSave] = {}  # order id -> the first result

        async with self._transaction() as session:
            rows = await self._rows_of(session, [item.ref for item in items])
            for item in items:
                row = rows[item.ref]
                outcome = self._save_outcome(row, claimer)
                outcomes.append(outcome)
                # Past its result already, the order changes nothing more.
                if row.state == State.ORPHANED.value:
                    results.setdefault(row.id, item)
                elif outcome is State.RESULT_READY and row.state != outcome.value:
                    results.setdefault(row.id, item)
                    to_move[row.id] = row

            moved = await self._move_rows(
                session,
                list(to_move.values()),
                State.RESULT_READY,
                now,
                guard=None if claimer is None else WT.c.claimed_by == claimer,
            )
            lost = to_move.keys() - moved
            for position, item in enumerate(items):
                row = rows[item.ref]
                if row.id in lost:
                    results.pop(row.id, None)
                    outcomes[position] = InvalidTransition(
                        f"work order {row.work_order_id} left {row.state} while its "
                        "result was being saved: another process moved it first"
                    )
            await self._insert_results(session, results, now)

        return outcomes

    @staticmethod
    def _save_outcome(row: Any, claimer: str | None) -> State | InvalidTransition:
        """What saving a result does to an order read as ``row`` (nothing written).

        The state afterwards: unchanged for an order past its result (a retry
        of the same step) or ORPHANED (the result is kept for its return),
        RESULT_READY for a claimed one; or why the save is refused.
        """
        state = State(row.state)
        if state in _PAST_RESULT or state is State.ORPHANED:
            return state
        if claimer is not None and state is State.CLAIMED and row.claimed_by != claimer:
            return InvalidTransition(
                f"work order {row.work_order_id} is claimed by {row.claimed_by!r}, "
                f"not {claimer!r}: its claim was released and taken again"
            )
        try:
            check_transition(state, State.RESULT_READY, attempts=row.attempts)
        except InvalidTransition as exc:
            return exc

        return State.RESULT_READY

    async def _insert_results(
        self,
        session: AsyncSession,
        results: Mapping[int, ResultToSave],
        now: datetime,
    ) -> None:
        # The first result saved for an order is the one kept.
        if not results:
            return
        statement = self._insert(RT).on_conflict_do_nothing(
            index_elements=["work_order_id"]
        )
        await session.execute(
            statement,
            [
                {
                    "work_order_id": order_id,
                    "status": item.status,
                    "response": item.response,
                    "signature": item.signature,
                    "request_hash": item.request_hash,
                    "created_at": now,
                }
                for order_id, item in results.items()
            ],
        )

    async def get_order(self, ref: OrderRef) -> StoredOrder | None:
        """One work order with its result, or None if the store never saw it."""
        async with self._transaction() as session:
            found = await self._load(session, _is(ref))

        return found[0] if found else None

    # -- submission (the submitter) -------------------------------------------

    async def ready_results(
        self, limit: int, chain_id: int | str | None = None
    ) -> list[StoredOrder]:
        """Orders in RESULT_READY with their results, oldest first."""
        condition = WO.state == State.RESULT_READY.value
        if chain_id is not None:
            condition = and_(condition, WO.chain_id == chain_key(chain_id))

        async with self._transaction() as session:
            orders = await self._load(session, condition, limit=limit)

        return orders

    async def ready_completions(
        self, limit: int, chain_id: int | str, contract: str
    ) -> list[ReadyCompletion]:
        """One registry's RESULT_READY orders with their results, oldest first.

        What a submitter polls for: the result and the fields a completion
        needs, without the request payload that ``ready_results`` loads.
        """
        chain, where = chain_key(chain_id), contract_key(contract)
        async with self._transaction() as session:
            rows = await session.execute(
                _READY, {"chain": chain, "contract": where, "limit": limit}
            )
            ready = [
                ReadyCompletion(
                    ref=OrderRef(chain, where, row.order_key),
                    status=row.status,
                    response=row.response,
                    signature=row.signature,
                    requester_address=row.requester_address,
                    callback_gas=row.callback_gas,
                    ready_since=row.updated_at,
                )
                for row in rows
            ]

        return ready

    @asynccontextmanager
    async def reserve_nonce(
        self, chain_id: int | str, sender: str, *, node_nonce: int = 0
    ) -> AsyncIterator[NonceReservation]:
        """Allocate the next nonce and store its signed transaction atomically.

        ::

            async with store.reserve_nonce(chain, relayer, node_nonce=n) as slot:
                raw, tx_hash = sign(nonce=slot.nonce)
                await slot.record(raw, tx_hash, orders, fees)
            broadcast(raw)   # only after the raw transaction is committed

        ``node_nonce`` is the node's pending count for the sender; the nonce
        handed out is never below it (so a fresh database, or transactions
        sent by another tool, cannot make us reuse one). If the block raises
        or never records, nothing is committed and the nonce is not used.
        """
        chain, who = chain_key(chain_id), contract_key(sender)

        async with self._transaction() as session:
            nonce = await self._allocate(session, chain, who, node_nonce)
            reservation = NonceReservation(self, session, chain, who, nonce)
            yield reservation
            if not reservation.recorded:
                raise BugError(
                    f"nonce {nonce} of {who} was reserved but no transaction was "
                    "recorded for it; the reservation is rolled back"
                )

    async def allocate_nonce(
        self, chain_id: int | str, sender: str, *, node_nonce: int = 0
    ) -> int:
        """Allocate and commit the next nonce alone (prefer ``reserve_nonce``)."""
        async with self._transaction() as session:
            return await self._allocate(
                session, chain_key(chain_id), contract_key(sender), node_nonce
            )

    async def record_fee_bump(
        self,
        chain_id: int | str,
        sender: str,
        nonce: int,
        raw: bytes,
        tx_hash: bytes | str,
        fees: Fees,
    ) -> None:
        """Store a re-signed transaction for a nonce (higher fees), before sending it."""
        chain, who, digest = (
            chain_key(chain_id),
            contract_key(sender),
            as_bytes(tx_hash),
        )
        now = self._clock()

        async with self._transaction() as session:
            tx_id = (
                await session.execute(
                    update(m.Transaction)
                    .where(*_tx_is(chain, who, nonce))
                    .values(
                        raw=raw, tx_hash=digest, updated_at=now, **_fee_values(fees)
                    )
                    .returning(m.Transaction.id)
                )
            ).scalar_one_or_none()
            if tx_id is None:
                raise StoreError(
                    f"no transaction is stored for nonce {nonce} of {who} on chain "
                    f"{chain}: a fee bump needs the original recorded first"
                )
            await self._insert_hash(session, tx_id, raw, digest, fees, now)

    async def set_transaction_state(
        self,
        chain_id: int | str,
        sender: str,
        nonce: int,
        state: str,
        *,
        mined_hash: bytes | str | None = None,
    ) -> None:
        """Mark a nonce's transaction pending, mined, dropped or replaced."""
        if state not in m.TX_STATES:
            raise BugError(f"unknown transaction state {state!r}")
        chain, who = chain_key(chain_id), contract_key(sender)
        values: dict[str, Any] = {"state": state, "updated_at": self._clock()}
        if mined_hash is not None:
            values["mined_hash"] = as_bytes(mined_hash)

        async with self._transaction() as session:
            await session.execute(
                update(m.Transaction).where(*_tx_is(chain, who, nonce)).values(**values)
            )

    async def reopen_transactions(
        self, chain_id: int | str, sender: str, from_nonce: int
    ) -> int:
        """Track again the sender's transactions at ``from_nonce`` and above.

        After a reorg deeper than the confirmation depth, transactions once
        counted as mined may have left the chain; the chain's nonce says
        which. Marked pending again, they are re-broadcast from their stored
        bytes, so their nonces leave no gap. Returns how many were reopened.
        """
        chain, who = chain_key(chain_id), contract_key(sender)
        async with self._transaction() as session:
            result = await session.execute(
                update(m.Transaction)
                .where(
                    m.Transaction.chain_id == chain,
                    m.Transaction.sender == who,
                    m.Transaction.nonce >= from_nonce,
                    m.Transaction.state == "mined",
                )
                .values(state="pending", mined_hash=None, updated_at=self._clock())
                .returning(m.Transaction.nonce)
            )
            reopened = list(result.scalars())
        return len(reopened)

    async def get_transaction(
        self, chain_id: int | str, sender: str, nonce: int
    ) -> StoredTransaction | None:
        """The transaction stored for one nonce, with every hash sent for it."""
        chain, who = chain_key(chain_id), contract_key(sender)
        async with self._transaction() as session:
            found = await self._load_transactions(
                session, and_(*_tx_is(chain, who, nonce))
            )

        return found[0] if found else None

    async def pending_transactions(
        self, chain_id: int | str, sender: str | None = None
    ) -> list[StoredTransaction]:
        """Transactions not yet mined, dropped or replaced, lowest nonce first."""
        condition = and_(
            m.Transaction.chain_id == chain_key(chain_id),
            m.Transaction.state == "pending",
        )
        if sender is not None:
            condition = and_(condition, m.Transaction.sender == contract_key(sender))

        async with self._transaction() as session:
            return await self._load_transactions(session, condition)

    async def mark_submitted(self, refs: Sequence[OrderRef]) -> None:
        """RESULT_READY -> SUBMITTED once the completion transaction is broadcast."""
        await self._move_each(refs, State.SUBMITTED)

    async def requeue_submission(self, refs: Sequence[OrderRef]) -> None:
        """SUBMITTED -> RESULT_READY: the completion was dropped or reorged out."""
        await self._move_each(refs, State.RESULT_READY, only_from=State.SUBMITTED)

    async def mark_completed(self, ref: OrderRef, *, block_number: int) -> None:
        """SUBMITTED -> COMPLETED: its successful completion event is confirmed."""
        await self._move_each([ref], State.COMPLETED, completion_block=block_number)

    async def mark_failed(
        self,
        ref: OrderRef,
        *,
        block_number: int,
        error_code: int,
        error_message: str | None = None,
    ) -> None:
        """SUBMITTED -> FAILED: its completion carrying an error status is confirmed."""
        await self._move_each(
            [ref],
            State.FAILED,
            completion_block=block_number,
            error_code=error_code,
            error_message=error_message,
        )

    async def cancel(self, ref: OrderRef) -> None:
        """Any open state -> CANCELLED: the requester cancelled after its deadline."""
        await self._move_each([ref], State.CANCELLED)

    # -- worker identities ----------------------------------------------------

    async def save_worker(self, worker: StoredWorker) -> None:
        """Insert or replace a worker identity (its private part sealed)."""
        upsert = self._insert(m.Worker).values(
            worker_id=worker.worker_id,
            sealed_identity=worker.sealed_identity,
            details=dict(worker.details),
            signing_address=contract_key(worker.signing_address),
            updated_at=self._clock(),
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=["worker_id"],
            set_={
                name: getattr(upsert.excluded, name)
                for name in (
                    "sealed_identity",
                    "details",
                    "signing_address",
                    "updated_at",
                )
            },
        )
        async with self._transaction() as session:
            await session.execute(upsert)

    async def get_worker(self, worker_id: str) -> StoredWorker | None:
        """A stored worker identity, or None."""
        async with self._transaction() as session:
            row = await session.get(m.Worker, worker_id)
            if row is None:
                return None

        return StoredWorker(
            worker_id=row.worker_id,
            sealed_identity=row.sealed_identity,
            details=row.details,
            signing_address=row.signing_address,
        )

    # -- statistics -----------------------------------------------------------

    async def counts_by_state(self) -> dict[State, int]:
        """How many work orders are in each state (every state listed)."""
        async with self._transaction() as session:
            rows = await session.execute(
                select(WO.state, func.count()).group_by(WO.state)
            )
            counts = {State(state): count for state, count in rows}

        return {state: counts.get(state, 0) for state in State}

    async def oldest_age(self, state: State) -> float | None:
        """Seconds since the longest-waiting order entered ``state``; None if none."""
        async with self._transaction() as session:
            oldest = (
                await session.execute(
                    select(func.min(WO.updated_at)).where(WO.state == state.value)
                )
            ).scalar_one_or_none()
        if oldest is None:
            return None
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)

        return max(0.0, (self._clock() - oldest).total_seconds())

    # -- roles ----------------------------------------------------------------

    @asynccontextmanager
    async def role_lock(self, chain_id: int | str, role: str) -> AsyncIterator[bool]:
        """Hold "the one ``role`` (watcher, submitter) of this chain", if free.

        Yields True while this process holds it, False if another holds it.
        PostgreSQL: a session advisory lock on a connection kept open for the
        block. SQLite: an exclusive ``flock`` on a file beside the database.
        """
        async with self._locks.hold(f"{role}:{chain_key(chain_id)}") as held:
            yield held

    # -- internals ------------------------------------------------------------

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        try:
            async with self._sessions.begin() as session:
                yield session
        except (SQLAlchemyError, OSError) as exc:
            raise translate_error(exc) from exc

    def _insert(self, model: type[m.Base] | Table) -> Any:
        dialect = postgresql if self._dialect == "postgresql" else sqlite
        return dialect.insert(model)

    async def _move(
        self,
        session: AsyncSession,
        target: State,
        sources: Iterable[State],
        where: ColumnElement[bool],
        now: datetime,
        **values: Any,
    ) -> list[Any]:
        """THE state change: checked against the table, guarded by the old state.

        Moves every order matching ``where`` whose state is one of
        ``sources`` to ``target``, in one statement; returns the moved rows
        (id, chain_id, contract, order_key, work_order_id, block_number,
        tx_hash).
        """
        guards = []
        for source in sorted(sources):
            check_transition(source, target, attempts=0)
            guard = WT.c.state == source.value
            if source is State.CLAIMED and target is State.RECEIVED:
                # "Retried once": the attempt count is checked in the same
                # statement that moves the order.
                guard = and_(guard, WT.c.attempts < MAX_ATTEMPTS)
            guards.append(guard)
        if not guards:
            return []
        statement = (
            update(WT)
            .where(where, or_(*guards))
            .values(state=target.value, updated_at=now, **values)
            .returning(*_MOVED_COLUMNS)
        )
        moved = list(await session.execute(statement))
        if log.isEnabledFor(logging.INFO):
            for row in moved:
                _log_move(row._mapping, target)

        return moved

    async def _move_rows(
        self,
        session: AsyncSession,
        rows: Sequence[Any],
        target: State,
        now: datetime,
        *,
        guard: ColumnElement[bool] | None = None,
        **values: Any,
    ) -> set[int]:
        """Move orders read as ``rows`` (id, state, attempts) to ``target``.

        Each distinct source state is checked against the table once (with
        the highest attempt count among its rows), then ONE guarded UPDATE
        per chunk moves them all; ``guard`` narrows it further. Returns the
        ids moved: a row missing from it was moved by another process
        between the read and the write.
        """
        if not rows:
            return set()
        attempts: dict[State, int] = {}
        for row in rows:
            source = State(row.state)
            attempts[source] = max(attempts.get(source, 0), row.attempts)
        for source, most in attempts.items():
            check_transition(source, target, attempts=most)

        moved: set[int] = set()
        ids = [row.id for row in rows]
        for chunk in _chunks(ids):
            where: ColumnElement[bool] = WT.c.id.in_(chunk)
            if guard is not None:
                where = and_(where, guard)
            found = await self._move(
                session, target, set(attempts), where, now, **values
            )
            moved.update(row.id for row in found)

        return moved

    async def _move_each(
        self,
        refs: Sequence[OrderRef],
        target: State,
        *,
        only_from: State | None = None,
        **values: Any,
    ) -> None:
        """Move each order to ``target``; with ``only_from``, from that state only.

        ``only_from`` narrows the table for calls that name one step (a
        requeued submission comes from SUBMITTED, never from CLAIMED, though
        both may go to RESULT_READY). All or nothing: one order that may not
        move refuses the whole call.
        """
        now = self._clock()
        async with self._transaction() as session:
            rows = await self._rows_of(session, refs)
            pending: dict[int, Any] = {}
            for row in rows.values():
                source = State(row.state)
                if source is target:
                    continue  # already done: a retry of the same step
                if only_from is not None and source is not only_from:
                    raise InvalidTransition(
                        f"work order {row.work_order_id} is {source.value}; this "
                        f"step moves only {only_from.value} orders to {target.value}"
                    )
                pending[row.id] = row
            moved = await self._move_rows(
                session, list(pending.values()), target, now, **values
            )
            _refuse_unmoved(pending, moved, target)

    async def _rows_of(
        self, session: AsyncSession, refs: Sequence[OrderRef]
    ) -> dict[OrderRef, Any]:
        """The current (id, state, attempts, ...) of each order, read in bulk.

        One SELECT per (chain, contract) and chunk of keys; on PostgreSQL
        the rows stay locked (FOR UPDATE) until the transaction ends, so the
        states read are the states the writes that follow start from.
        Raises StoreError if an order was never recorded.
        """
        wanted: dict[tuple[str, str], set[bytes]] = {}
        for ref in refs:
            wanted.setdefault((ref.chain_id, ref.contract), set()).add(ref.order_key)
        found: dict[OrderRef, Any] = {}
        for (chain, contract), keys in wanted.items():
            for chunk in _chunks(sorted(keys)):
                result = await session.execute(
                    _FIND_ORDERS, {"chain": chain, "contract": contract, "keys": chunk}
                )
                for row in result:
                    found[OrderRef(chain, contract, row.order_key)] = row
        for ref in refs:
            if ref not in found:
                raise StoreError(
                    f"no work order {ref.order_key.hex()} of contract {ref.contract} "
                    f"on chain {ref.chain_id} is stored: record its event first"
                )

        return found

    async def _load(
        self,
        session: AsyncSession,
        where: ColumnElement[bool],
        limit: int | None = None,
    ) -> list[StoredOrder]:
        query = (
            select(WT, *_RESULT_COLUMNS)
            .outerjoin(RT, RT.c.work_order_id == WT.c.id)
            .where(where)
            .order_by(WT.c.updated_at, WT.c.id)
        )
        if limit is not None:
            query = query.limit(limit)
        rows = await session.execute(query)

        return [_stored_order(row) for row in rows]

    async def _insert_orders(
        self, session: AsyncSession, rows: list[dict[str, Any]]
    ) -> set[bytes]:
        if not rows:
            return set()
        statement = (
            self._insert(WT)
            .on_conflict_do_nothing(
                index_elements=["chain_id", "contract", "order_key"]
            )
            .returning(WT.c.order_key)
        )
        # A list of parameter sets, not .values([...]): one statement shape
        # that SQLAlchemy compiles once and batches ("insertmanyvalues").
        result = await session.execute(statement, rows)

        return set(result.scalars())

    async def _revive(
        self,
        session: AsyncSession,
        chain: str,
        contract: str,
        seen: list[dict[str, Any]],
        now: datetime,
    ) -> list[OrderRef]:
        """ORPHANED -> RECEIVED for orders seen again on the canonical chain."""
        if not seen:
            return []
        by_key = {row["order_key"]: row for row in seen}
        orphans: list[Any] = []
        for keys in _chunks(list(by_key)):
            found = await session.execute(
                select(
                    WO.id,
                    WO.state,
                    WO.attempts,
                    WO.work_order_id,
                    WO.order_key,
                    WO.request_keccak,
                ).where(
                    WO.chain_id == chain,
                    WO.contract == contract,
                    WO.order_key.in_(keys),
                    WO.state == State.ORPHANED.value,
                )
            )
            orphans.extend(found)

        revived = []
        for orphan in orphans:
            event = by_key[orphan.order_key]
            values = {
                name: event[name]
                for name in ("block_number", "block_hash", "tx_hash", "log_index")
            }
            if event["request_keccak"] != orphan.request_keccak:
                # A different request under the same key: the old result
                # answers a request that no longer exists.
                await session.execute(
                    delete(m.Result).where(m.Result.work_order_id == orphan.id)
                )
                for name in (
                    "request",
                    "request_keccak",
                    "work_order_id",
                    "worker_id",
                    "requester_id",
                    "requester_address",
                    "deadline",
                    "callback_gas",
                ):
                    values[name] = event[name]
            moved = await self._move_rows(
                session,
                [orphan],
                State.RECEIVED,
                now,
                attempts=0,
                claimed_by=None,
                claimed_at=None,
                **values,
            )
            _refuse_unmoved({orphan.id: orphan}, moved, State.RECEIVED)
            revived.append(OrderRef(chain, contract, orphan.order_key))

        return revived

    async def _settle(
        self,
        session: AsyncSession,
        chain: str,
        contract: str,
        settlements: Sequence[Settlement],
        now: datetime,
    ) -> int:
        """Apply confirmed on-chain outcomes; how many changed an order.

        The settlements are judged in their chain order against the states
        read in one bulk SELECT (the table allows at most one settling move
        per order: every settled state is final), then written with one
        guarded UPDATE per (target, completion block, error code) group.
        """
        if not settlements:
            return 0
        keys = sorted({as_bytes(s.order_key) for s in settlements})
        refs = [OrderRef(chain, contract, key) for key in keys]
        rows = await self._known_rows(session, refs)
        state = {key: State(row.state) for key, row in rows.items()}
        groups: dict[tuple[State, tuple[tuple[str, Any], ...]], list[Any]] = {}
        notes: dict[int, str] = {}
        settled = 0

        for settlement in settlements:
            key = as_bytes(settlement.order_key)
            row = rows.get(key)
            if row is None:
                continue  # an order of this registry that we never recorded
            if settlement.kind == "skipped":
                notes[row.id] = (
                    f"completion skipped on-chain in block "
                    f"{settlement.block_number}, reason {settlement.reason}"
                )
                log.warning(
                    "work order %s: completion skipped on-chain, reason %d",
                    row.work_order_id,
                    settlement.reason,
                    extra={"chain": chain, "block": settlement.block_number},
                )
                settled += 1
                continue
            target, values = _settled_as(settlement)
            source = state[key]
            if source is target:
                continue
            if not is_allowed(source, target, attempts=row.attempts):
                log.warning(
                    "work order %s settled on-chain as %s while %s here; left as it is",
                    row.work_order_id,
                    target.value,
                    source.value,
                    extra={"chain": chain, "block": settlement.block_number},
                )
                continue
            state[key] = target
            groups.setdefault((target, tuple(sorted(values.items()))), []).append(row)

        for (target, fields), members in groups.items():
            moved = await self._move_rows(session, members, target, now, **dict(fields))
            _refuse_unmoved({row.id: row for row in members}, moved, target)
            settled += len(moved)
        if notes:
            await session.execute(
                _NOTE_ERROR,
                [
                    {"order_id": order_id, "message": message, "now": now}
                    for order_id, message in notes.items()
                ],
            )

        return settled

    async def _known_rows(
        self, session: AsyncSession, refs: Sequence[OrderRef]
    ) -> dict[bytes, Any]:
        """Like ``_rows_of`` for refs of one contract, skipping unknown orders."""
        if not refs:
            return {}
        chain, contract = refs[0].chain_id, refs[0].contract
        found: dict[bytes, Any] = {}
        for chunk in _chunks([ref.order_key for ref in refs]):
            result = await session.execute(
                _FIND_ORDERS, {"chain": chain, "contract": contract, "keys": chunk}
            )
            found.update((row.order_key, row) for row in result)

        return found

    async def _insert_malformed(
        self,
        session: AsyncSession,
        chain: str,
        contract: str,
        logs: Sequence[BadLog],
        now: datetime,
    ) -> int:
        if not logs:
            return 0
        check_transition(None, State.MALFORMED)
        rows = [
            {
                "chain_id": chain,
                "contract": contract,
                "block_number": bad.block_number,
                "block_hash": as_bytes(bad.block_hash),
                "tx_hash": as_bytes(bad.tx_hash),
                "log_index": bad.log_index,
                "data": bad.data,
                "error": bad.error,
                "received_at": now,
            }
            for bad in logs
        ]
        statement = self._insert(m.MalformedLog).on_conflict_do_nothing(
            index_elements=["chain_id", "contract", "tx_hash", "log_index"]
        )
        await session.execute(statement, rows)
        for bad in logs:
            log.warning(
                "malformed log recorded",
                extra={
                    "chain": chain,
                    "block": bad.block_number,
                    "tx_hash": as_bytes(bad.tx_hash).hex(),
                    "log_index": bad.log_index,
                    "error": bad.error,
                },
            )

        return len(rows)

    async def _write_checkpoint(
        self,
        session: AsyncSession,
        chain: str,
        contract: str,
        stream: str,
        block_number: int,
        recent_hashes: Mapping[int, bytes | str],
        last_tx_id: str | None,
        now: datetime,
    ) -> None:
        upsert = self._insert(m.Checkpoint).values(
            chain_id=chain,
            contract=contract,
            stream=stream,
            block_number=block_number,
            last_tx_id=last_tx_id,
            updated_at=now,
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=["chain_id", "contract", "stream"],
            set_={
                "block_number": upsert.excluded.block_number,
                "last_tx_id": upsert.excluded.last_tx_id,
                "updated_at": upsert.excluded.updated_at,
            },
        ).returning(m.Checkpoint.id)
        point_id = (await session.execute(upsert)).scalar_one()

        if recent_hashes:
            rows = [
                {
                    "checkpoint_id": point_id,
                    "block_number": n,
                    "block_hash": as_bytes(h),
                }
                for n, h in sorted(recent_hashes.items())
            ]
            merge = self._insert(CBT)
            merge = merge.on_conflict_do_update(
                index_elements=["checkpoint_id", "block_number"],
                set_={"block_hash": merge.excluded.block_hash},
            )
            await session.execute(merge, rows)
        await session.execute(
            delete(m.CheckpointBlock).where(
                m.CheckpointBlock.checkpoint_id == point_id,
                or_(
                    m.CheckpointBlock.block_number <= block_number - RECENT_BLOCKS_KEPT,
                    m.CheckpointBlock.block_number > block_number,
                ),
            )
        )

    async def _allocate(
        self, session: AsyncSession, chain: str, sender: str, node_nonce: int
    ) -> int:
        # The UPDATE takes the row lock (PostgreSQL) or the write lock
        # (SQLite) and returns the value it wrote, so two allocators never
        # read the same counter: they queue on the row instead.
        await session.execute(
            self._insert(m.Nonce)
            .values(chain_id=chain, sender=sender, next_nonce=node_nonce)
            .on_conflict_do_nothing(index_elements=["chain_id", "sender"])
        )
        floor = case(
            (m.Nonce.next_nonce > node_nonce, m.Nonce.next_nonce), else_=node_nonce
        )
        allocated = (
            await session.execute(
                update(m.Nonce)
                .where(m.Nonce.chain_id == chain, m.Nonce.sender == sender)
                .values(next_nonce=floor + 1)
                .returning(m.Nonce.next_nonce)
            )
        ).scalar_one()

        return int(allocated) - 1

    async def _insert_transaction(
        self,
        session: AsyncSession,
        chain: str,
        sender: str,
        nonce: int,
        raw: bytes,
        tx_hash: bytes,
        orders: Sequence[OrderRef],
        fees: Fees,
        *,
        submit: bool,
    ) -> None:
        now = self._clock()
        tx_id = (
            await session.execute(
                self._insert(m.Transaction)
                .values(
                    chain_id=chain,
                    sender=sender,
                    nonce=nonce,
                    raw=raw,
                    tx_hash=tx_hash,
                    state="pending",
                    gas_limit=fees.gas_limit,
                    created_at=now,
                    updated_at=now,
                    **_fee_values(fees),
                )
                .returning(m.Transaction.id)
            )
        ).scalar_one()
        await self._insert_hash(session, tx_id, raw, tx_hash, fees, now)

        if not orders:
            return
        rows = await self._rows_of(session, orders)
        if submit:
            pending = {
                row.id: row
                for row in rows.values()
                if State(row.state) is not State.SUBMITTED
            }
            moved = await self._move_rows(
                session, list(pending.values()), State.SUBMITTED, now
            )
            _refuse_unmoved(pending, moved, State.SUBMITTED)
        await session.execute(
            self._insert(TOT),
            [
                {"transaction_id": tx_id, "work_order_id": row.id}
                for row in {row.id: row for row in rows.values()}.values()
            ],
        )

    async def _insert_hash(
        self,
        session: AsyncSession,
        tx_id: int,
        raw: bytes,
        tx_hash: bytes,
        fees: Fees,
        now: datetime,
    ) -> None:
        await session.execute(
            self._insert(m.TransactionHash)
            .values(
                tx_hash=tx_hash,
                transaction_id=tx_id,
                raw=raw,
                created_at=now,
                **_fee_values(fees),
            )
            .on_conflict_do_nothing(index_elements=["tx_hash"])
        )

    async def _load_transactions(
        self, session: AsyncSession, where: ColumnElement[bool]
    ) -> list[StoredTransaction]:
        txs = list(
            (
                await session.execute(
                    select(m.Transaction).where(where).order_by(m.Transaction.nonce)
                )
            ).scalars()
        )
        if not txs:
            return []
        ids = [tx.id for tx in txs]
        hashes: dict[int, list[bytes]] = {tx_id: [] for tx_id in ids}
        for tx_id, digest in await session.execute(
            select(m.TransactionHash.transaction_id, m.TransactionHash.tx_hash)
            .where(m.TransactionHash.transaction_id.in_(ids))
            .order_by(m.TransactionHash.created_at)
        ):
            hashes[tx_id].append(digest)
        carried: dict[int, list[OrderRef]] = {tx_id: [] for tx_id in ids}
        for tx_id, chain, contract, key in await session.execute(
            select(
                m.TransactionOrder.transaction_id,
                WO.chain_id,
                WO.contract,
                WO.order_key,
            )
            .join(WO, WO.id == m.TransactionOrder.work_order_id)
            .where(m.TransactionOrder.transaction_id.in_(ids))
        ):
            carried[tx_id].append(OrderRef(chain, contract, key))

        return [
            StoredTransaction(
                chain_id=tx.chain_id,
                sender=tx.sender,
                nonce=tx.nonce,
                raw=tx.raw,
                tx_hash=tx.tx_hash,
                state=tx.state,
                fees=Fees(
                    gas_limit=tx.gas_limit,
                    max_fee_per_gas=tx.max_fee_per_gas,
                    max_priority_fee_per_gas=tx.max_priority_fee_per_gas,
                    gas_price=tx.gas_price,
                ),
                all_hashes=hashes[tx.id],
                orders=carried[tx.id],
                mined_hash=tx.mined_hash,
                created_at=tx.created_at,
                updated_at=tx.updated_at,
            )
            for tx in txs
        ]


def translate_error(exc: BaseException) -> StoreError:
    """The one mapping of database and driver errors to ``StoreError``."""
    if isinstance(exc, IntegrityError):
        return StoreError(
            f"the database refused a write that conflicts with stored data: {exc.orig}"
        )
    if isinstance(exc, OperationalError | OSError):
        return StoreError(
            "the database could not be reached or is locked; check that it runs "
            f"and that no other process holds it for long: {exc}"
        )

    return StoreError(f"the database failed an operation: {exc}")


def _is(ref: OrderRef) -> ColumnElement[bool]:
    return and_(
        WT.c.chain_id == ref.chain_id,
        WT.c.contract == ref.contract,
        WT.c.order_key == ref.order_key,
    )


# Built once: their compiled forms are cached, and only the values change.
_FIND_ORDERS = (
    select(
        WT.c.id,
        WT.c.order_key,
        WT.c.state,
        WT.c.attempts,
        WT.c.claimed_by,
        WT.c.work_order_id,
    )
    .where(
        WT.c.chain_id == bindparam("chain"),
        WT.c.contract == bindparam("contract"),
        WT.c.order_key.in_(bindparam("keys", expanding=True)),
    )
    # PostgreSQL: the rows read stay locked until the transaction ends.
    # SQLite renders no FOR UPDATE; its BEGIN IMMEDIATE already serialises.
    .with_for_update()
)
_READY = (
    select(
        WT.c.order_key,
        WT.c.requester_address,
        WT.c.callback_gas,
        WT.c.updated_at,
        RT.c.status,
        RT.c.response,
        RT.c.signature,
    )
    .join(RT, RT.c.work_order_id == WT.c.id)
    .where(
        WT.c.state == State.RESULT_READY.value,
        WT.c.chain_id == bindparam("chain"),
        WT.c.contract == bindparam("contract"),
    )
    .order_by(WT.c.updated_at, WT.c.id)
    .limit(bindparam("limit"))
)
_NOTE_ERROR = (
    update(WT)
    .where(WT.c.id == bindparam("order_id"))
    .values(error_message=bindparam("message"), updated_at=bindparam("now"))
)
_MOVED_COLUMNS = (
    WT.c.id,
    WT.c.chain_id,
    WT.c.contract,
    WT.c.order_key,
    WT.c.work_order_id,
    WT.c.block_number,
    WT.c.tx_hash,
)
_RESULT_COLUMNS = (
    RT.c.work_order_id.label("result_of"),
    RT.c.status.label("result_status"),
    RT.c.response.label("result_response"),
    RT.c.signature.label("result_signature"),
    RT.c.request_hash.label("result_request_hash"),
    RT.c.created_at.label("result_created_at"),
)


def _refuse_unmoved(pending: Mapping[int, Any], moved: set[int], target: State) -> None:
    """Raise for the first order that a guarded UPDATE did not move."""
    for order_id, row in pending.items():
        if order_id not in moved:
            raise InvalidTransition(
                f"work order {row.work_order_id} left {row.state} while it was "
                f"being moved to {target.value}: another process moved it first"
            )


def _settled_as(settlement: Settlement) -> tuple[State, dict[str, Any]]:
    """The state a completion or cancellation settles an order in, and its fields."""
    if settlement.kind == "cancelled":
        return State.CANCELLED, {}
    if settlement.status == 0:
        return State.COMPLETED, {"completion_block": settlement.block_number}

    return State.FAILED, {
        "completion_block": settlement.block_number,
        "error_code": settlement.status,
    }


def _tx_is(chain: str, sender: str, nonce: int) -> list[ColumnElement[bool]]:
    return [
        m.Transaction.chain_id == chain,
        m.Transaction.sender == sender,
        m.Transaction.nonce == nonce,
    ]


def _fee_values(fees: Fees) -> dict[str, int | None]:
    return {
        "max_fee_per_gas": fees.max_fee_per_gas,
        "max_priority_fee_per_gas": fees.max_priority_fee_per_gas,
        "gas_price": fees.gas_price,
    }


def _order_row(
    chain: str, contract: str, order: NewOrder, now: datetime
) -> dict[str, Any]:
    state = State.SKIPPED if order.skipped else State.RECEIVED
    check_transition(None, state)

    return {
        "chain_id": chain,
        "contract": contract,
        "order_key": as_bytes(order.order_key),
        "work_order_id": as_id(order.work_order_id),
        "worker_id": as_id(order.worker_id),
        "requester_id": as_id(order.requester_id),
        "requester_address": (
            None
            if order.requester_address is None
            else contract_key(order.requester_address)
        ),
        "request": order.request,
        "request_keccak": as_bytes(order.request_keccak),
        "block_number": order.block_number,
        "block_hash": as_bytes(order.block_hash),
        "tx_hash": as_bytes(order.tx_hash),
        "log_index": order.log_index,
        "state": state.value,
        "attempts": 0,
        "received_at": now,
        "updated_at": now,
        "deadline": order.deadline,
        "callback_gas": order.callback_gas,
    }


def _stored_order(row: Any) -> StoredOrder:
    """A ``StoredOrder`` from a row of ``_load`` (order columns, result labels)."""
    result = (
        None
        if row.result_of is None
        else StoredResult(
            status=row.result_status,
            response=row.result_response,
            signature=row.result_signature,
            request_hash=row.result_request_hash,
            created_at=row.result_created_at,
        )
    )

    return StoredOrder(
        ref=OrderRef(row.chain_id, row.contract, row.order_key),
        work_order_id=row.work_order_id,
        worker_id=row.worker_id,
        requester_id=row.requester_id,
        requester_address=row.requester_address,
        request=row.request,
        request_keccak=row.request_keccak,
        block_number=row.block_number,
        block_hash=row.block_hash,
        tx_hash=row.tx_hash,
        log_index=row.log_index,
        state=State(row.state),
        attempts=row.attempts,
        error_code=row.error_code,
        error_message=row.error_message,
        claimed_by=row.claimed_by,
        claimed_at=row.claimed_at,
        received_at=row.received_at,
        updated_at=row.updated_at,
        deadline=row.deadline,
        callback_gas=row.callback_gas,
        completion_block=row.completion_block,
        result=result,
    )


class _Hex:
    """Bytes shown as ``0x`` hex only if a handler formats the record."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        self._raw = raw

    def __str__(self) -> str:
        return "0x" + bytes(self._raw).hex()

    __repr__ = __str__


def _log_move(row: Mapping[Any, Any], target: State) -> None:
    """The one INFO line per work-order state change (callers check the level)."""
    log.info(
        "work order %s -> %s",
        row["work_order_id"],
        target,
        extra={
            "chain": row["chain_id"],
            "work_order_id": row["work_order_id"],
            "block": row["block_number"],
            "tx_hash": _Hex(row["tx_hash"]),
            "state": target,
        },
    )
