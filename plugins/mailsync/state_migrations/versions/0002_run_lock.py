"""Run leases: one run of a DAG at a time between its lock and its release.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "mailsync_run_lock",
        sa.Column("name", sa.String(250), primary_key=True),
        sa.Column("holder", sa.String(250), nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),  # unix seconds: same on every backend
        sa.Column("expires_at", sa.Float, nullable=False),
    )
