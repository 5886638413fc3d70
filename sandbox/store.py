"""SQLite state of all four systems: schema, connections, the request log.

One database file in WAL mode. The server owns the only writing connection and runs every request
as one short transaction on the event-loop thread (no awaits inside), so requests never interleave
half-way. Tests and tools read the same file read-only while the server runs (WAL allows that).
Indexes are created after a bulk load, which makes generating 1M contacts several times faster.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

TABLES = {
    "meta": "key TEXT PRIMARY KEY, value TEXT",
    # HubSpot contacts: one column per property (all TEXT, as HubSpot returns strings);
    # times as ms epochs so that search filters and sorts use an index.
    "crm_contacts": """
        id INTEGER PRIMARY KEY, email TEXT, email_key TEXT,
        firstname TEXT, lastname TEXT, date_of_birth TEXT, city TEXT, country TEXT,
        hs_language TEXT, customer_id TEXT, marketing_consent TEXT, lifetime_value TEXT,
        last_order_date TEXT, email_invalid TEXT, email_invalid_date TEXT, email_invalid_reason TEXT,
        marketing_opt_out_date TEXT, marketing_opt_out_campaign TEXT, esp_opens_total TEXT,
        esp_clicks_total TEXT, esp_soft_bounces_total TEXT, esp_last_open_at TEXT,
        esp_last_click_at TEXT, esp_campaigns_engaged TEXT,
        created_ms INTEGER NOT NULL, modified_ms INTEGER NOT NULL,
        archived INTEGER NOT NULL DEFAULT 0, archived_ms INTEGER""",
    # Mailchimp audience members; rid doubles as web_id and as the stable paging order.
    "esp_members": """
        rid INTEGER PRIMARY KEY, hash TEXT NOT NULL, email TEXT NOT NULL, unique_email_id TEXT,
        status TEXT NOT NULL, prev_status TEXT, merge_fields TEXT NOT NULL DEFAULT '{}',
        language TEXT NOT NULL DEFAULT '', tags TEXT NOT NULL DEFAULT '[]', signup_ms INTEGER,
        opt_ms INTEGER, changed_ms INTEGER NOT NULL, source TEXT, unsubscribe_reason TEXT""",
    "esp_forgotten": "hash TEXT PRIMARY KEY",
    "esp_campaigns": """
        id TEXT PRIMARY KEY, web_id INTEGER, send_ms INTEGER, subject TEXT, title TEXT,
        emails_sent INTEGER""",
    "esp_activity": """
        campaign_id TEXT, hash TEXT, email TEXT, action TEXT, type TEXT, ts_ms INTEGER,
        url TEXT, ip TEXT""",
    "esp_unsubscribes": "campaign_id TEXT, hash TEXT, email TEXT, ts_ms INTEGER, reason TEXT",
    "esp_stores": "id TEXT PRIMARY KEY, doc TEXT",
    "esp_customers": "store_id TEXT, id TEXT, doc TEXT, PRIMARY KEY (store_id, id)",
    "esp_products": "store_id TEXT, id TEXT, doc TEXT, PRIMARY KEY (store_id, id)",
    "esp_orders": """
        rid INTEGER PRIMARY KEY, store_id TEXT, id TEXT, campaign_id TEXT, doc TEXT,
        UNIQUE (store_id, id)""",
    # Shopify orders: the document as the API returns it, plus the columns filters need.
    "shop_orders": """
        id INTEGER PRIMARY KEY, created_ms INTEGER, updated_ms INTEGER, state TEXT,
        financial_status TEXT, doc TEXT""",
    # Loyalty programme members: the base from which each day's file is written.
    "loyalty_members": """
        rid INTEGER PRIMARY KEY, customer_id TEXT, tier INTEGER, points INTEGER,
        member_since TEXT, name TEXT, salt INTEGER""",
    "requests": """
        id INTEGER PRIMARY KEY, system TEXT, method TEXT, path TEXT, query TEXT, status INTEGER,
        ts TEXT, n_records INTEGER, n_returned INTEGER, record_keys TEXT, fault TEXT, served_ms REAL""",
}
# The request log's columns; served_ms: the time the sandbox spent on the call itself (handler,
# partial response, encoding), not the latency it was told to add. Every vendor is served by one
# event loop, so the calls' served_ms add up to a floor the sandbox sets, beside the vendors' own.
REQUEST_COLUMNS = [
    "id",
    "system",
    "method",
    "path",
    "query",
    "status",
    "ts",
    "n_records",
    "n_returned",
    "record_keys",
    "fault",
    "served_ms",
]

INDEXES = [
    "CREATE INDEX IF NOT EXISTS crm_modified ON crm_contacts (archived, modified_ms, id)",
    "CREATE INDEX IF NOT EXISTS crm_email ON crm_contacts (email_key)",
    "CREATE UNIQUE INDEX IF NOT EXISTS esp_members_hash ON esp_members (hash)",
    "CREATE INDEX IF NOT EXISTS esp_members_status ON esp_members (status, rid)",
    "CREATE INDEX IF NOT EXISTS esp_members_changed ON esp_members (changed_ms)",
    "CREATE INDEX IF NOT EXISTS esp_activity_c ON esp_activity (campaign_id, hash, ts_ms)",
    "CREATE INDEX IF NOT EXISTS esp_unsub_c ON esp_unsubscribes (campaign_id, ts_ms)",
    "CREATE INDEX IF NOT EXISTS esp_orders_campaign ON esp_orders (store_id, campaign_id)",
    "CREATE INDEX IF NOT EXISTS shop_orders_updated ON shop_orders (updated_ms)",
    "CREATE INDEX IF NOT EXISTS shop_orders_created ON shop_orders (created_ms)",
    "CREATE INDEX IF NOT EXISTS requests_system ON requests (system)",
]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


def dumps(obj: object) -> str:
    return _encode(obj).decode()


def loads(text: str | bytes | None, default=None):
    return default if text is None else _decode(text)


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the DB. Writers use autocommit mode and explicit BEGIN/COMMIT (see ``transaction``)."""
    if readonly:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    else:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def recreate(conn: sqlite3.Connection) -> None:
    """Drop and create every table, without secondary indexes (see ``create_indexes``)."""
    for name in TABLES:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
    for name, columns in TABLES.items():
        conn.execute(f"CREATE TABLE {name} ({columns})")


