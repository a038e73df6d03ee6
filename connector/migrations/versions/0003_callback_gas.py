"""Keep each order's callback gas, so completions that call back get enough gas.

The registry skips a batch item whose callback cannot get its full gas
(CompletionSkipped reason 5), and ``eth_estimateGas`` on a batch finds the
cheapest way to succeed, which is to skip every callback. The submitter
therefore adds each item's callback gas to the estimate, and needs to know
it: ``WorkOrderSubmitted`` carries it, and this column keeps it.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("work_orders") as batch:
        batch.add_column(
            sa.Column("callback_gas", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("work_orders") as batch:
        batch.drop_column("callback_gas")
