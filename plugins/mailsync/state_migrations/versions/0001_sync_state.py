"""The acknowledged records per integration and key.

Databases made before migrations existed already hold this table (created by `create_all`);
it is kept as it is and only stamped.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("mailsync_sync_state"):
        return
    op.create_table(
        "mailsync_sync_state",
        sa.Column("integration", sa.String(100), primary_key=True),
        sa.Column("key", sa.String(320), primary_key=True),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32)),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(250)),
    )
    op.create_index("ix_mailsync_sync_state_bucket", "mailsync_sync_state", ["bucket"])
