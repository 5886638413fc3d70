"""Contract of the legacy club-member table (sandbox/legacy_members.py) in a real PostgreSQL: what
it holds, that it is reproducible, its share of bad rows, that its people are the CRM's, what a
mutation changes, and that Airflow's PostgresHook reads it through the `legacy_members_db`
connection. Each test works in one throwaway database, dropped at the end of the module."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import unicodedata
from datetime import UTC, datetime, time
from pathlib import Path

import psycopg2
import pytest

from sandbox import legacy_members as lm
from sandbox.config import LEGACY_CONN_ID, GenParams
from tests.services import require_postgres

ROOT = Path(__file__).resolve().parents[3]
PARAMS = GenParams(seed=42, contacts=1000, days=7)
WINDOW = (datetime(2026, 11, 13, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC))
# The project's own email syntax, so that the stand-in's bad rows are the gate's bad rows.
EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


@pytest.fixture(scope="module")
def dsn():
    """A throwaway database `mailsync_legacy_<random>` on 127.0.0.1:5432, dropped afterwards."""
    require_postgres()
    url = f"postgresql://postgres@127.0.0.1:5432/mailsync_legacy_{secrets.token_hex(4)}"
    assert lm.create_database(url) is True
    assert lm.create_database(url) is False  # idempotent
    yield url
    lm.drop_database(url)


def _fault(row: dict) -> str | None:
    """The quality gate's view of a row, written independently of the generator."""
    email = row["email"]
    if email is not None and not EMAIL.match(email.strip().lower()):
        return "invalid_email"
    if row["points"] < 0:
        return "negative_points"
    if row["club_level"] not in ("CLASSIC", "SILVER", "GOLD", "PLATINUM"):
        return "unknown_level"
    names = (row["first_name"] or "") + (row["last_name"] or "")
    if any(unicodedata.category(c) == "Cc" for c in names):
        return "control_char"
    if any(len(row[c] or "") > 255 for c in ("email", "first_name", "last_name")):
        return "overlong"
    return None


def test_reset_creates_the_table_its_index_and_the_counted_rows(dsn):
    counts = lm.reset(dsn, PARAMS)
    lm.ensure_schema(dsn)  # idempotent: keeps the rows
    rows = lm.rows(dsn)
    assert len(rows) == counts["rows"] == counts["world_people"] + counts["club_only"]
    assert 450 < counts["world_people"] < 560  # ~50% of 1000 people
    assert 25 < counts["club_only"] < 80  # ~5%
    assert counts["deleted"] == sum(r["deleted"] for r in rows) > 0
    assert counts["no_email"] == sum(r["email"] is None for r in rows) > 0
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'club' AND table_name = 'members' ORDER BY ordinal_position"
        )
        columns = dict(cur.fetchall())
        cur.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'club' AND tablename = 'members'")
        indexes = [d for (d,) in cur.fetchall()]
    conn.close()
    assert list(columns) == list(lm.COLUMNS)
    assert columns["member_no"] == "text" and columns["points"] == "integer"
    assert columns["joined"] == "date" and columns["updated_at"] == "timestamp with time zone"
    assert columns["opted_out"] == columns["deleted"] == "boolean"
    assert any("(member_no)" in d and "UNIQUE" in d for d in indexes)
    assert any("(updated_at, member_no)" in d for d in indexes)
    # legacy quirks: upper-case names, member numbers with leading zeros, free-text notes
    assert all(r["first_name"] == r["first_name"].upper() for r in rows)
    assert all(re.fullmatch(r"\d{8}", r["member_no"]) for r in rows)
    assert any(r["member_no"].startswith("0") for r in rows)
    assert any(r["notes"] and "\n" in r["notes"] for r in rows)


def test_the_same_seed_gives_the_same_rows_and_another_seed_others(dsn):
    lm.reset(dsn, PARAMS)
    first = lm.rows(dsn)
    assert first == [{c: r[c] for c in lm.COLUMNS} for r in lm.expected(PARAMS)]
    lm.reset(dsn, PARAMS)
    assert lm.rows(dsn) == first
    other = lm.expected(GenParams(seed=7, contacts=1000, days=7))
    assert {r["member_no"] for r in other}.isdisjoint({r["member_no"] for r in first[:50]})
    assert {r["email"] for r in other} != {r["email"] for r in first}


def test_updated_at_lies_before_now_and_a_share_inside_the_window(dsn):
    counts = lm.reset(dsn, PARAMS)
    rows = lm.rows(dsn)
    start, now = WINDOW
    assert all(r["updated_at"] < now for r in rows)
    assert all(r["updated_at"].date() >= r["joined"] for r in rows)
    inside = [r for r in rows if r["updated_at"] >= start]
    assert len(inside) == counts["in_window"]
    assert 0.15 < len(inside) / len(rows) < 0.35  # 3% a day for 7 days, plus the bad rows
    days = {r["updated_at"].date() for r in inside}
    assert len(days) == 7  # every day of the window has saves
    nightly = [r for r in inside if r["updated_at"].time() == time(2)]  # the points job: ties
    assert len(nightly) > 10 and len({r["updated_at"] for r in nightly}) == 7
    assert len(lm.rows(dsn, since="2026-11-19T00:00:00Z", until=now)) == sum(
        r["updated_at"] >= datetime(2026, 11, 19, tzinfo=UTC) for r in rows
    )


