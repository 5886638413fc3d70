"""state.migrate retries while another process holds the database (a real SQLite lock): it waits
0.5, 1, 1.5 ... s between tries and, out of tries, raises the database's own error."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa

from mailsync.state import migrate


def _locked_for(path, seconds: float) -> threading.Thread:
    """Another writer holds an exclusive lock on the file for `seconds`."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")

    def release() -> None:
        time.sleep(seconds)
        holder.execute("ROLLBACK")
        holder.close()

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def _engine(path) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})  # "locked" at once


def _migrated(eng: sa.Engine) -> bool:
    from mailsync.state import metadata

    with eng.connect() as conn:
        versions = conn.execute(sa.text("SELECT count(*) FROM mailsync_alembic_version")).scalar_one()
    tables = set(sa.inspect(eng).get_table_names())
    return versions == 1 and {t.name for t in metadata.sorted_tables} <= tables


def test_migrate_waits_out_a_lock_held_by_another_process(tmp_path):
    path = tmp_path / "state.db"
    release = _locked_for(path, 1.0)
    started = time.monotonic()
    migrate(eng := _engine(path))  # tries at ~0, ~0.6 fail; the one at ~1.7 s succeeds
    assert time.monotonic() - started >= 1.0
    release.join()
    assert _migrated(eng)
    migrate(eng)  # already at head: nothing to do, no error


def test_migrate_out_of_tries_raises_the_database_error(tmp_path):
    path = tmp_path / "state.db"
    release = _locked_for(path, 3.0)
    started = time.monotonic()
    with pytest.raises(sa.exc.OperationalError, match="database is locked"):
        migrate(_engine(path), attempts=2)  # one wait of 0.5 s, then the error itself
    assert 0.5 <= time.monotonic() - started < 2.5
    release.join()
