"""Issue 19: the engagement write-back reaches every CRM record of a person; the first full sync
against an existing audience can mirror it (members the CRM does not have are archived)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.dags import dagrun
from tests.integration.dags.expected_engagement import crm_records, duplicated_emails, expected_records

ENGAGEMENT, CONTACTS = "esp_to_crm_engagement", "crm_to_esp_contacts"
NIGHT1 = "2026-11-20T02:00:00Z"
QUICK = {"loyalty_wait_minutes": 0}
pytestmark = pytest.mark.slow


@pytest.fixture
def world(vendors, airflow_db, tmp_path):
    dagrun.isolate(tmp_path)
    return vendors


def _key(email: str | None) -> str:
    return (email or "").strip().lower()


# -- write-back to every record of an email --------------------------------------------------------
def test_an_unsubscribe_opts_out_every_crm_record_of_the_email(world):
    twice = sorted(duplicated_emails(world))
    assert len(twice) >= 3  # the generator enters ~1 % of people twice (case and spaces differ)
    before = crm_records(world)
    campaign = world.esp_campaigns()[-1]["id"]
    leaver, bouncer = twice[0], twice[1]
    world.add_esp_activity(leaver, "unsubscribe", "2026-11-18T11:00:00Z", campaign_id=campaign)
    world.add_esp_activity(leaver, "open", "2026-11-18T12:00:00Z", campaign_id=campaign)
    world.add_esp_activity(bouncer, "bounce", "2026-11-18T10:00:00Z", campaign_id=campaign, type="hard")
    start = datetime(2026, 11, 18, tzinfo=UTC)
    world.clear_requests()

    run = dagrun.run(ENGAGEMENT, (start + timedelta(days=1)).isoformat())
    assert run.state == "success"
    after = crm_records(world)
    assert after == expected_records(world, start, start + timedelta(days=1), before)
    leaver_records = [r for r in after.values() if r["email"] == leaver]
    assert len(leaver_records) >= 2
    assert all(r["marketing_consent"] == "false" for r in leaver_records)
    assert all(r["marketing_opt_out_date"] == "2026-11-18" for r in leaver_records)
    assert all(r["email_invalid"] == "true" for r in after.values() if r["email"] == bouncer)

    # cost: about one search and one update per 100 touched contacts, plus one read by email
    # per 100 the search did not find (people the CRM does not know)
    report = dagrun.report(run)
    touched = report["contacts_touched"]
    crm = [r for r in world.requests("crm") if r["path"].startswith("/crm/v3/objects/contacts")]
    searches = sum(1 for r in crm if r["path"].endswith("/search"))
    assert searches <= math.ceil(touched / 100)
    assert len(crm) <= 2 * math.ceil(touched / 100) + 1 + math.ceil(report["unknown_contacts"] / 100)


def test_searches_keep_to_hubspot_search_limit(world):
    from mailsync.hooks.crm import CrmHook

    emails = sorted({_key(c["properties"]["email"]) for c in world.crm_contacts()} - {""})
    hook = CrmHook()
    world.clear_requests()
    found = {}
    for i in range(0, 700, 100):  # 7 searches in a row
        found.update(hook.all_ids_by_email(emails[i : i + 100]))
    assert set(found) == set(emails[:700])
    moments = [
        datetime.fromisoformat(r["ts"].replace("Z", "+00:00"))
        for r in world.requests("crm")
        if r["path"].endswith("/search")
    ]
    assert len(moments) == 7
    assert all(b - a >= timedelta(seconds=1) for a, b in zip(moments, moments[5:], strict=False))  # ≤ 5/s
    with pytest.raises(ValueError, match="at most 100"):
        hook.all_ids_by_email(emails[:101])
    from mailsync.hooks.base import VendorError

    too_many = {
        "filterGroups": [{"filters": [{"propertyName": "email", "operator": "IN", "values": emails[:101]}]}]
    }
    with pytest.raises(VendorError, match=r"HTTP 400.*at most 100 values"):  # as HubSpot refuses it
        hook.call("POST", "crm/v3/objects/contacts/search", json=too_many)


# -- mirror ------------------------------------------------------------------------------------
def _members(world) -> dict[str, dict]:
    return {_key(m["email_address"]): m for m in world.esp_members()}


def _archive_in_crm(world, emails: list[str]) -> None:
    for c in world.crm_contacts():
        if _key(c["properties"]["email"]) in emails:
            world.crm_archive(c["id"])


def _prepare_existing_audience(world) -> tuple[dict[str, dict], set[str]]:
    """Contacts archived in the CRM before our first sync, one of them unsubscribed in the ESP;
    returns the members before and the live CRM emails."""
    members = _members(world)
    crm_emails = [_key(c["properties"]["email"]) for c in world.crm_contacts()]
    in_both = [e for e in crm_emails if e in members and members[e]["status"] == "subscribed"]
    gone = in_both[:4]
    world.esp_set_status(gone[0], "unsubscribed")
    _archive_in_crm(world, gone)
    live = {_key(c["properties"]["email"]) for c in world.crm_contacts()} - {""}
    return _members(world), live


def test_mirror_archives_members_the_crm_does_not_have_and_nobody_else(world):
    before, live = _prepare_existing_audience(world)
    absent = {e for e, m in before.items() if e not in live and m["status"] != "archived"}
    assert len(absent) >= 10  # ESP-only people and the contacts archived before the first sync

    run = dagrun.run(CONTACTS, NIGHT1, mirror=True, partitions=3, **QUICK)
    assert run.state == "success"
    after = _members(world)
    assert {e for e in absent if after[e]["status"] != "archived"} == set()
    # members the CRM has are never archived by the mirror, and unsubscribed/cleaned stay so
    wrongly = {
        e
        for e in live & set(before)
        if before[e]["status"] != "archived" and after[e]["status"] == "archived"
    }
    assert wrongly == set()
    for e in live & set(before):
        if before[e]["status"] in ("unsubscribed", "cleaned"):
            assert after[e]["status"] == before[e]["status"], e
    assert dagrun.report(run)["archived"] >= len(absent)


def test_without_mirror_the_first_sync_leaves_members_the_crm_does_not_have(world):
    before, live = _prepare_existing_audience(world)
    absent = {e for e, m in before.items() if e not in live and m["status"] != "archived"}
    assert dagrun.run(CONTACTS, NIGHT1, full_refresh=True, **QUICK).state == "success"
    after = _members(world)
    assert all(after[e]["status"] == before[e]["status"] for e in absent)


def test_mirror_is_stopped_by_the_removal_guard_counting_against_the_audience(world):
    before, _ = _prepare_existing_audience(world)
    run = dagrun.run(CONTACTS, NIGHT1, mirror=True, max_removal_share=0.01, **QUICK)
    assert run.state == "failed"  # check_removals: MassRemovalRefused, before any load
    assert _members(world) == before
