"""CrmHook against the sandbox HubSpot: cursor paging, search re-windowing, batch update rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailsync.hooks import crm
from mailsync.hooks.base import VendorError
from mailsync.hooks.crm import CrmHook, SearchWindowExceeded
from tests.connections import variant

START, END = datetime(2026, 11, 13, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)


def test_lists_every_contact_once_over_many_pages(vendors):
    hook = CrmHook()
    pages = list(hook.iter_contacts(["email", "firstname"]))
    ids = [c["hs_object_id"] for page in pages for c in page]
    assert len(pages) > 10 and len(ids) == len(set(ids)) == len(vendors.crm_contacts())
    assert hook.stats.calls == len(pages)


def test_archived_listing_has_archived_at(vendors):
    live = vendors.crm_contacts()[0]
    vendors.crm_archive(live["id"])
    archived = [c for page in CrmHook().iter_contacts(["email"], archived=True) for c in page]
    assert str(live["id"]) in {c["hs_object_id"] for c in archived}
    assert all(c["archived"] and c["archivedAt"] for c in archived)


def _modified_in_window(sandbox) -> set[str]:
    return {
        str(c["id"])
        for c in sandbox.crm_contacts()
        if START <= datetime.fromisoformat(c["properties"]["lastmodifieddate"].replace("Z", "+00:00")) < END
    }


def test_search_by_modification_time_rewindows_past_the_result_limit(vendors, monkeypatch):
    expected = _modified_in_window(vendors)
    assert len(expected) > 100
    monkeypatch.setattr(crm, "SEARCH_WINDOW", 60)  # HubSpot's limit is 10,000; same logic, smaller
    monkeypatch.setattr(crm, "SEARCH_PAGE", 20)
    got = [
        c["hs_object_id"] for page in CrmHook().iter_modified_contacts(["email"], START, END) for c in page
    ]
    assert len(got) == len(set(got)) and set(got) == expected


def test_search_with_many_equal_timestamps_still_returns_each_contact_once(vendors, monkeypatch):
    vendors.mutate_crm(fraction=0.05, seed=3, at="2026-11-21T03:00:00Z")  # ~50 contacts, one timestamp
    start, end = datetime(2026, 11, 21, tzinfo=UTC), datetime(2026, 11, 22, tzinfo=UTC)
    monkeypatch.setattr(crm, "SEARCH_WINDOW", 20)
    monkeypatch.setattr(crm, "SEARCH_PAGE", 10)
    with pytest.raises(SearchWindowExceeded, match="share lastmodifieddate"):
        list(CrmHook().iter_modified_contacts(["email"], start, end))
    monkeypatch.setattr(crm, "SEARCH_WINDOW", 200)
    got = [
        c["hs_object_id"] for page in CrmHook().iter_modified_contacts(["email"], start, end) for c in page
    ]
    assert len(got) == len(set(got)) >= 40


def test_batch_update_reports_unknown_contacts_and_isolates_an_invalid_input(vendors):
    emails = [
        c["properties"]["email"].strip().lower()
        for c in vendors.crm_contacts()[:150]
        if c["properties"]["email"]
    ]
    updates = [{"email": e, "properties": {"esp_opens_total": "3"}} for e in emails]
    updates.insert(10, {"email": "nobody@nowhere.example", "properties": {"esp_opens_total": "1"}})
    updates.insert(20, {"email": emails[0], "properties": {"no_such_property": "x"}})
    hook = CrmHook()
    results = list(hook.update_contacts(updates))
    rejected = {r["key"]: r["reason"] for res in results for r in res.rejected}
    accepted = {a["key"] for res in results for a in res.accepted}
    assert rejected["nobody@nowhere.example"] == "unknown_contact"
    assert any("no_such_property" in reason for reason in rejected.values())
    assert accepted == set(emails)  # the invalid input named emails[0]; its valid update went through
    assert len(rejected) == 2
    props = {c["properties"]["email"].strip().lower(): c["properties"] for c in vendors.crm_contacts()}
    assert props[emails[5]]["esp_opens_total"] == "3"
    assert "nobody@nowhere.example" not in props  # reported, never created
    assert hook.stats.writes > 2  # the batch holding the invalid input was split
    updates_by_id = [r for r in vendors.requests("crm") if r["path"].endswith("/batch/update")]
    assert updates_by_id and all("@" not in k for r in updates_by_id for k in r["record_keys"])  # by id


def test_an_error_every_record_shares_fails_the_task_instead_of_rejecting_all(vendors):
    emails = [
        c["properties"]["email"].strip().lower()
        for c in vendors.crm_contacts()[:60]
        if c["properties"]["email"]
    ]
    hook = CrmHook()
    with pytest.raises(VendorError, match=r"CRM refuses every contact of a batch.*no_such_property"):
        list(hook.update_contacts([{"email": e, "properties": {"no_such_property": "x"}} for e in emails]))
    assert hook.stats.writes == 3  # the batch and its two halves, not one call per contact


def test_missing_or_wrong_token_is_a_clear_error(vendors, connections):
    conn = variant(connections, "crm_default", "crm_bad_token", password="pat-wrong")
    ok, message = CrmHook(conn).test_connection()
    assert not ok and "HTTP 401" in message and "crm_bad_token" in message and "pat-wrong" not in message
    assert CrmHook().test_connection()[0]


def test_a_used_up_daily_limit_fails_at_once_with_what_to_do(vendors):
    """Retrying HubSpot's daily limit within the task's retry budget cannot help: it lasts
    until midnight. The call fails on the first 429, saying so."""
    vendors.set_faults("crm", rate_limit={"vendor": True, "daily": 2})
    hook = CrmHook()
    with pytest.raises(VendorError, match=r"daily limit.*rerun the task after"):
        list(hook.iter_contacts(["email"]))
    assert hook.stats.retries == 0 and hook.stats.calls == 3


def test_searches_stay_within_the_search_limit(vendors):
    """CrmHook paces its searches to HubSpot's 5 per second: at the sandbox's enforced limit a
    run of searches gets no 429."""
    vendors.set_faults("crm", rate_limit={"vendor": True, "search_per_s": 5})
    hook = CrmHook()
    for _ in range(12):
        hook.count_contacts()
    assert hook.stats.retries == 0
    assert not [r for r in vendors.requests("crm") if r["status"] == 429]


def test_rate_limit_is_honoured(vendors):
    vendors.set_faults("crm", rate_limit={"next": 3, "retry_after": 0.1})
    hook = CrmHook()
    pages = list(hook.iter_contacts(["email"]))
    assert sum(len(p) for p in pages) == len(vendors.crm_contacts())
    assert hook.stats.retries == 3
    limited = [r for r in vendors.requests("crm") if r["status"] == 429]
    assert len(limited) == 3
