"""EspHook against the sandbox Mailchimp: batches, per-record errors, retries, give-up, auth."""

from __future__ import annotations

from collections import Counter

import pytest

from mailsync.hooks.base import VendorError, VendorUnavailable
from mailsync.hooks.esp import EspHook, subscriber_hash
from tests.connections import variant


def members(n: int, prefix: str = "hooktest") -> list[dict]:
    return [
        {
            "email_address": f"{prefix}{i}@example.com",
            "status_if_new": "subscribed",
            "merge_fields": {"FNAME": f"N{i}"},
        }
        for i in range(n)
    ]


def written_keys(sandbox) -> Counter:
    """How many times each member was written by a batch call that the server applied."""
    counts: Counter = Counter()
    for r in sandbox.requests("esp"):
        if r["method"] == "POST" and r["path"].endswith(sandbox.info["list_id"]) and r["status"] == 200:
            counts.update(r["record_keys"])
    return counts


def test_batches_of_500_in_parallel_with_per_record_errors(vendors):
    batch = [*members(1200), {"email_address": "not-an-email", "status_if_new": "subscribed"}]
    batch.append(
        {"email_address": "x@example.com", "status_if_new": "subscribed", "merge_fields": {"NOPE": 1}}
    )
    hook = EspHook()
    results = list(hook.upsert_members(batch))
    accepted = [a for r in results for a in r.accepted]
    rejected = {r["key"]: r["reason"] for res in results for r in res.rejected}
    assert len(results) == 3 and hook.stats.writes == 3  # 1202 members -> 500 + 500 + 202
    assert len(accepted) == 1200 and all(a["created"] for a in accepted)
    assert set(rejected) == {"not-an-email", "x@example.com"}
    assert "looks fake or invalid" in rejected["not-an-email"]
    assert "NOPE" in rejected["x@example.com"]
    assert vendors.esp_member("hooktest7@example.com")["merge_fields"]["FNAME"] == "N7"


def test_iter_members_pages_through_every_member(vendors):
    list(EspHook().upsert_members(members(1500, "pager")))
    expected = {m["email_address"].lower() for m in vendors.esp_members()}
    seen = [m["email_address"].lower() for page in EspHook().iter_members() for m in page]
    assert len(seen) == len(set(seen)) == len(expected) > 1500


def test_recovers_from_5xx_burst_429_and_dropped_connections_without_loss_or_duplicates(vendors):
    vendors.set_faults("esp", status_burst={"count": 2, "status": 503, "method": "POST"})
    vendors.set_faults("esp", rate_limit={"next": 2, "retry_after": 0.2, "method": "POST"})
    vendors.set_faults("esp", drop={"count": 2, "method": "POST"})
    hook = EspHook()
    results = list(hook.upsert_members(members(2000, "flaky"), concurrency=4))
    assert sum(len(r.accepted) for r in results) == 2000
    assert hook.stats.retries >= 6
    faults = Counter(r["fault"].split("=")[0] for r in vendors.requests("esp") if r["fault"])
    assert faults["status_burst"] == 2 and faults["rate_limit"] == 2 and faults["drop"] == 2
    writes = written_keys(vendors)
    assert len(writes) == 2000 and max(writes.values()) == 1  # every member applied exactly once
    assert {m["email_address"] for m in vendors.esp_members() if m["email_address"].startswith("flaky")} == {
        f"flaky{i}@example.com" for i in range(2000)
    }


def test_gives_up_within_budget_with_a_clear_message(vendors, connections):
    conn = variant(
        connections, "esp_default", "esp_short_budget", extra={"retry_budget": 2, "max_attempts": 20}
    )
    vendors.set_faults("esp", status_burst={"count": 1000, "status": 503})
    with pytest.raises(VendorUnavailable) as err:
        list(EspHook(conn).upsert_members(members(10)))
    message = str(err.value)
    assert "still failing after" in message and "HTTP 503" in message and "esp_short_budget" in message
    assert "rerun the task later" in message


def test_validation_errors_are_never_retried(vendors):
    hook = EspHook()
    too_many = [{"email_address": f"a{i}@x.de", "status": "subscribed"} for i in range(501)]
    with pytest.raises(VendorError) as err:
        hook.call("POST", f"lists/{hook.list_id}", json={"members": too_many}, write=True)
    assert err.value.status == 400 and "HTTP 400" in str(err.value)
    assert hook.stats.calls == 1 and hook.stats.retries == 0


def test_wrong_api_key_fails_with_a_clear_message_and_no_secret(vendors, connections):
    conn = variant(connections, "esp_default", "esp_bad_key", password="0" * 32 + "-us21")
    ok, message = EspHook(conn).test_connection()
    assert not ok
    assert "HTTP 401" in message and "API Key Invalid" in message and "esp_bad_key" in message
    assert "0" * 32 not in message
    assert EspHook().test_connection() == (True, "Mailchimp answered and the audience exists")


def test_unsubscribed_and_cleaned_members_are_not_resubscribed_by_status_if_new(vendors):
    gone = [m for m in vendors.esp_members() if m["status"] in ("unsubscribed", "cleaned")][:5]
    assert gone
    payload = [
        {"email_address": m["email_address"], "status_if_new": "subscribed", "merge_fields": {"FNAME": "Z"}}
        for m in gone
    ]
    results = list(EspHook().upsert_members(payload))
    assert sum(len(r.accepted) for r in results) == len(gone)
    for m in gone:
        after = vendors.esp_member(m["email_address"])
        assert after["status"] == m["status"] and after["merge_fields"]["FNAME"] == "Z"


def test_archive_and_permanent_delete(vendors):
    subscribed = [m["email_address"] for m in vendors.esp_members() if m["status"] == "subscribed"][:3]
    results = list(EspHook().remove_members(subscribed[:2]))
    assert [a["outcome"] for r in results for a in r.accepted] == ["removed", "removed"]
    assert {vendors.esp_member(e)["status"] for e in subscribed[:2]} == {"archived"}
    again = list(EspHook().remove_members(subscribed[2:], permanently=True))
    assert again[0].accepted[0]["key"] == subscribed[2].lower()
    assert vendors.esp_member(subscribed[2]) is None
    assert subscriber_hash(" A@B.c ") == subscriber_hash("a@b.c")