# Planner statistics pinned to production-like sizes. Real ANALYZE figures taken at generation
# time go stale as the API adds rows, and then a 500-key IN lookup flips to a full table scan.
_PLANNER_STATS = [
    ("crm_contacts", None, "1000000"),
    ("crm_contacts", "crm_modified", "1000000 500000 2 1"),
    ("crm_contacts", "crm_email", "1000000 1"),
    ("esp_members", None, "600000"),
    ("esp_members", "esp_members_hash", "600000 1"),
    ("esp_members", "esp_members_status", "600000 150000 1"),
    ("esp_members", "esp_members_changed", "600000 2"),
    ("esp_activity", "esp_activity_c", "800000 200000 3 1"),
    ("esp_unsubscribes", "esp_unsub_c", "2000 500 1"),
    ("esp_orders", "esp_orders_campaign", "100000 100000 50"),
    ("shop_orders", None, "200000"),
    ("shop_orders", "shop_orders_updated", "200000 2"),
    ("shop_orders", "shop_orders_created", "200000 2"),
    ("requests", "requests_system", "100000 30000"),
]


def create_indexes(conn: sqlite3.Connection) -> None:
    for statement in INDEXES:
        conn.execute(statement)
    conn.execute("PRAGMA analysis_limit=1")
    conn.execute("ANALYZE meta")  # creates sqlite_stat1 cheaply
    with transaction(conn):
        conn.execute("DELETE FROM sqlite_stat1")
        conn.executemany("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)", _PLANNER_STATS)
    conn.execute("ANALYZE sqlite_schema")  # reload the statistics


def meta_set(conn: sqlite3.Connection, key: str, value: object) -> None:
    conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, dumps(value)))


def meta_get(conn: sqlite3.Connection, key: str, default=None):
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return default if row is None else loads(row[0])


def log_request(conn: sqlite3.Connection, entry: tuple) -> None:
    """Append one row to the request log; ``entry`` follows the ``requests`` columns after id."""
    conn.execute("INSERT INTO requests VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", entry)


def next_id(conn: sqlite3.Connection, table: str, column: str, floor: int) -> int:
    row = conn.execute(f"SELECT MAX({column}) FROM {table}").fetchone()
    return max(floor, (row[0] or 0) + 1)
