"""Erasure ledger: people whose personal data must leave staging, snapshots and sync state.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "mailsync_erasure",
        # hashes only (mailsync.state.pseudonym): the ledger holds no personal data in clear
        sa.Column("subject", sa.String(64), primary_key=True),
        sa.Column("customer_hash", sa.String(64)),
        sa.Column("crm_hash", sa.String(64)),
        sa.Column("source", sa.String(32), nullable=False),  # crm_full_refresh | request
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True)),
        sa.Column("run_id", sa.String(250)),
    )
