"""The legacy club-member database: a table in an old system that has no API, read over SQL.

mailsync reads ``club.members`` straight from PostgreSQL (Airflow's ``PostgresHook``),
incrementally on ``updated_at``. Unlike the vendors' stand-ins this is not served by the sandbox
process: PostgreSQL is a real service, so this module only fills and changes a table in it. The
members come from the same world of people as the CRM (same seed and size ⇒ same emails, see
sandbox/people.py), with the quirks of a system designed long before mailsync:

- ``member_no`` is text with leading zeros (``"00417203"``): casting it to a number loses them;
- names are stored in upper case, ~8% of the emails in upper case and/or with trailing blanks;
- a free-text ``notes`` column (with ``;`` and line breaks), ~3% of members without an email;
- rows are never deleted: a member who leaves keeps the row with ``deleted = true``;
- a nightly points job saves many rows at the same instant (02:00:00 UTC), so ``updated_at``
  has ties: a reader that pages with LIMIT must page on ``(updated_at, member_no)``.

A controlled share of rows (``bad``) carries exactly one defect for the quality gate to
quarantine (``FAULTS``), and all of them were saved inside the window, so every day's increment
sees some. PostgreSQL text cannot hold NUL (0x00): the control characters are others (SUB, ESC,
BEL, ...), as old terminals and DOS exports left them. Same (seed, size, rates) ⇒ same rows.

    lm = LegacyMembers("postgresql://postgres@127.0.0.1:5432/mailsync_legacy", params)
    lm.create_database(); lm.reset(); lm.mutate(0.02); lm.rows(since=..., until=...)
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import parse_dsn

from sandbox import vocab
from sandbox.config import LEGACY_CONN_ID, GenParams
from sandbox.faults import unit_hash
from sandbox.generator import CHUNK
from sandbox.people import make_people
from sandbox.timefmt import DAY_MS, parse_instant
from sandbox.world import World

SCHEMA = "club"
TABLE = f"{SCHEMA}.members"
COLUMNS = (
    "member_no",
    "email",
    "first_name",
    "last_name",
    "club_level",
    "points",
    "joined",
    "opted_out",
    "notes",
    "deleted",
    "updated_at",
)
TABLE_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    member_no  text PRIMARY KEY,
    email      text,
    first_name text,
    last_name  text,
    club_level text,
    points     integer,
    joined     date,
    opted_out  boolean NOT NULL DEFAULT false,
    notes      text,
    deleted    boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
)"""
#: The incremental read's index; with member_no so that keyset paging over ties uses it too.
INDEX_DDL = f"CREATE INDEX IF NOT EXISTS members_updated_at_idx ON {TABLE} (updated_at, member_no)"
#: Club levels in ascending order, with their share and points range.
LEVELS = ("CLASSIC", "SILVER", "GOLD", "PLATINUM")
_LEVEL_EDGES = np.cumsum([0.55, 0.25, 0.15])
_POINTS = [(0, 800), (800, 4000), (4000, 12000), (12000, 50000)]
#: One defect per bad row, in this order round-robin (so each kind gets its share).
FAULTS = ("invalid_email", "negative_points", "unknown_level", "control_char", "overlong")
UNKNOWN_LEVELS = ("VIP", "GOLD+", "DIAMANT", "STAFF", "9")
CONTROL_CHARS = ("\x1a", "\x1b", "\x07", "\x0b", "\x01", "\x7f")
#: Longer than any ESP text merge field takes (255).
OVERLONG_FROM = 256
NOTES = (
    "Karte verloren, neue Karte ausgestellt",
    "bitte keine Post",
    "VIP - Filialleitung informieren",
    "umgezogen; neue Adresse folgt",
    "Tel. Kontakt bevorzugt",
    "doppelt angelegt? siehe alte Nr.",
    "Mitglied seit Eröffnung\nStammkunde Filiale Mitte",
    "EMAIL BOUNCED 2019",
    "Geburtstagsgutschein 2023 eingelöst;\nRückfrage wegen Punkten",
)
RATES: dict[str, float] = {
    "member": 0.50,  # of the world's people (the CRM's contacts)
    "only": 0.05,  # extra members per person, known to neither the CRM nor the ESP
    "email_messy": 0.08,  # upper case and/or trailing blanks (a CHAR column once)
    "email_missing": 0.03,  # NULL: signed up at the till without an email
    "opted_out": 0.10,
    "deleted": 0.02,  # left the club: the row stays, deleted = true
    "daily_change": 0.03,  # share of members saved on each day of the window
    "batch_touch": 0.30,  # of the window's saves: the nightly points job, 02:00:00 UTC sharp
    "bad": 0.05,  # rows with one defect (FAULTS), always saved inside the window
    "notes": 0.15,
}
DEFAULT_MUTATE_AT = "2026-11-20T03:00:00Z"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_JOINED_START = np.datetime64("2008-01-01")
_NIGHTLY_MS = 2 * 3_600_000  # the points job saves its rows at 02:00:00.000 UTC


