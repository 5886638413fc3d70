"""On-call is told, once: a run failing after its retries sends one message, a run that succeeded
with a refused partner file sends one, each to the sandbox's mail sink, with the fields on-call
needs and no personal data or secret in any of them."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest

from mailsync.notifications import ACTIONS
from tests.connections import set_connection
from tests.integration.dags import dagrun

DAG = "crm_to_esp_contacts"
NIGHT = "2026-11-20T02:00:00Z"
DAY = "2026-11-19"  # the loyalty file that night reads
INTERVAL = "2026-11-19T02:00:00+00:00 → 2026-11-20T02:00:00+00:00"


@pytest.fixture
def crm_down_then_back(vendors, connections):
    """The CRM answers 503 to everything, and our connection gives up after 2 tries in 1 s."""
    definition = json.loads(json.dumps(connections["crm_default"]))
    definition["extra"].update(retry_budget=1, max_attempts=2)
    set_connection("crm_default", definition)
    vendors.set_faults("crm", status_burst={"count": 100000, "status": 503})
    yield
    vendors.clear_faults()
    set_connection("crm_default", connections["crm_default"])


def _secrets(connections: dict) -> list[str]:
    found = []
    for definition in connections.values():
        found += [str(definition[k]) for k in ("password",) if definition.get(k)]
        found += [str(v) for k, v in (definition.get("extra") or {}).items() if "token" in k or "key" in k]
    return [s for s in found if len(s) >= 6]


def _assert_clean(messages: list[dict], vendors, connections) -> None:
    emails = {(c["properties"].get("email") or "").lower() for c in vendors.crm_contacts()} - {""}
    emails |= {m["email_address"].lower() for m in vendors.esp_members()}
    for message in messages:
        body = json.dumps(message, ensure_ascii=False).lower()
        leaked = [e for e in emails if e in body]
        assert not leaked, f"personal data in {message['subject']!r}: {leaked[:3]}"
        for secret in _secrets(connections):
            assert secret.lower() not in body, f"a connection secret in {message['subject']!r}"


def test_a_run_failing_after_its_retries_sends_one_message(
    vendors, connections, airflow_db, tmp_path, monkeypatch, crm_down_then_back
):
    dagrun.isolate(tmp_path)
    monkeypatch.setenv("MAILSYNC_TASK_RETRIES", "1")
    vendors.clear_mail()

    failed = dagrun.run(DAG, NIGHT, full_refresh=True, loyalty_wait_minutes=0)

    assert str(failed.state) == "failed"
    tries = {ti.task_id: ti.try_number for ti in failed.get_task_instances() if ti.state == "failed"}
    assert tries == {"extract_contacts": 2}, tries  # failed after its retry: two tries, one message
    messages = vendors.mail()
    assert len(messages) == 1, [m["subject"] for m in messages]
    (message,) = messages
    assert message["to"] == ["data-oncall@example.com"]
    assert message["subject"] == f"[mailsync] {DAG} FAILED at extract_contacts ({INTERVAL})"
    html = message["html"]
    for field in ("DAG", "Run", "Task", "Data interval", "Reason", "What to do", "Run page"):
        assert re.search(rf"<th[^>]*>{re.escape(field)}</th>", html), field
    assert failed.run_id.replace("+", "&#43;") in html or failed.run_id in html
    assert "VendorUnavailable: CRM" in html and "rerun the task later" in html  # the reason, in one sentence
    assert ACTIONS["VendorUnavailable"].split(":")[0].replace("'", "&#39;") in html  # what to do
    assert f"/dags/{DAG}/runs/{quote(failed.run_id, safe='')}" in html
    _assert_clean(messages, vendors, connections)


def test_a_refused_loyalty_file_sends_one_warning_and_the_night_goes_on(
    vendors, connections, airflow_db, tmp_path
):
    dagrun.isolate(tmp_path)
    vendors.write_loyalty_file(day=DAY, fault="truncated")  # the marker counts more rows than came
    vendors.clear_mail()

    night = dagrun.run(DAG, NIGHT, full_refresh=True, loyalty_wait_minutes=0)

    assert str(night.state) == "success"
    report = dagrun.report(night)
    assert report["loyalty"] == "rejected" and report["warnings"], report
    messages = vendors.mail()
    assert [m["subject"] for m in messages] == [f"[mailsync] {DAG} succeeded with warnings ({INTERVAL})"]
    assert "Loyalty file rejected" in messages[0]["html"]
    assert report["loyalty_reason"].split(":")[0] in messages[0]["html"]
    _assert_clean(messages, vendors, connections)


def test_a_quality_gate_past_its_threshold_sends_one_message_saying_what_to_do(
    vendors, connections, airflow_db, tmp_path, monkeypatch
):
    dagrun.isolate(tmp_path)
    monkeypatch.setenv("MAILSYNC_TASK_RETRIES", "1")
    vendors.reset(seed=42, contacts=1000, days=7, email_invalid=0.3)  # the mapping allows 10 %
    vendors.clear_mail()

    failed = dagrun.run(DAG, NIGHT, full_refresh=True, loyalty_wait_minutes=0)

    assert str(failed.state) == "failed"
    (message,) = vendors.mail()
    assert message["subject"] == f"[mailsync] {DAG} FAILED at validate ({INTERVAL})"
    assert "QualityGateFailed" in message["html"] and "report.html" in message["html"]
    assert ACTIONS["QualityGateFailed"][:40] in message["html"]
    assert re.search(rf'<th[^>]*>Quality report</th><td><a href="[^"]*/mailsync/runs/{DAG}/', message["html"])
    _assert_clean([message], vendors, connections)
