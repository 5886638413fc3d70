"""The fourth integration, built from configuration and the shared operators alone: the legacy
club-member table in a real PostgreSQL → ESP merge fields of audience members.

One module-wide world (the contacts full sync that makes the audience, then the club's full
refresh) is shared by the tests; each asserts one property of it against a direct computation
from the generated rows.
"""

from __future__ import annotations

import json
import os
import secrets

import pytest

from tests.integration.dags import dagrun
from tests.services import require_postgres

DAG = "legacy_members_to_esp"
NIGHT = "2026-11-20T02:00:00Z"  # the contacts sync that builds the audience
DAY = "2026-11-20T03:00:00Z"  # the club run whose interval ends then (a full refresh)
LEVELS = {"CLASSIC": "Classic", "SILVER": "Silver", "GOLD": "Gold", "PLATINUM": "Platinum"}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(sandbox, connections, airflow_db, tmp_path_factory):
    require_postgres()
    sandbox.reset(seed=42, contacts=1000, days=7)
    club = sandbox.legacy_members(
        f"postgresql://postgres@127.0.0.1:5432/mailsync_legacy_{secrets.token_hex(4)}"
    )
    club.create_database()
    try:
        club.reset()
        for conn_id, definition in club.airflow_connections().items():
            os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = definition
        dagrun.isolate(tmp_path_factory.mktemp("legacy"))
        contacts = dagrun.run("crm_to_esp_contacts", NIGHT, full_refresh=True, loyalty_wait_minutes=0)
        assert contacts.state == "success"
        before = {m["email_address"].lower(): m for m in sandbox.esp_members()}
        full = dagrun.run(DAG, DAY, full_refresh=True)
        yield {
            "sandbox": sandbox,
            "club": club,
            "before": before,
            "after": {m["email_address"].lower(): m for m in sandbox.esp_members()},
            "full": full,
            "report": dagrun.report(full),
        }
    finally:
        club.drop_database()


def _latest(club) -> dict[str, dict]:
    """The latest valid row of every audience email (the mapping's duplicate rule)."""
    from mailsync.operators.sync import audience_members

    audience, latest = audience_members(), {}  # the contacts sync's; the ESP has older members too
    for row in sorted(club.expected(), key=lambda r: (r["updated_at"], r["member_no"])):
        email = (row["email"] or "").strip().lower()
        if row["fault"] is None and email in audience:
            latest[email] = row
    return latest


def _expected_fields(club) -> dict[str, dict]:
    """The merge fields the mapping prescribes, per audience email."""
    return {
        email: {
            "CLUB": "" if row["deleted"] else LEVELS[row["club_level"]],
            "CLUBPOINTS": "" if row["deleted"] else row["points"],
            "MEMBERNO": row["member_no"],
        }
        for email, row in _latest(club).items()
    }


def test_every_audience_member_gets_the_club_fields_the_mapping_prescribes(world):
    assert world["full"].state == "success"
    expected = _expected_fields(world["club"])
    assert len(expected) > 100
    found = {
        email: {k: world["after"][email]["merge_fields"].get(k) for k in ("CLUB", "CLUBPOINTS", "MEMBERNO")}
        for email in expected
    }
    wrong = {e: (found[e], expected[e]) for e in expected if found[e] != expected[e]}
    assert not wrong, (len(wrong), len(expected), list(wrong.items())[:3])


def test_nobody_is_added_or_subscribed_and_opt_outs_unsubscribe(world):
    before, after = world["before"], world["after"]
    assert set(after) == set(before)  # audience members only: nobody added
    resubscribed = [e for e, m in after.items() if m["status"] == "subscribed" != before[e]["status"]]
    assert resubscribed == []
    opted_out = [e for e, row in _latest(world["club"]).items() if row["opted_out"]]
    assert opted_out and [e for e in opted_out if after[e]["status"] == "subscribed"] == []


def test_bad_rows_are_quarantined_with_their_reason(world):
    report = world["report"]
    rows = world["club"].expected()
    bad = [r for r in rows if r["fault"] or not (r["email"] or "").strip()]  # a member without email too
    assert report["extracted"] == len(rows)
    assert report["quarantined"] == len(bad)
    reasons = set(report["quarantine_reasons"])
    assert {"unknown_club_level", "negative_points", "control_characters", "too_long", "invalid_email",
            "missing_email"} <= reasons, reasons  # fmt: skip
    assert report["not_audience_members"] > 0  # club-only members are counted, not added


def test_a_day_with_changes_sends_only_them_and_a_rerun_sends_nothing(world):
    club, sandbox = world["club"], world["sandbox"]
    changed = club.mutate(fraction=0.05, seed=3, at="2026-11-20T10:00:00Z")
    assert changed
    sandbox.clear_requests()
    day = dagrun.run(DAG, "2026-11-21T03:00:00Z")  # the interval 2026-11-20 03:00 → 11-21 03:00
    report = dagrun.report(day)
    assert day.state == "success"
    assert report["extracted"] == len(changed)
    assert 0 < report["updated"] <= len(changed)
    again = dagrun.report(dagrun.run(DAG, "2026-11-21T03:00:00Z"))
    assert again["sent"] == 0  # what is left "new" is club-only people, never added to the audience
    assert again["new"] + again["changed"] == again["not_audience_members"]
    writes = [r for r in sandbox.requests("esp") if r["method"] != "GET"]
    assert len(writes) == 1  # one batch for the changed day, none for the rerun
    assert json.loads(json.dumps(report["api_calls"]))["esp"] >= 1
