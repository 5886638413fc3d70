"""Deterministic data generator: the same people across CRM, ESP, shop and loyalty file.

Works chunk by chunk (CHUNK people). A chunk depends only on (seed, chunk number), so big data
sets are drawn by two worker processes while this process streams the rows into SQLite with
executemany; at most a few chunks are in flight, so memory stays flat whatever the size. Order
numbers are planned up front (cheap), so the result does not depend on the parallelism.
Indexes are built after the load. Same seed and parameters ⇒ identical data.
"""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
import tempfile
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from sandbox import gen_esp, gen_shop, loyalty, store
from sandbox.config import STORE_ID, GenParams
from sandbox.esp_ecommerce import new_store_doc
from sandbox.esp_model import unique_email_id
from sandbox.people import CrmExtras, crm_rows, make_people
from sandbox.world import World

log = logging.getLogger("sandbox.generator")
CHUNK = 50_000  # people per chunk; part of what defines the data, like the seed
PARALLEL_FROM_CHUNKS = 4  # below this, starting worker processes costs more than it saves
IN_FLIGHT = 3


def chunk_rows(
    world: World, chunk: int, start: int, count: int, campaigns: list[dict], first_order: int
) -> dict:
    """Every system's rows for one chunk of people (runs in a worker process for big data sets)."""
    campaigns = [dict(c, sent=0) for c in campaigns]  # this chunk's recipients only
    people = make_people(world, chunk, start, count)
    audience = gen_esp.make_audience(world, chunk, people)
    activity, unsubscribes = gen_esp.campaign_activity(world, chunk, audience, campaigns)
    ueid = {int(p): unique_email_id(h) for p, h in zip(audience.person, audience.hash, strict=True) if p >= 0}
    shop = gen_shop.make_orders(world, chunk, people, ueid, campaigns, first_order, gen_shop.catalogue())
    extras = CrmExtras(shop.ltv, shop.last_order, gen_esp.crm_engagement(world, audience, len(people)))
    return {
        "crm": crm_rows(world, chunk, people, extras),
        "members": gen_esp.member_rows(audience),
        "activity": activity,
        "unsubscribes": unsubscribes,
        "orders": shop.rows,
        "loyalty": loyalty.member_rows(world, chunk, people),
        "sent": [c["sent"] for c in campaigns],
    }


_INSERTS = {
    "crm_contacts": ("crm", f"INSERT INTO crm_contacts VALUES ({','.join('?' * 28)})"),
    "esp_members": ("members", f"INSERT INTO esp_members VALUES (NULL, {','.join('?' * 13)})"),
    "esp_activity": ("activity", "INSERT INTO esp_activity VALUES (?,?,?,?,?,?,?,?)"),
    "esp_unsubscribes": ("unsubscribes", "INSERT INTO esp_unsubscribes VALUES (?,?,?,?,?)"),
    "shop_orders": ("orders", "INSERT INTO shop_orders VALUES (?,?,?,?,?,?)"),
    "loyalty_members": ("loyalty", "INSERT INTO loyalty_members VALUES (NULL,?,?,?,?,?,?)"),
}


def _insert(conn: sqlite3.Connection, rows: dict) -> None:
    for key, sql in _INSERTS.values():
        conn.executemany(sql, rows[key])


def chunk_to_file(path: str, *job) -> dict:
    """Worker side: a chunk's rows into a part database, so that binding them costs this process."""
    rows = chunk_rows(*job)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    for table in _INSERTS:
        conn.execute(f"CREATE TABLE {table} ({store.TABLES[table]})")
    with store.transaction(conn):
        _insert(conn, rows)
    conn.close()
    return {"path": path, "sent": rows["sent"]}


def _copy_part(conn: sqlite3.Connection, path: str) -> None:
    """Main side: copy a part database in (C speed); auto-numbered rids continue in order."""
    conn.execute("ATTACH DATABASE ? AS part", (path,))
    try:
        with store.transaction(conn):
            for table in _INSERTS:
                columns = [c[1] for c in conn.execute(f"PRAGMA part.table_info({table})")]
                if columns[0] == "rid":
                    columns = columns[1:]
                names = ", ".join(columns)
                conn.execute(
                    f"INSERT INTO main.{table} ({names}) SELECT {names} FROM part.{table} ORDER BY rowid"
                )
    finally:
        conn.execute("DETACH DATABASE part")
    Path(path).unlink()


def _load(conn: sqlite3.Connection, world: World, campaigns: list[dict], scratch: Path) -> None:
    """Draw every chunk and load it; in two worker processes when the world is big."""
    jobs, first_order = [], 0
    for chunk, start, count in world.chunks(CHUNK):
        jobs.append((world, chunk, start, count, campaigns, first_order))
        first_order += gen_shop.plan_orders(world, chunk, count).total
    if len(jobs) < PARALLEL_FROM_CHUNKS:
        for job in jobs:
            rows = chunk_rows(*job)
            with store.transaction(conn):
                _insert(conn, rows)
            _count_sent(campaigns, rows["sent"])
        return
    # spawn, not fork: the caller may be the running server with its event loop and sockets.
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: deque = deque()
        copied = 0
        for number, job in enumerate(jobs, start=1):
            pending.append(pool.submit(chunk_to_file, str(scratch / f"part-{job[1]}.db"), *job))
            while len(pending) >= IN_FLIGHT or (pending and number == len(jobs)):
                part = pending.popleft().result()
                _copy_part(conn, part["path"])
                _count_sent(campaigns, part["sent"])
                copied += 1
                log.info("generated chunk %d of %d", copied, len(jobs))


def _count_sent(campaigns: list[dict], sent: list[int]) -> None:
    for campaign, n in zip(campaigns, sent, strict=True):
        campaign["sent"] += n


def generate(conn: sqlite3.Connection, sftp_root: Path, params: GenParams) -> dict:
    """Replace all data in ``conn`` and the loyalty files under ``sftp_root``; returns counts."""
    started = time.perf_counter()
    world = World.from_params(params)
    store.recreate(conn)
    conn.execute("PRAGMA synchronous=OFF")
    campaigns = gen_esp.make_campaigns(world)
    with tempfile.TemporaryDirectory(prefix=".generate-", dir=sftp_root.parent) as scratch:
        _load(conn, world, campaigns, Path(scratch))
    with store.transaction(conn):
        conn.executemany(
            "INSERT INTO esp_campaigns VALUES (?,?,?,?,?,?)",
            [(c["id"], c["web_id"], c["send_ms"], c["subject"], c["title"], c["sent"]) for c in campaigns],
        )
        conn.execute(
            "INSERT INTO esp_stores VALUES (?, ?)",
            (STORE_ID, store.dumps(new_store_doc(STORE_ID, "Mailsync Demo Shop", "EUR", world.start_ms))),
        )
        store.meta_set(conn, "params", params.to_dict())
    store.create_indexes(conn)
    conn.execute("PRAGMA synchronous=NORMAL")
    counts = {
        table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        for table in ("crm_contacts", "esp_members", "esp_activity", "shop_orders", "loyalty_members")
    }
    counts["campaigns"] = len(campaigns)
    counts["loyalty_files"] = len(loyalty.write_window(conn, sftp_root, world))
    counts["seconds"] = round(time.perf_counter() - started, 2)
    return counts
