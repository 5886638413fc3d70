"""Alembic environment of the sync-state database (run by mailsync.state.migrate, never by hand).

The caller passes an open connection (already inside a transaction that holds the migration
lock), so every component and every worker migrates the same way and only one at a time.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table="mailsync_alembic_version")
with context.begin_transaction():
    context.run_migrations()