def world_of(params: GenParams) -> World:
    return World.from_params(params)


def _rates(overrides: dict) -> dict[str, float]:
    unknown = set(overrides) - set(RATES)
    if unknown:
        raise ValueError(f"unknown legacy member rate(s): {sorted(unknown)}; known: {sorted(RATES)}")
    return RATES | {k: float(v) for k, v in overrides.items()}


def member_no(world: World, key: int) -> str:
    """8 digits with leading zeros: an affine bijection of the key modulo 10^8, so unique per key
    (people's keys are their index, club-only members' 90,000,000 + ...: apart below 10M people)."""
    return f"{(7_919_371 * key + 12_345_679 * world.seed) % 100_000_000:08d}"


def _instant(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=int(ms))


def _overlong(name: str, k: int) -> str:
    """A whole address pasted into the name field, cut at a length no merge field takes."""
    target = OVERLONG_FROM + k % 150
    words = [name, "C/O", name, "HAUPTSTRASSE", str(1 + k % 99), "HINTERHAUS", "3. OG", "BEI", name]
    text = ""
    while len(text) < target:
        text += " ".join(words) + " / "
    text = text[:target]
    return text[:-1] + "." if text[-1] == " " else text


@dataclass
class _Truth:
    person: int | None  # index of the world's person; None for members only the club knows
    fault: str | None


def chunk_members(
    world: World, rates: dict, chunk: int, start: int, count: int
) -> Iterator[tuple[tuple, _Truth]]:
    """(row in COLUMNS order, truth) for one chunk of the world's people (CHUNK, as the generator)."""
    people = make_people(world, chunk, start, count)
    r = world.rng(chunk, "legacy_members")
    pick = np.flatnonzero(r.random(count) < rates["member"])
    n_only = int(r.binomial(count, rates["only"]))
    m = len(pick) + n_only
    u_email, u_del, u_out, u_notes, u_win, u_time, u_level, u_batch = r.random((8, m))
    bad = set(r.choice(m, size=round(rates["bad"] * m), replace=False).tolist())  # an exact share
    ks = r.integers(0, 1 << 30, size=m).tolist()
    last_joined = np.datetime64(world.start_ms - 30 * DAY_MS, "ms").astype("datetime64[D]")
    joined_days = int((last_joined - _JOINED_START).astype(int))
    joined = (_JOINED_START + r.integers(0, joined_days, size=m).astype("timedelta64[D]")).astype(object)
    in_window = min(1.0, rates["daily_change"] * world.days)
    span = world.now_ms - world.start_ms
    n_bad = 0
    for j in range(m):
        k = ks[j]
        if j < len(pick):
            i = int(pick[j])
            person, key = int(people.idx[i]), int(people.idx[i])
            first, last, email = str(people.first[i]), str(people.last[i]), people.email[i]
        else:
            n = j - len(pick)  # < count: keys stay apart from the next chunk's
            person, key = None, 90_000_000 + start + n
            first = vocab.FIRST_ASCII[k % len(vocab.FIRST_ASCII)]
            last = vocab.LAST_ASCII[(k >> 8) % len(vocab.LAST_ASCII)]
            local = f"{vocab.ascii_fold(first)}.{vocab.ascii_fold(last)}".lower().replace(" ", "")
            email = f"{local}.club{chunk}n{n}@example.org"
        fault = None
        if j in bad:
            fault = FAULTS[(n_bad + chunk) % len(FAULTS)]
            n_bad += 1
        level_no = int(np.searchsorted(_LEVEL_EDGES, u_level[j], side="right"))
        low, high = _POINTS[level_no]
        points = low + (k >> 4) % (high - low)
        level = LEVELS[level_no]
        first, last = first.upper(), last.upper()
        if fault == "invalid_email":
            local = email.partition("@")[0]
            form = vocab.INVALID_EMAIL_FORMS[(k >> 2) % len(vocab.INVALID_EMAIL_FORMS)]
            shown = form.format(local=local, first=first.lower(), last=last.lower())
        elif u_email[j] < rates["email_missing"]:
            shown = None
        elif u_email[j] < rates["email_missing"] + rates["email_messy"]:
            shown = [email.upper(), f"{email}   ", f"{email.upper()} "][k % 3]
        else:
            shown = email
        if fault == "negative_points":
            points = -(1 + (k >> 3) % 5000)
        elif fault == "unknown_level":
            level = UNKNOWN_LEVELS[(k >> 3) % len(UNKNOWN_LEVELS)]
        elif fault == "control_char":
            char = CONTROL_CHARS[(k >> 3) % len(CONTROL_CHARS)]
            if k % 2:
                first = first[: k % (len(first) + 1)] + char + first[k % (len(first) + 1) :]
            else:
                last = last + char
        elif fault == "overlong":
            last = _overlong(last, k)
        joined_ms = (joined[j] - _EPOCH.date()).days * DAY_MS
        if fault or u_win[j] < in_window:
            saved = world.start_ms + int(u_time[j] * span)
            nightly = saved - saved % DAY_MS + _NIGHTLY_MS
            if u_batch[j] < rates["batch_touch"] and world.start_ms <= nightly < world.now_ms:
                saved = nightly
        else:
            saved = joined_ms + int(u_time[j] * (world.start_ms - joined_ms))
        row = (
            member_no(world, key),
            shown,
            first,
            last,
            level,
            int(points),
            joined[j],
            bool(u_out[j] < rates["opted_out"]),
            NOTES[(k >> 5) % len(NOTES)] if u_notes[j] < rates["notes"] else None,
            bool(fault is None and u_del[j] < rates["deleted"]),
            _instant(saved),
        )
        yield row, _Truth(person, fault)


