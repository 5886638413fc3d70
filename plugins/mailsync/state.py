"""Sync state: what each destination has acknowledged, per integration and record key.

The diff compares tonight's desired records with this state, so a quiet night sends little.
The load advances it batch by batch, only for records the destination accepted, in one
transaction per batch — so a killed run resumes where the acknowledgements stop, and nothing
is lost or sent twice beyond the batch that was in flight.

It lives in our own database, never in Airflow's metadata DB (tasks must not touch that):
the `mailsync_state` connection (PostgreSQL in production), else a SQLite file under
AIRFLOW_HOME for the embedded default.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mailsync.settings import STATE_CONN_ID, airflow_home

if TYPE_CHECKING:
    import pandas as pd

metadata = sa.MetaData()
sync_state = sa.Table(
    "mailsync_sync_state",
    metadata,
    sa.Column("integration", sa.String(100), primary_key=True),
    sa.Column("key", sa.String(320), primary_key=True),
    sa.Column("bucket", sa.Integer, nullable=False, index=True),
    sa.Column("fingerprint", sa.String(32), nullable=False),
    sa.Column("status", sa.String(32)),
    sa.Column("acked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(250)),
)


def state_url() -> str:
    """SQLAlchemy URL of the state database (see module docstring)."""
    if os.environ.get(f"AIRFLOW_CONN_{STATE_CONN_ID.upper()}"):
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(STATE_CONN_ID)
        if conn.conn_type == "sqlite":
            return f"sqlite:///{conn.host}"
        uri = conn.get_uri()
        return uri.replace("postgres://", "postgresql://", 1)
    return f"sqlite:///{airflow_home() / 'mailsync-state.db'}"


@cache
def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # several mapped tasks write at once
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")
            dbapi_conn.execute("PRAGMA busy_timeout=60000")
    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine, checkfirst=True)
    return engine


class SyncState:
    """The acknowledged records of one integration."""

    def __init__(self, integration: str, url: str | None = None) -> None:
        self.integration = integration
        self.engine = _engine(url or state_url())

    def load(self, buckets: Iterable[int] | None = None) -> pd.DataFrame:
        """key, fingerprint, status of every acknowledged record (of the given buckets)."""
        import pandas as pd

        q = sa.select(
            sync_state.c.key, sync_state.c.fingerprint, sync_state.c.status, sync_state.c.bucket
        ).where(sync_state.c.integration == self.integration)
        if buckets is not None:
            q = q.where(sync_state.c.bucket.in_(list(buckets)))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return pd.DataFrame(rows, columns=["key", "fingerprint", "status", "bucket"]).astype(
            {"key": "string", "fingerprint": "string", "status": "string", "bucket": "int64"}
        )

    def acknowledge(self, records: list[dict[str, Any]], run_id: str) -> None:
        """Upsert (key, bucket, fingerprint, status) of records the destination accepted."""
        if not records:
            return
        now = datetime.now(UTC)
        rows = [
            {
                "integration": self.integration,
                "key": r["key"],
                "bucket": int(r["bucket"]),
                "fingerprint": r["fingerprint"],
                "status": r.get("status"),
                "acked_at": now,
                "run_id": run_id,
            }
            for r in records
        ]
        insert = _insert(self.engine)(sync_state)
        statement = insert.on_conflict_do_update(
            index_elements=["integration", "key"],
            set_={c: insert.excluded[c] for c in ("bucket", "fingerprint", "status", "acked_at", "run_id")},
        )
        with self.engine.begin() as conn:
            conn.execute(statement, rows)

    def forget(self, keys: list[str]) -> None:
        """Drop records the destination no longer holds (archived or deleted)."""
        if not keys:
            return
        with self.engine.begin() as conn:
            for start in range(0, len(keys), 500):
                conn.execute(
                    sa.delete(sync_state).where(
                        sync_state.c.integration == self.integration,
                        sync_state.c.key.in_(keys[start : start + 500]),
                    )
                )

    def count(self) -> int:
        q = (
            sa.select(sa.func.count())
            .select_from(sync_state)
            .where(sync_state.c.integration == self.integration)
        )
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())


def _insert(engine: sa.Engine):
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert
