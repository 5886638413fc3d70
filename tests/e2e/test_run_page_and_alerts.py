"""What an analyst and on-call see of a nightly run on the embedded default (a real scheduler,
SQLite, LocalExecutor), the way the demo runs it: the run's note with the counts, one summary
XCom, and a deadline alert in the mail sink when the run has not finished in time.

The nightly runs once for the module (`nightly`, about a minute); the UI journey in a browser
(tests/e2e/test_ui_journey.py) reads the same run.
"""

from __future__ import annotations

import time

import pytest

from devtools.local_airflow import _quote

DAG = "crm_to_esp_contacts"
pytestmark = pytest.mark.slow


def test_the_run_note_shows_the_summary(nightly):
    airflow, run_id, _ = nightly["airflow"], nightly["run_id"], nightly["sandbox"]
    run = airflow.api("GET", f"dags/{DAG}/dagRuns/{_quote(run_id)}")
    report = airflow.xcom(DAG, run_id, "report")
    note = run["note"] or ""
    assert note.startswith("### ✅ Succeeded") or note.startswith("### ⚠️ Succeeded with warnings"), note
    assert f"| extracted | {report['extracted']:,} |" in note
    assert f"| created | {report['created']:,} |" in note
    assert f"| quarantined | {report['quarantined']:,} |" in note
    assert "**API calls:** crm" in note and "**duration:**" in note


def test_the_summary_is_one_xcom(nightly):
    airflow, run_id = nightly["airflow"], nightly["run_id"]
    path = f"dags/{DAG}/dagRuns/{_quote(run_id)}/taskInstances/report/xcomEntries"
    entries = airflow.api("GET", path)["xcom_entries"]
    # beside the summary, only the task page's report links (stored by Airflow as the task ended)
    assert [e["key"] for e in entries if not e["key"].startswith("_link_")] == ["return_value"]
    links = airflow.api("GET", f"dags/{DAG}/dagRuns/{_quote(run_id)}/taskInstances/report/links")
    links = links["extra_links"]
    assert links["Quality report"] and links["Quarantine"]  # the night quarantined rows
    assert not links["Revenue report"]  # a contacts night writes no revenue page: no button
    report = airflow.xcom(DAG, run_id, "report")
    assert {"extracted", "created", "quarantined", "api_calls", "warnings"} <= set(report)


def test_a_run_past_its_deadline_alerts_once(nightly):
    """The module's notification file gives the nightly a deadline of 3 s after it was queued."""
    sandbox, run_id = nightly["sandbox"], nightly["run_id"]
    late = []
    for _ in range(60):  # the scheduler checks deadlines in its loop; the executor sends
        late = [m for m in sandbox.mail() if "LATE" in m["subject"]]
        if late:
            break
        time.sleep(2)
    subject = f"[mailsync] {DAG} LATE: not finished by its deadline ({nightly['interval']})"
    assert [m["subject"] for m in late] == [subject]
    html = late[0]["html"]
    assert "was due to finish by" in html and "What to do" in html
    assert f"/dags/{DAG}/runs/{_quote(run_id)}" in html or run_id in html


def test_the_validate_task_links_to_its_reports_for_logged_in_users_only(nightly):
    import requests

    airflow, run_id = nightly["airflow"], nightly["run_id"]
    links = airflow.api("GET", f"dags/{DAG}/dagRuns/{_quote(run_id)}/taskInstances/validate/links")
    links = links["extra_links"]
    assert set(links) == {"Quality report", "Quarantine"}  # the gate's links, no other kind
    quality = links["Quality report"]
    assert quality == f"{airflow.url}/mailsync/runs/{DAG}/{_quote(run_id)}/quality-report"
    auth = {"Authorization": f"Bearer {airflow.token}"}

    index = requests.get(quality, headers=auth, timeout=30)  # two sources: contacts and loyalty
    assert index.status_code == 200 and index.headers["cache-control"] == "no-store", index.text[:300]
    assert "quality/contacts/report.html" in index.text and "quality/loyalty/report.html" in index.text
    base = quality.rsplit("/", 1)[0]
    page = requests.get(f"{base}/file/quality/contacts/report.html", headers=auth, timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<html" in page.text.lower() and "quarantine" in page.text.lower()
    listed = requests.get(links["Quarantine"], headers=auth, timeout=30).text
    assert "quality/contacts/quarantine.csv" in listed
    quarantine = requests.get(f"{base}/file/quality/contacts/quarantine.csv", headers=auth, timeout=30)
    assert quarantine.status_code == 200 and "attachment" in quarantine.headers["content-disposition"]

    assert requests.get(quality, timeout=30).status_code == 401  # not logged in: nothing
    for path in ("file/report.json", "file/extract/loyalty/loyalty_tiers.csv", "file/..%2F..%2Fstate.db"):
        assert requests.get(f"{base}/{path}", headers=auth, timeout=30).status_code == 404, path