def generate_rows(params: GenParams, **rates: float) -> Iterator[tuple[tuple, _Truth]]:
    world, rates_ = world_of(params), _rates(rates)
    for chunk, start, count in world.chunks(CHUNK):
        yield from chunk_members(world, rates_, chunk, start, count)


def expected(params: GenParams, **rates: float) -> list[dict]:
    """What ``reset`` writes, ordered by member_no: COLUMNS plus ``person`` (index of the world's
    person, None for members only the club knows) and ``fault`` (one of FAULTS, or None)."""
    out = [
        dict(zip(COLUMNS, row, strict=True), person=truth.person, fault=truth.fault)
        for row, truth in generate_rows(params, **rates)
    ]
    return sorted(out, key=lambda r: r["member_no"])


# --- PostgreSQL ------------------------------------------------------------------------------------


def _dsn(dsn: str) -> str:
    """libpq takes ``postgresql://`` URLs and ``key=value`` strings; SQLAlchemy's ``+driver`` is dropped."""
    scheme, sep, rest = dsn.partition("://")
    return f"{scheme.split('+')[0]}://{rest}" if sep else dsn


def connect(dsn: str):
    conn = psycopg2.connect(_dsn(dsn), connect_timeout=5)
    conn.set_client_encoding("UTF8")
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    conn.commit()
    return conn


def _server(dsn: str) -> tuple[dict, str]:
    parts = parse_dsn(_dsn(dsn))
    name = parts.pop("dbname", None)
    if not name:
        raise ValueError("the DSN names no database")
    return parts | {"dbname": "postgres"}, name


def create_database(dsn: str) -> bool:
    """Create the DSN's database (UTF-8) if it is missing; True if it was created."""
    admin, name = _server(dsn)
    conn = psycopg2.connect(connect_timeout=5, **admin)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return False
            try:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
                        sql.Identifier(name)
                    )
                )
            except psycopg2.errors.DuplicateDatabase:
                return False  # created by someone else in the meantime
            return True
    finally:
        conn.close()


def drop_database(dsn: str) -> None:
    """Drop the DSN's database, closing other sessions on it (tests' throwaway databases)."""
    admin, name = _server(dsn)
    conn = psycopg2.connect(connect_timeout=5, **admin)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


def ensure_schema(dsn: str) -> None:
    """Schema ``club``, table and index, if missing (idempotent; existing rows are kept)."""
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            cur.execute(TABLE_DDL)
            cur.execute(INDEX_DDL)
    finally:
        conn.close()


def _copy_text(value) -> str:
    """One value in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime | date):
        return value.isoformat()
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def reset(dsn: str, params: GenParams, **rates: float) -> dict:
    """Replace the table with the world's members (one transaction: readers see old or new rows)."""
    started = time.perf_counter()
    world = world_of(params)
    counts = {"rows": 0, "world_people": 0, "club_only": 0, "deleted": 0, "no_email": 0, "in_window": 0}
    counts["bad"] = dict.fromkeys(FAULTS, 0)
    copy = f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN"
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
            cur.execute(TABLE_DDL)  # the index after the load: faster
            buffer, pending = io.StringIO(), 0
            for row, truth in generate_rows(params, **rates):
                buffer.write("\t".join(_copy_text(v) for v in row) + "\n")
                pending += 1
                _count(counts, row, truth, world)
                if pending == 50_000:
                    cur.copy_expert(copy, io.StringIO(buffer.getvalue()))
                    buffer, pending = io.StringIO(), 0
            if pending:
                cur.copy_expert(copy, io.StringIO(buffer.getvalue()))
            cur.execute(INDEX_DDL)
            cur.execute(f"ANALYZE {TABLE}")
    finally:
        conn.close()
    counts["seconds"] = round(time.perf_counter() - started, 2)
    return counts