def test_bad_rows_are_the_share_asked_for_and_each_has_one_known_defect(dsn):
    counts = lm.reset(dsn, PARAMS)
    rows = lm.rows(dsn)
    truth = {r["member_no"]: r["fault"] for r in lm.expected(PARAMS)}
    assert {r["member_no"]: _fault(r) for r in rows} == truth
    bad = [r for r in rows if truth[r["member_no"]]]
    assert abs(len(bad) / len(rows) - lm.RATES["bad"]) < 0.002
    assert counts["bad"] == {f: sum(truth[r["member_no"]] == f for r in rows) for f in lm.FAULTS}
    assert min(counts["bad"].values()) >= 5  # every kind, evenly
    assert all(r["updated_at"] >= WINDOW[0] for r in bad)  # every increment sees some
    assert not any(r["deleted"] for r in bad)
    assert all("\x00" not in (r["first_name"] + r["last_name"]) for r in rows)  # PostgreSQL refuses NUL

    lm.reset(dsn, PARAMS, bad=0.2)
    share = sum(_fault(r) is not None for r in lm.rows(dsn)) / len(rows)
    assert abs(share - 0.2) < 0.01


def test_most_emails_are_the_crm_contacts_and_the_club_only_members_are_nowhere_else(sandbox, dsn):
    legacy = sandbox.legacy_members(dsn)
    assert legacy.params == GenParams(**sandbox.info["generated"])
    legacy.reset()
    expected = legacy.expected()
    assert legacy.rows() == [{c: r[c] for c in lm.COLUMNS} for r in expected]
    crm = {(c["properties"]["email"] or "").strip().lower() for c in sandbox.crm_contacts()}
    esp = {m["email_address"].strip().lower() for m in sandbox.esp_members()}

    def key(row):
        return (row["email"] or "").strip().lower()

    people = [r for r in expected if r["person"] is not None and r["fault"] is None and r["email"]]
    only = [r for r in expected if r["person"] is None and r["fault"] is None and r["email"]]
    assert people and only
    in_crm = sum(key(r) in crm for r in people) / len(people)
    assert in_crm > 0.97  # the rest: the CRM holds that person's address in an invalid form
    in_esp = sum(key(r) in esp for r in people) / len(people)
    assert 0.5 < in_esp < 0.7  # ~60% of the people are audience members
    assert not any(key(r) in crm or key(r) in esp for r in only)
    assert sum(r["email"] is not None and r["email"] != key(r) for r in expected) > 10  # case, blanks


def test_mutate_saves_the_share_asked_for_at_the_given_instant(dsn):
    lm.reset(dsn, PARAMS)
    before = {r["member_no"]: r for r in lm.rows(dsn)}
    at = "2026-11-20T03:00:00Z"
    changed = lm.mutate(dsn, fraction=0.1, seed=3, at=at)
    after = {r["member_no"]: r for r in lm.rows(dsn)}
    live = [n for n, r in before.items() if not r["deleted"]]
    assert 0.06 * len(live) < len(changed) < 0.14 * len(live)
    assert set(changed) <= set(live)
    saved = datetime(2026, 11, 20, 3, tzinfo=UTC)
    assert {n for n, r in after.items() if r["updated_at"] == saved} == set(changed)
    assert all(after[n] == before[n] for n in before if n not in changed)
    differs = [n for n in changed if {**after[n], "updated_at": None} != {**before[n], "updated_at": None}]
    assert len(differs) > 0.7 * len(changed)  # a level up at the top (or of an unknown level) is only a save
    assert sum(after[n]["deleted"] for n in changed) > 0  # some left the club
    assert lm.rows(dsn, since=at) == [after[n] for n in sorted(changed)]

    lm.reset(dsn, PARAMS)
    assert lm.mutate(dsn, fraction=0.1, seed=3, at=at) == changed  # deterministic


def test_postgres_hook_reads_a_day_through_the_legacy_members_db_connection(sandbox, dsn, monkeypatch):
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    legacy = sandbox.legacy_members(dsn)
    legacy.reset()
    connections = legacy.airflow_connections()
    assert list(connections) == [LEGACY_CONN_ID] == ["legacy_members_db"]
    definition = json.loads(connections[LEGACY_CONN_ID])
    assert definition == {
        "conn_type": "postgres",
        "host": "127.0.0.1",
        "port": 5432,
        "login": "postgres",
        "schema": dsn.rsplit("/", 1)[1],
    }
    for conn_id, value in connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)
    hook = PostgresHook(postgres_conn_id="legacy_members_db")
    assert hook.test_connection()[0]
    start, end = datetime(2026, 11, 19, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)
    records = hook.get_records(
        "SELECT member_no, email, updated_at FROM club.members "
        "WHERE updated_at >= %s AND updated_at < %s ORDER BY updated_at, member_no",
        parameters=(start, end),
    )
    want = sorted(
        (
            (r["member_no"], r["email"], r["updated_at"])
            for r in legacy.expected()
            if start <= r["updated_at"] < end
        ),
        key=lambda t: (t[2], t[0]),
    )
    assert records and [tuple(r) for r in records] == want


def test_the_command_line_fills_the_table_from_a_sandbox_data_dir(sandbox, dsn):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sandbox",
            "legacy-members",
            "--dsn",
            dsn,
            "--data-dir",
            str(sandbox.data_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["rows"] == len(sandbox.legacy_members(dsn).expected()) == len(lm.rows(dsn))
    done = subprocess.run(
        [sys.executable, "-m", "sandbox", "legacy-members", "--dsn", dsn, "--mutate", "0.05"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["mutated"] == len(lm.rows(dsn, since="2026-11-20T03:00:00Z")) > 0
