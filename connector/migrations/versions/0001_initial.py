"""Initial schema: checkpoints, work orders, results, transactions, nonces,
workers and workload state.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen here on purpose: a later change to the states needs its own revision.
WORK_ORDER_STATES = (
    "RECEIVED",
    "SKIPPED",
    "MALFORMED",
    "CLAIMED",
    "RESULT_READY",
    "SUBMITTED",
    "COMPLETED",
    "FAILED",
    "ORPHANED",
    "CANCELLED",
)
TX_STATES = ("pending", "mined", "dropped", "replaced")

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _wei() -> sa.String:
    return sa.String(80)


def _one_of(values: tuple[str, ...]) -> str:
    return "state IN ({})".format(", ".join(f"'{v}'" for v in values))


def upgrade() -> None:
    op.create_table(
        "checkpoints",
        sa.Column("id", RowId, nullable=False),
        sa.Column("chain_id", sa.String(64), nullable=False),
        sa.Column("contract", sa.String(128), nullable=False),
        sa.Column("stream", sa.String(64), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("last_tx_id", sa.String(128), nullable=True),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkpoints")),
        sa.UniqueConstraint(
            "chain_id",
            "contract",
            "stream",
            name=op.f("uq_checkpoints_chain_id_contract_stream"),
        ),
    )
    op.create_table(
        "checkpoint_blocks",
        sa.Column("checkpoint_id", RowId, nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["checkpoints.id"],
            name=op.f("fk_checkpoint_blocks_checkpoint_id_checkpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "checkpoint_id", "block_number", name=op.f("pk_checkpoint_blocks")
        ),
    )
    op.create_table(
        "work_orders",
        sa.Column("id", RowId, nullable=False),
        sa.Column("chain_id", sa.String(64), nullable=False),
        sa.Column("contract", sa.String(128), nullable=False),
        sa.Column("order_key", sa.LargeBinary(), nullable=False),
        sa.Column("work_order_id", sa.String(256), nullable=False),
        sa.Column("worker_id", sa.String(256), nullable=False),
        sa.Column("requester_id", sa.String(256), nullable=False),
        sa.Column("requester_address", sa.String(128), nullable=True),
        sa.Column("request", sa.LargeBinary(), nullable=False),
        sa.Column("request_keccak", sa.LargeBinary(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.LargeBinary(), nullable=False),
        sa.Column("tx_hash", sa.LargeBinary(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_at", _utc(), nullable=True),
        sa.Column("received_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("deadline", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            _one_of(WORK_ORDER_STATES), name=op.f("ck_work_orders_state")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_orders")),
        sa.UniqueConstraint(
            "chain_id",
            "contract",
            "order_key",
            name=op.f("uq_work_orders_chain_id_contract_order_key"),
        ),
    )
    op.create_index(
        "ix_work_orders_chain_contract_block",
        "work_orders",
        ["chain_id", "contract", "block_number"],
    )
    op.create_table(
        "malformed_logs",
        sa.Column("id", RowId, nullable=False),
        sa.Column("chain_id", sa.String(64), nullable=False),
        sa.Column("contract", sa.String(128), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.LargeBinary(), nullable=False),
        sa.Column("tx_hash", sa.LargeBinary(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("received_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_malformed_logs")),
        sa.UniqueConstraint(
            "chain_id",
            "contract",
            "tx_hash",
            "log_index",
            name=op.f("uq_malformed_logs_chain_id_contract_tx_hash_log_index"),
        ),
    )
    op.create_table(
        "results",
        sa.Column("work_order_id", RowId, nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["work_order_id"],
            ["work_orders.id"],
            name=op.f("fk_results_work_order_id_work_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("work_order_id", name=op.f("pk_results")),
    )
    op.create_table(
        "transactions",
        sa.Column("id", RowId, nullable=False),
        sa.Column("chain_id", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("tx_hash", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("gas_limit", sa.BigInteger(), nullable=True),
        sa.Column("max_fee_per_gas", _wei(), nullable=True),
        sa.Column("max_priority_fee_per_gas", _wei(), nullable=True),
        sa.Column("gas_price", _wei(), nullable=True),
        sa.Column("mined_hash", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.CheckConstraint(_one_of(TX_STATES), name=op.f("ck_transactions_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transactions")),
        sa.UniqueConstraint(
            "chain_id",
            "sender",
            "nonce",
            name=op.f("uq_transactions_chain_id_sender_nonce"),
        ),
    )
    op.create_index(op.f("ix_transactions_state"), "transactions", ["state"])
    op.create_table(
        "transaction_hashes",
        sa.Column("tx_hash", sa.LargeBinary(), nullable=False),
        sa.Column("transaction_id", RowId, nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("max_fee_per_gas", _wei(), nullable=True),
        sa.Column("max_priority_fee_per_gas", _wei(), nullable=True),
        sa.Column("gas_price", _wei(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name=op.f("fk_transaction_hashes_transaction_id_transactions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tx_hash", name=op.f("pk_transaction_hashes")),
    )
    op.create_index(
        op.f("ix_transaction_hashes_transaction_id"),
        "transaction_hashes",
        ["transaction_id"],
    )
    op.create_table(
        "transaction_orders",
        sa.Column("transaction_id", RowId, nullable=False),
        sa.Column("work_order_id", RowId, nullable=False),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name=op.f("fk_transaction_orders_transaction_id_transactions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["work_order_id"],
            ["work_orders.id"],
            name=op.f("fk_transaction_orders_work_order_id_work_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "transaction_id", "work_order_id", name=op.f("pk_transaction_orders")
        ),
    )
    op.create_index(
        op.f("ix_transaction_orders_work_order_id"),
        "transaction_orders",
        ["work_order_id"],
    )
    op.create_table(
        "nonces",
        sa.Column("chain_id", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(64), nullable=False),
        sa.Column("next_nonce", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "sender", name=op.f("pk_nonces")),
    )
    op.create_table(
        "workers",
        sa.Column("worker_id", sa.String(256), nullable=False),
        sa.Column("sealed_identity", sa.LargeBinary(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("signing_address", sa.String(64), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_workers")),
    )
    op.create_table(
        "workload_state",
        sa.Column("worker_id", sa.String(256), nullable=False),
        sa.Column("workload", sa.String(128), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint(
            "worker_id", "workload", name=op.f("pk_workload_state")
        ),
    )
    op.create_table(
        "request_claims",
        sa.Column("worker_id", sa.String(256), nullable=False),
        sa.Column("request_hash", sa.LargeBinary(), nullable=False),
        sa.Column("order_key", sa.String(256), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint(
            "worker_id", "request_hash", name=op.f("pk_request_claims")
        ),
    )


def downgrade() -> None:
    for table in (
        "request_claims",
        "workload_state",
        "workers",
        "nonces",
        "transaction_orders",
        "transaction_hashes",
        "transactions",
        "results",
        "malformed_logs",
        "work_orders",
        "checkpoint_blocks",
        "checkpoints",
    ):
        op.drop_table(table)
