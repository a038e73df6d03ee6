"""Record the block of each confirmed completion; index orders by state and age.

``completion_block`` records the block in which an order's
WorkOrderCompleted event was confirmed (``mark_finished`` sets it,
``get_order`` returns it), so an operator can see where each order ended. The (state, updated_at) index serves
``claim_next``, ``ready_results`` and ``oldest_age``, which all scan one
state in the order its orders entered it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("work_orders") as batch:
        batch.add_column(sa.Column("completion_block", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_work_orders_state_updated", "work_orders", ["state", "updated_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_work_orders_state_updated", table_name="work_orders")
    with op.batch_alter_table("work_orders") as batch:
        batch.drop_column("completion_block")
