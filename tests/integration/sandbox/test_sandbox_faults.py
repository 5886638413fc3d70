"""Fault switches: latency, deterministic 429s, 5xx bursts, slow and dropped calls, record errors."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests


def new_members(n: int, prefix: str = "fault") -> list[dict]:
    return [{"email_address": f"{prefix}{i}@example.com", "status_if_new": "subscribed"} for i in range(n)]


def test_latency_delays_calls_concurrently(fresh_sandbox, esp):
    fresh_sandbox.set_faults("esp", latency_ms=300)
    started = time.perf_counter()
    with ThreadPoolExecutor(5) as pool:
        statuses = list(
            pool.map(
                lambda _: requests.get(esp.base + "/ping", auth=esp.session.auth, timeout=5).status_code,
                range(5),
            )
        )
    elapsed = time.perf_counter() - started
    assert statuses == [200] * 5
    assert 0.3 <= elapsed < 1.2  # the five sleeps overlap (one after the other: 1.5 s)


def test_rate_limit_every_kth_call_with_fractional_retry_after(fresh_sandbox, crm):
    fresh_sandbox.set_faults("crm", rate_limit={"every": 3, "retry_after": 0.2})
    responses = [crm.get("/crm/v3/objects/contacts", params={"limit": 1}) for _ in range(6)]
    assert [r.status_code for r in responses] == [200, 200, 429, 200, 200, 429]
    limited = responses[2]
    assert limited.headers["Retry-After"] == "0.2"
    assert limited.json()["message"] == "You have reached your secondly limit."
    assert "X-HubSpot-RateLimit-Remaining" in limited.headers
    assert [r["fault"] for r in fresh_sandbox.requests("crm")][2] == "rate_limit"
    state = fresh_sandbox.faults()["crm"]["rate_limit"]
    assert state["matched"] == 6 and state["applied"] == 2


def test_status_burst_then_recovery_writes_nothing(fresh_sandbox, esp, list_path):
    fresh_sandbox.set_faults("esp", status_burst={"count": 2, "status": 503, "method": "POST"})
    assert esp.get("/ping").status_code == 200  # method filter: GETs are not hit
    body = {"members": new_members(3), "update_existing": True}
    first, second, third = (esp.post(list_path, json=body) for _ in range(3))
    assert first.status_code == second.status_code == 503
    assert first.json()["title"] == "Service Unavailable" and first.json()["status"] == 503
    assert third.status_code == 200 and third.json()["total_created"] == 3  # nothing was written before
    assert fresh_sandbox.faults()["esp"]["status_burst"]["remaining"] == 0


def test_drop_closes_the_connection_and_writes_nothing(fresh_sandbox, esp, list_path):
    fresh_sandbox.set_faults("esp", drop={"count": 1, "path": "/3.0/lists/*"})
    body = {"members": new_members(2, "dropped"), "update_existing": True}
    # the body is cut short: requests reports it as a broken chunked/content read
    with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        esp.post(list_path, json=body)
    assert fresh_sandbox.esp_member("dropped0@example.com") is None
    assert fresh_sandbox.requests("esp")[-1]["fault"] == "drop"
    assert esp.post(list_path, json=body).json()["total_created"] == 2


def test_slow_call_times_out_but_the_write_is_applied(fresh_sandbox, esp, list_path):
    fresh_sandbox.set_faults("esp", slow={"count": 1, "seconds": 1.0})
    with pytest.raises(requests.exceptions.ReadTimeout):
        esp.post(list_path, json={"members": new_members(1, "slow")}, timeout=0.3)
    assert fresh_sandbox.esp_member("slow0@example.com")["status"] == "subscribed"
    retry = esp.post(list_path, json={"members": new_members(1, "slow"), "update_existing": True})
    assert retry.json()["total_updated"] == 1  # the client's retry is an update, not a duplicate


def test_record_errors_reject_chosen_records_with_vendor_shapes(fresh_sandbox, esp, crm, list_path):
    sb = fresh_sandbox
    sb.set_faults("esp", record_errors={"keys": ["fault3@example.com"], "rate": 0.2, "seed": 7})
    body = esp.post(list_path, json={"members": new_members(20)}).json()
    rejected = {e["email_address"] for e in body["errors"]}
    assert "fault3@example.com" in rejected and 1 < len(rejected) < 12
    assert all(e["error_code"] == "ERROR_GENERIC" and "signups" in e["error"] for e in body["errors"])
    again = esp.post(list_path, json={"members": new_members(20), "update_existing": True}).json()
    assert {e["email_address"] for e in again["errors"]} == rejected  # deterministic
    ids = [c["id"] for c in sb.crm_contacts()[:3]]
    sb.set_faults("crm", record_errors={"keys": [ids[1]]})
    response = crm.post(
        "/crm/v3/objects/contacts/batch/update",
        json={"inputs": [{"id": i, "properties": {"city": "Kiel"}} for i in ids]},
    )
    assert response.status_code == 207 and response.json()["errors"][0]["context"]["ids"] == [ids[1]]
    assert [sb.crm_contact(i)["properties"]["city"] == "Kiel" for i in ids] == [True, False, True]
    assert sb.faults()["crm"]["record_errors"]["applied"] == 1


def test_request_log_counts_records_and_normalises_keys(fresh_sandbox, esp, list_path):
    members = [
        {"email_address": "  Mixed.Case@Example.COM ", "status_if_new": "subscribed"},
        {"email_address": "other@example.com", "status_if_new": "subscribed"},
    ]
    esp.post(list_path, json={"members": members})
    esp.get(f"{list_path}/members", params={"count": 10})
    batch, listing = fresh_sandbox.requests("esp")[-2:]
    assert batch["method"] == "POST" and batch["status"] == 200 and batch["n_records"] == 2
    assert batch["record_keys"] == ["mixed.case@example.com", "other@example.com"]
    assert listing["query"] == "count=10" and listing["n_returned"] == 10 and listing["fault"] is None


def test_request_log_times_the_sandbox_own_work_without_the_added_latency(fresh_sandbox, esp, list_path):
    """served_ms: what the benchmarks add up as the sandbox's own floor. A batch of 500 members
    costs the sandbox milliseconds; the 400 ms of latency it was told to add are not in it."""
    fresh_sandbox.set_faults("esp", latency_ms=400)
    started = time.perf_counter()
    assert esp.post(list_path, json={"members": new_members(500, "served")}).status_code == 200
    assert esp.get("/ping").status_code == 200
    elapsed_ms = (time.perf_counter() - started) * 1000
    batch, ping = fresh_sandbox.requests("esp")[-2:]
    assert batch["n_records"] == 500 and ping["path"] == "/3.0/ping"
    assert 0 < ping["served_ms"] < batch["served_ms"]  # 500 members are more work than a ping
    assert batch["served_ms"] + ping["served_ms"] < elapsed_ms - 2 * 400  # the latency is not counted


def test_unknown_switch_is_refused(fresh_sandbox):
    with pytest.raises(Exception, match="unknown fault switch"):
        fresh_sandbox.set_faults("esp", explode=1)
