"""Sync state: what each destination has acknowledged, per integration and record key.

The diff compares tonight's desired records with this state, so a quiet night sends little.
The load advances it batch by batch, only for records the destination accepted, in one
transaction per batch — so a killed run resumes where the acknowledgements stop, and nothing
is lost or sent twice beyond the batch that was in flight.

It lives in our own database, never in Airflow's metadata DB (tasks must not touch that): the
`mailsync_state` connection, looked up through Airflow's connection API (environment, metadata
DB or secrets backend alike) — PostgreSQL through the postgres provider in production. Without
that connection a SQLite file under AIRFLOW_HOME serves the embedded default, and only there:
on a distributed executor every worker would get a file of its own, so the first task refuses
to run. The schema is versioned with Alembic (`state_migrations/`), migrated on first use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_incrementing

from mailsync.settings import STATE_CONN_ID, airflow_home

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("state_migrations")
LOCAL_EXECUTORS = {"LocalExecutor", "SequentialExecutor", "DebugExecutor"}

metadata = sa.MetaData()  # what the code reads and writes; the migrations make it so
sync_state = sa.Table(
    "mailsync_sync_state",
    metadata,
    sa.Column("integration", sa.String(100), primary_key=True),
    sa.Column("key", sa.String(320), primary_key=True),
    sa.Column("bucket", sa.Integer, nullable=False),
    sa.Column("fingerprint", sa.String(32), nullable=False),
    sa.Column("status", sa.String(32)),
    sa.Column("acked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(250)),
    sa.Index("ix_mailsync_sync_state_integration_bucket", "integration", "bucket"),
)
run_lock = sa.Table(
    "mailsync_run_lock",
    metadata,
    sa.Column("name", sa.String(250), primary_key=True),
    sa.Column("holder", sa.String(250), nullable=False),
    sa.Column("acquired_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)


erasure = sa.Table(  # hashes only: the ledger itself holds no personal data in clear
    "mailsync_erasure",
    metadata,
    sa.Column("subject", sa.String(64), primary_key=True),  # pseudonym("email", ...)
    sa.Column("customer_hash", sa.String(64)),
    sa.Column("crm_hash", sa.String(64)),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True)),
    sa.Column("run_id", sa.String(250)),
)
notification = sa.Table(
    "mailsync_notification",
    metadata,
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("clear_number", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
)


KEYS_PER_QUERY = 10_000  # bound parameters per IN list: under SQLite's 32,766 and PostgreSQL's 65,535
ROWS_PER_FETCH = 50_000
STATE_COLUMNS = {"key": "string", "fingerprint": "string", "status": "string", "bucket": "int64"}


def _state_frame(conn: sa.Connection, queries: Iterable[sa.Select]) -> pd.DataFrame:
    """The rows of `queries` as one frame, built a column at a time from fetches of
    ROWS_PER_FETCH rows: pandas builds a frame from SQLAlchemy rows one row at a time (500k rows:
    6 s against 1 s), and the rows themselves would hold twice the memory of the frame."""
    import pandas as pd

    columns: list[list] = [[] for _ in STATE_COLUMNS]
    for q in queries:
        for rows in conn.execution_options(yield_per=ROWS_PER_FETCH).execute(q).partitions():
            for column, values in zip(columns, zip(*rows, strict=True), strict=True):
                column.extend(values)
    return pd.DataFrame(
        {n: pd.array(v, dtype=d) for (n, d), v in zip(STATE_COLUMNS.items(), columns, strict=True)}
    )


class StateNotConfigured(RuntimeError):
    """The sync state would not be shared by every worker."""


def state_url() -> str:
    """SQLAlchemy URL of the state database (see module docstring)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(STATE_CONN_ID)
    except AirflowNotFoundException:
        conn = None
    if conn is not None and conn.conn_type in ("postgres", "postgresql"):
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return PostgresHook(postgres_conn_id=STATE_CONN_ID).get_uri()
    if conn is not None and conn.conn_type != "sqlite":
        raise StateNotConfigured(
            f"connection {STATE_CONN_ID!r} has type {conn.conn_type!r}; the sync state needs "
            "'postgres' (or 'sqlite' with a local executor)"
        )
    executors = _executors()
    if not executors <= LOCAL_EXECUTORS:
        raise StateNotConfigured(
            f"the executor is {', '.join(sorted(executors))}, so tasks run on several workers and the "
            f"sync state must be one shared database: define the Airflow connection {STATE_CONN_ID!r} "
            "as PostgreSQL (e.g. `airflow connections add mailsync_state --conn-uri "
            "postgresql://user:password@host:5432/mailsync_state`, or in your secrets backend). "
            + ("A SQLite file is per machine. " if conn is not None else "It is not defined. ")
        )
    path = conn.host if conn is not None else airflow_home() / "mailsync-state.db"
    return f"sqlite:///{path}"