def _count(counts: dict, row: tuple, truth: _Truth, world: World) -> None:
    """Tally one row (in COLUMNS order: 1 email, 9 deleted, 10 updated_at)."""
    counts["rows"] += 1
    counts["world_people" if truth.person is not None else "club_only"] += 1
    counts["deleted"] += row[9]
    counts["no_email"] += row[1] is None
    counts["in_window"] += row[10] >= _instant(world.start_ms)
    if truth.fault:
        counts["bad"][truth.fault] += 1


def mutate(dsn: str, fraction: float = 0.01, seed: int = 1, at: str = DEFAULT_MUTATE_AT) -> list[str]:
    """Save a deterministic share of the live (not deleted) members, as club staff would: points
    earned, a level up, the opt-out flag flipped, a new last name, or the member leaves
    (``deleted``); ``updated_at`` becomes ``at`` for each. Returns their member numbers."""
    changes = [
        "points = CASE WHEN points < 0 THEN points - 25 ELSE points + 25 END",
        "club_level = CASE club_level WHEN 'CLASSIC' THEN 'SILVER' WHEN 'SILVER' THEN 'GOLD' "
        "WHEN 'GOLD' THEN 'PLATINUM' ELSE club_level END",
        "opted_out = NOT opted_out",
        "last_name = last_name || '-BERG'",
        "deleted = true",
    ]
    saved_at = _instant(parse_instant(at))
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"SELECT member_no FROM {TABLE} WHERE NOT deleted ORDER BY member_no")
            picked: list[list[str]] = [[] for _ in changes]
            for (number,) in cur.fetchall():
                score = unit_hash(seed, number)
                if score < fraction:
                    picked[int(score / max(fraction, 1e-12) * len(changes))].append(number)
            for change, numbers in zip(changes, picked, strict=True):
                if numbers:
                    cur.execute(
                        f"UPDATE {TABLE} SET {change}, updated_at = %s WHERE member_no = ANY(%s)",
                        (saved_at, numbers),
                    )
    finally:
        conn.close()
    return sorted(n for numbers in picked for n in numbers)


def rows(dsn: str, since: str | datetime | None = None, until: str | datetime | None = None) -> list[dict]:
    """The table as dicts (COLUMNS; ``updated_at`` aware UTC), ordered by member_no; ``since`` ≤
    updated_at < ``until`` when given (ISO strings or aware datetimes)."""
    where, args = [], []
    for bound, op in ((since, ">="), (until, "<")):
        if bound is not None:
            where.append(f"updated_at {op} %s")
            args.append(bound if isinstance(bound, datetime) else _instant(parse_instant(bound)))
    query = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"
    query += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY member_no"
    conn = connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, args)
            return [dict(zip(COLUMNS, r, strict=True)) for r in cur.fetchall()]
    finally:
        conn.close()


def airflow_connection(dsn: str) -> dict:
    """The ``postgres`` connection Airflow's PostgresHook reads (``schema`` is the database)."""
    parts = parse_dsn(_dsn(dsn))
    conn = {
        "conn_type": "postgres",
        "host": parts.get("host", "127.0.0.1"),
        "port": int(parts.get("port", 5432)),
        "login": parts.get("user", "postgres"),
        "schema": parts["dbname"],
    }
    if parts.get("password"):
        conn["password"] = parts["password"]
    return conn


@dataclass
class LegacyMembers:
    """The club-member table in one database, bound to the world of a sandbox (``Sandbox.legacy_members``)."""

    dsn: str
    params: GenParams = field(default_factory=GenParams)
    rates: dict[str, float] = field(default_factory=dict)

    def create_database(self) -> bool:
        return create_database(self.dsn)

    def drop_database(self) -> None:
        drop_database(self.dsn)

    def ensure_schema(self) -> None:
        ensure_schema(self.dsn)

    def reset(self) -> dict:
        return reset(self.dsn, self.params, **self.rates)

    def mutate(self, fraction: float = 0.01, seed: int = 1, at: str = DEFAULT_MUTATE_AT) -> list[str]:
        return mutate(self.dsn, fraction, seed, at)

    def rows(self, since: str | datetime | None = None, until: str | datetime | None = None) -> list[dict]:
        return rows(self.dsn, since, until)

    def expected(self) -> list[dict]:
        return expected(self.params, **self.rates)

    def airflow_connections(self) -> dict[str, str]:
        """``{"legacy_members_db": JSON}``, as ``Sandbox.airflow_connections()`` gives the vendors'."""
        return {LEGACY_CONN_ID: json.dumps(airflow_connection(self.dsn))}
