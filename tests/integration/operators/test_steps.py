"""The shared step operators in the providers' style: built with arguments, `execute(context)`
called directly, connections from AIRFLOW_CONN_* (the sandbox's ESP, a real PostgreSQL)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest

from mailsync.links import ui_url
from mailsync.operators.steps import (
    DiffOperator,
    LoadEspMembersOperator,
    MapOperator,
    QualityGateOperator,
    StageSqlOperator,
)
from tests.connections import set_connection
from tests.integration.dags import dagrun
from tests.integration.operators.context import links_shown, operator_context
from tests.services import require_postgres

MAPPING = "legacy_members_to_esp"
START, END = datetime(2026, 11, 19, 3, tzinfo=UTC), datetime(2026, 11, 20, 3, tzinfo=UTC)


def _context(**params) -> dict:
    return operator_context("operator_test", "manual__operator_test", START, END, **params)


@pytest.fixture
def table(tmp_path):
    """A throwaway PostgreSQL database with a small member table, as connection `members_db`."""
    import psycopg2

    require_postgres()
    admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres", connect_timeout=3)
    name = f"mailsync_ops_{secrets.token_hex(4)}"
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=name)
    with conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE members (member_no text, email text, first_name text, last_name text, "
            "club_level text, points integer, joined date, opted_out boolean, deleted boolean, "
            "updated_at timestamptz)"
        )
        cur.executemany(
            "INSERT INTO members VALUES (%s, %s, 'ANNA', 'BERG', %s, %s, '2015-03-01', false, false, %s)",
            [
                ("0001", "anna@example.com", "GOLD", 120, "2026-11-19T03:00:00Z"),  # first instant: in
                ("0002", "bad@", "GOLD", 5, "2026-11-19T12:00:00Z"),  # invalid email
                ("0003", "cara@example.com", "BRONZE", 5, "2026-11-19T13:00:00Z"),  # unknown level
                ("0004", "dan@example.com", "SILVER", 7, "2026-11-20T03:00:00Z"),  # the next day's
                *((f"1{i:03d}", f"m{i}@example.com", "CLASSIC", i, "2026-11-19T05:00Z") for i in range(20)),
            ],
        )
    conn.close()
    dagrun.isolate(tmp_path)
    definition = {"conn_type": "postgres", "host": "127.0.0.1", "login": "postgres", "schema": name}
    set_connection("members_db", definition)
    yield
    admin.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


def test_stage_validate_map_diff_and_a_dry_load(table, vendors, connections):
    context = _context(dry_run=True)
    staged = StageSqlOperator(
        task_id="extract",
        conn_id="members_db",
        source="members",
        sql="SELECT * FROM members "
        "WHERE updated_at >= %(since)s::timestamptz AND updated_at < %(until)s::timestamptz",
        parameters={"since": START.isoformat(), "until": END.isoformat()},
    ).execute(context)
    assert staged["rows"] == 23  # half-open: 2026-11-20 03:00 belongs to the next day

    gate_op = QualityGateOperator(task_id="validate", mapping=MAPPING, source="members")
    gate = gate_op.execute(context)
    assert (gate["rows_good"], gate["rows_quarantined"]) == (21, 2)
    assert set(gate["quarantine_reasons"]) == {"invalid_email", "unknown_club_level"}
    run_url = "/mailsync/runs/operator_test/manual__operator_test"
    assert links_shown(gate_op, context) == {  # the task page's links, now that the files exist
        "Quality report": f"{ui_url()}{run_url}/quality-report",
        "Quarantine": f"{ui_url()}{run_url}/quarantine",
    }

    mapped = MapOperator(task_id="map", mapping=MAPPING, source="members").execute(context)
    assert mapped == {"mapped": 21, "duplicates": 0}
    diffed = DiffOperator(task_id="diff", state=MAPPING).execute(context)
    assert (diffed["new"], diffed["changed"], diffed["to_remove"]) == (21, 0, 0)

    vendors.clear_requests()
    load_op = LoadEspMembersOperator(task_id="load", mapping=MAPPING, state=MAPPING)
    load = load_op.execute(context)
    assert load == {"dry_run": True, "would_send": 0, "not_audience_members": 21}  # no contacts sync yet
    assert links_shown(load_op, context) == {}  # nothing was refused: no Rejected records link
    assert [r for r in vendors.requests("esp") if r["method"] != "GET"] == []


def test_a_wrong_connection_fails_the_extract_naming_nothing_secret(table):
    set_connection(
        "members_db_wrong",
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "login": "pg", "password": "s3cr3t-pw"},
    )
    op = StageSqlOperator(task_id="extract", conn_id="members_db_wrong", source="members", sql="SELECT 1")
    with pytest.raises(Exception) as failed:
        op.execute(_context())
    assert "s3cr3t-pw" not in str(failed.value)
