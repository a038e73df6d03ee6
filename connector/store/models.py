"""The tables of the work-order store, as typed SQLAlchemy 2 models.

The schema itself is created and changed only by the Alembic revisions in
``connector/migrations``; these models must describe the head revision (a
test compares them).

Conventions: ``chain_id`` is text (the decimal EIP-155 id for Ethereum, a
``fabric:<channel>`` name for Fabric); contract addresses are lower-case
``0x`` hex (or a chaincode name); hashes, keys and payloads are raw bytes;
times are UTC; wei amounts are decimal text because they outgrow 64 bits.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from connector.states import State

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-numbers an INTEGER PRIMARY KEY, not a BIGINT one.
RowId = BigInteger().with_variant(Integer(), "sqlite")

STATE_VALUES = ", ".join(f"'{state.value}'" for state in State)
TX_STATES = ("pending", "mined", "dropped", "replaced")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass a UTC time")
        value = value.astimezone(UTC)

        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]

        return value.astimezone(UTC)  # type: ignore[no-any-return]


class Wei(TypeDecorator[int]):
    """A non-negative integer of any size, kept as decimal text."""

    impl = String(80)
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        return None if value is None else str(int(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Checkpoint(Base):
    """How far the watcher of one event stream has read a chain."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("chain_id", "contract", "stream"),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True)
    chain_id: Mapped[str] = mapped_column(String(64))
    contract: Mapped[str] = mapped_column(String(128))
    stream: Mapped[str] = mapped_column(String(64))
    block_number: Mapped[int] = mapped_column(BigInteger)
    # Fabric: the last transaction id processed inside block_number.
    last_tx_id: Mapped[str | None] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CheckpointBlock(Base):
    """The hash the watcher saw for one recent block, to detect reorgs."""

    __tablename__ = "checkpoint_blocks"

    checkpoint_id: Mapped[int] = mapped_column(
        ForeignKey("checkpoints.id", ondelete="CASCADE"), primary_key=True
    )
    block_number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    block_hash: Mapped[bytes] = mapped_column(LargeBinary)


class WorkOrder(Base):
    """One work order seen on a chain, keyed by (chain, registry, order key)."""

    __tablename__ = "work_orders"
    __table_args__ = (
        UniqueConstraint("chain_id", "contract", "order_key"),
        CheckConstraint(f"state IN ({STATE_VALUES})", name="state"),
        Index(
            "ix_work_orders_chain_contract_block",
            "chain_id",
            "contract",
            "block_number",
        ),
        # Revision 0002: claim_next, ready_results and oldest_age scan by state in
        # the order orders entered it.
        Index("ix_work_orders_state_updated", "state", "updated_at"),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True)
    chain_id: Mapped[str] = mapped_column(String(64))
    contract: Mapped[str] = mapped_column(String(128))
    order_key: Mapped[bytes] = mapped_column(LargeBinary)
    work_order_id: Mapped[str] = mapped_column(String(256))
    worker_id: Mapped[str] = mapped_column(String(256))
    requester_id: Mapped[str] = mapped_column(String(256))
    requester_address: Mapped[str | None] = mapped_column(String(128))
    request: Mapped[bytes] = mapped_column(LargeBinary)
    request_keccak: Mapped[bytes] = mapped_column(LargeBinary)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[bytes] = mapped_column(LargeBinary)
    tx_hash: Mapped[bytes] = mapped_column(LargeBinary)
    log_index: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Unix seconds after which the requester may cancel; None if none.
    deadline: Mapped[int | None] = mapped_column(BigInteger)
    # Revision 0002: the block of the confirmed WorkOrderCompleted event.
    completion_block: Mapped[int | None] = mapped_column(BigInteger)
    # Revision 0003: gas the requester asked for its callback (0: none).
    callback_gas: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class MalformedLog(Base):
    """A log that did not decode into a work order (state MALFORMED)."""

    __tablename__ = "malformed_logs"
    __table_args__ = (UniqueConstraint("chain_id", "contract", "tx_hash", "log_index"),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True)
    chain_id: Mapped[str] = mapped_column(String(64))
    contract: Mapped[str] = mapped_column(String(128))
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[bytes] = mapped_column(LargeBinary)
    tx_hash: Mapped[bytes] = mapped_column(LargeBinary)
    log_index: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    error: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Result(Base):
    """The signed result the pool made for one work order (at most one)."""

    __tablename__ = "results"

    work_order_id: Mapped[int] = mapped_column(
        ForeignKey("work_orders.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[int] = mapped_column(Integer)  # EEA code, 0 is success
    response: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary)  # EEA request hash
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Transaction(Base):
    """One nonce of one sender: the transaction the submitter signed for it."""

    __tablename__ = "transactions"
    __table_args__ = (
        UniqueConstraint("chain_id", "sender", "nonce"),
        CheckConstraint(
            "state IN ({})".format(", ".join(f"'{s}'" for s in TX_STATES)),
            name="state",
        ),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True)
    chain_id: Mapped[str] = mapped_column(String(64))
    sender: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[int] = mapped_column(BigInteger)
    raw: Mapped[bytes] = mapped_column(LargeBinary)  # the latest signed version
    tx_hash: Mapped[bytes] = mapped_column(LargeBinary)  # hash of ``raw``
    state: Mapped[str] = mapped_column(String(16), index=True)
    gas_limit: Mapped[int | None] = mapped_column(BigInteger)
    max_fee_per_gas: Mapped[int | None] = mapped_column(Wei)
    max_priority_fee_per_gas: Mapped[int | None] = mapped_column(Wei)
    gas_price: Mapped[int | None] = mapped_column(Wei)
    mined_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class TransactionHash(Base):
    """Every signed version sent for one nonce (the first and each fee bump)."""

    __tablename__ = "transaction_hashes"

    tx_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(
        ForeignKey("transactions.id", ondelete="CASCADE"), index=True
    )
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    max_fee_per_gas: Mapped[int | None] = mapped_column(Wei)
    max_priority_fee_per_gas: Mapped[int | None] = mapped_column(Wei)
    gas_price: Mapped[int | None] = mapped_column(Wei)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class TransactionOrder(Base):
    """Which work orders a transaction completes (one, or a batch)."""

    __tablename__ = "transaction_orders"

    transaction_id: Mapped[int] = mapped_column(
        ForeignKey("transactions.id", ondelete="CASCADE"), primary_key=True
    )
    work_order_id: Mapped[int] = mapped_column(
        ForeignKey("work_orders.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Nonce(Base):
    """The next nonce to hand out for one sender on one chain."""

    __tablename__ = "nonces"

    chain_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sender: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_nonce: Mapped[int] = mapped_column(BigInteger)


class Worker(Base):
    """A worker identity of this operator; the private part is sealed."""

    __tablename__ = "workers"

    worker_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    sealed_identity: Mapped[bytes] = mapped_column(LargeBinary)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    signing_address: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WorkloadState(Base):
    """State a stateful workload keeps per worker identity (optimistic version)."""

    __tablename__ = "workload_state"

    worker_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    workload: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RequestClaim(Base):
    """A worker serves one request hash once: the first order to claim it.

    Mirrors ``enclave_bridge.workload_state``'s claim table, whose order key
    is the pool job's text key, so the pool can move here unchanged.
    """

    __tablename__ = "request_claims"

    worker_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    order_key: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