def _executors() -> set[str]:
    """Class names of the configured executors ("LocalExecutor", "CeleryExecutor", ...)."""
    from airflow.sdk.configuration import conf

    names = (conf.get("core", "executor", fallback="LocalExecutor") or "LocalExecutor").split(",")
    # an entry may be "alias:path.to.Class" or a module path: the class name is the last part
    return {n.strip().rsplit(":", 1)[-1].rsplit(".", 1)[-1] for n in names if n.strip()}


def engine() -> sa.Engine:
    """The state database's engine, migrated to the newest schema (once per process)."""
    return _engine(state_url())


@cache
def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        eng = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(eng, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # several mapped tasks write at once
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")
            dbapi_conn.execute("PRAGMA busy_timeout=60000")
    else:
        # pre-ping: a connection the database dropped (restart, failover, pg_terminate_backend)
        # is replaced before use instead of failing the task
        eng = sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)
    migrate(eng)
    return eng


def migrate(eng: sa.Engine, attempts: int = 5) -> None:
    """Bring the schema to the newest revision. Tasks on many workers start at once: on
    PostgreSQL an advisory lock lets one migrate while the others wait; SQLite (one machine)
    retries when another process created a table first."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    for attempt in Retrying(
        retry=retry_if_exception_type((sa.exc.OperationalError, sa.exc.IntegrityError)),
        wait=wait_incrementing(start=0.5, increment=0.5),  # 0.5, 1, 1.5 ... s
        stop=stop_after_attempt(attempts),
        reraise=True,  # the last error itself, not tenacity's RetryError
    ):
        with attempt, eng.begin() as conn:
            if eng.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7212026)"))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")


class SyncState:
    """The acknowledged records of one integration."""

    def __init__(self, integration: str, url: str | None = None) -> None:
        self.integration = integration
        self.engine = _engine(url) if url else engine()

    def load(
        self, buckets: Iterable[int] | None = None, *, keys: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """key, fingerprint, status, bucket of every acknowledged record (of the given buckets;
        of the given keys: a load's resume check asks for its own few thousand records, not
        for the half million of its buckets)."""
        c = sync_state.c
        q = sa.select(c.key, c.fingerprint, c.status, c.bucket).where(c.integration == self.integration)
        if buckets is not None:
            q = q.where(c.bucket.in_(list(buckets)))
        if keys is not None:
            keys = list(keys)
            batches = range(0, len(keys), KEYS_PER_QUERY)
            queries = [q.where(c.key.in_(keys[i : i + KEYS_PER_QUERY])) for i in batches]
        with self.engine.connect() as conn:
            return _state_frame(conn, [q] if keys is None else queries)

    def reprint(self, prints: list[tuple[str, str, str]]) -> int:
        """Replace stored prints by equal ones of the current algorithm, as (key, stored print,
        new print); nothing else changes (`acked_at`, `run_id`: the destination holds what it
        held). A row whose print is no longer the stored one (acknowledged meanwhile) is left
        alone. One transaction per batch, so parallel partitions on SQLite take turns; a batch
        that did not commit is simply done again by the next diff. Returns the rows rewritten."""
        c = sync_state.c
        statement = (
            sa.update(sync_state)
            .where(
                c.integration == self.integration,
                c.key == sa.bindparam("b_key"),
                c.fingerprint == sa.bindparam("b_old"),
            )
            .values(fingerprint=sa.bindparam("b_new"))
        )
        done = 0
        for start in range(0, len(prints), 5_000):
            batch = [{"b_key": k, "b_old": o, "b_new": n} for k, o, n in prints[start : start + 5_000]]
            with self.engine.begin() as conn:
                done += conn.execute(statement, batch).rowcount
        return done

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


@dataclass(frozen=True)
class Lease:
    holder: str
    acquired_at: float
    expires_at: float

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.acquired_at, UTC).isoformat(timespec="seconds")
        until = datetime.fromtimestamp(self.expires_at, UTC).isoformat(timespec="seconds")
        return f"held by {self.holder} since {since}, until {until} unless renewed"


class RunLockLost(RuntimeError):
    """Another run holds the lock this run needs: its work must not overlap ours."""


class RunLock:
    """A lease on a name (a DAG) held by one holder (a DAG run) at a time, in the state database.

    Airflow runs up to 10 backfill days at once whatever the DAG's max_active_runs, and a manual
    run can meet the nightly one: runs that read and rewrite shared snapshots and totals must not
    interleave. Every task that holds the lease renews it (`hold`), so a lease left by a run that
    died without releasing it frees itself after `ttl_s`; a compare-and-set update makes the
    take-over safe between workers without long transactions.
    """

    def __init__(self, name: str, url: str | None = None) -> None:
        self.name = name
        self.engine = _engine(url) if url else engine()

    def current(self) -> Lease | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(run_lock.c.holder, run_lock.c.acquired_at, run_lock.c.expires_at).where(
                    run_lock.c.name == self.name
                )
            ).first()
        return Lease(*row) if row else None

    def acquire(self, holder: str, ttl_s: float) -> Lease | None:
        """Take or renew the lease for `holder`; None when it is taken; else the lease held by
        somebody else."""
        now = time.time()
        lease = self.current()
        c = run_lock.c
        try:
            with self.engine.begin() as conn:
                if lease is None:
                    conn.execute(
                        run_lock.insert().values(
                            name=self.name, holder=holder, acquired_at=now, expires_at=now + ttl_s
                        )
                    )
                    return None
                if lease.holder != holder and lease.expires_at > now:
                    return lease
                taken = conn.execute(
                    run_lock.update()
                    .where(c.name == self.name, c.holder == lease.holder, c.expires_at == lease.expires_at)
                    .values(
                        holder=holder,
                        acquired_at=lease.acquired_at if lease.holder == holder else now,
                        expires_at=now + ttl_s,
                    )
                )
        except sa.exc.IntegrityError:  # another task inserted first
            return self._held_by_other(holder, now)
        if taken.rowcount == 1:
            if lease.holder != holder:
                log.warning("Took over the expired lease %s: %s", self.name, lease.describe())
            return None
        return self._held_by_other(holder, now)

    def _held_by_other(self, holder: str, now: float) -> Lease | None:
        """After a lost compare-and-set: a sibling task of the same run (mapped loads renew at
        once) may have won it, and then this run holds the lease all the same."""
        current = self.current()
        if current is not None and current.holder == holder:
            return None
        return current or Lease("another run", now, now)

    def hold(self, holder: str, ttl_s: float) -> None:
        """Renew the lease of a task that works under it; raise if another run holds it."""
        other = self.acquire(holder, ttl_s)
        if other is not None:
            raise RunLockLost(
                f"{self.name}: this run ({holder}) does not hold the run lock, it is {other.describe()}"
            )

    def release(self, holder: str) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(
                run_lock.delete().where(run_lock.c.name == self.name, run_lock.c.holder == holder)
            )
        return done.rowcount == 1


def normalise(kind: str, value: Any) -> str:
    """The form an identifier is compared in: emails trimmed and lower-cased (like sync keys),
    customer ids upper-cased (like the mapping's), CRM ids trimmed."""
    text = str(value).strip()
    return text.lower() if kind == "email" else text.upper() if kind == "customer_id" else text


def pseudonym(kind: str, value: Any) -> str:
    """sha256 of a normalised identifier; for an email just sha256(email), so an operator can
    compute it with `printf %s jane@example.com | sha256sum`."""
    import hashlib

    text = normalise(kind, value)
    return hashlib.sha256((text if kind == "email" else f"{kind}:{text}").encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Erasure:
    subject: str  # pseudonym of the email
    customer_hash: str | None
    crm_hash: str | None
    source: str
    recorded_at: datetime
    applied_at: datetime | None


class ErasureLedger:
    """People whose personal data must leave our staging, snapshots and sync state (GDPR).

    The contacts sync records those a full refresh no longer finds in the CRM (HubSpot's GDPR
    delete leaves no trace: that run is the only moment we learn of it); an operator records a
    request (`python -m mailsync.operators.retention erase EMAIL`). Only hashes are kept, so the
    ledger can stay forever: the retention DAG matches them against every file it keeps, also
    after the first application (a partner file or a backfill can bring a person back).
    """

    def __init__(self, url: str | None = None) -> None:
        self.engine = _engine(url) if url else engine()

    def record(self, people: Iterable[dict[str, Any]], *, source: str, run_id: str | None = None) -> int:
        """Add erasures of people given by `email` (and `customer_id`, `crm_id` when known);
        one already applied is opened again (the person came back and left again)."""
        now = datetime.now(UTC)
        rows = {}
        for p in people:
            if not str(p.get("email") or "").strip():
                continue
            subject = pseudonym("email", p["email"])
            rows[subject] = {
                "subject": subject,
                "customer_hash": pseudonym("customer_id", p["customer_id"]) if p.get("customer_id") else None,
                "crm_hash": pseudonym("crm_id", p["crm_id"]) if p.get("crm_id") else None,
                "source": source,
                "recorded_at": now,
                "applied_at": None,
                "run_id": run_id,
            }
        if not rows:
            return 0
        insert = _insert(self.engine)(erasure)
        c = erasure.c
        statement = insert.on_conflict_do_update(
            index_elements=["subject"],
            set_={
                "customer_hash": sa.func.coalesce(insert.excluded.customer_hash, c.customer_hash),
                "crm_hash": sa.func.coalesce(insert.excluded.crm_hash, c.crm_hash),
                # a retry of the same erasure keeps its deadline; a new one after the last starts anew
                "recorded_at": sa.case(
                    (c.applied_at.is_(None), c.recorded_at), else_=insert.excluded.recorded_at
                ),
                "applied_at": None,
                "source": insert.excluded.source,
                "run_id": insert.excluded.run_id,
            },
        )
        with self.engine.begin() as conn:
            conn.execute(statement, list(rows.values()))
        return len(rows)

    def all(self) -> list[Erasure]:
        c = erasure.c
        q = sa.select(c.subject, c.customer_hash, c.crm_hash, c.source, c.recorded_at, c.applied_at)
        with self.engine.connect() as conn:
            return [Erasure(*row) for row in conn.execute(q.order_by(c.recorded_at, c.subject))]

    def mark_applied(self, subjects: list[str]) -> None:
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            for start in range(0, len(subjects), 500):
                conn.execute(
                    erasure.update()
                    .where(
                        erasure.c.subject.in_(subjects[start : start + 500]), erasure.c.applied_at.is_(None)
                    )
                    .values(applied_at=now)
                )

    def erase_state(self, subjects: set[str], extra: dict[str, list[str]] | None = None) -> int:
        """Delete the sync-state rows of these people: of every integration whose key is an
        email (contacts, engagement, buyer totals, segment:*), matched by hash, and the given
        keys of other integrations (their order ids). Returns the number of rows deleted."""
        c = sync_state.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(c.integration, c.key).where(c.key.like("%@%"))).all()
        doomed: dict[str, list[str]] = {k: list(v) for k, v in (extra or {}).items()}
        for integration, key in rows:
            if pseudonym("email", key) in subjects:
                doomed.setdefault(integration, []).append(key)
        deleted = 0
        with self.engine.begin() as conn:
            for integration, keys in doomed.items():
                for start in range(0, len(keys), 500):
                    deleted += conn.execute(
                        sa.delete(sync_state).where(
                            c.integration == integration, c.key.in_(keys[start : start + 500])
                        )
                    ).rowcount
        return deleted


def claim_notification(dag_id: str, run_id: str, clear_number: int, kind: str) -> bool:
    """True once per run, kind and clear of the run: several tasks failing in one run (mapped
    loads in an outage), or a task retried after sending, must not page on-call twice."""
    try:
        with engine().begin() as conn:
            conn.execute(
                notification.insert().values(
                    dag_id=dag_id,
                    run_id=run_id,
                    clear_number=clear_number,
                    kind=kind,
                    sent_at=datetime.now(UTC),
                )
            )
    except sa.exc.IntegrityError:
        return False
    return True


def _insert(engine: sa.Engine):
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert
