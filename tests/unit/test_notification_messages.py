"""Notification settings, the message itself, and the webhook channel against a real HTTP server."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from mailsync.notifications import Alert, deadline_alert, send
from mailsync.settings import INCLUDE_DIR
from tests.connections import set_connection

ALERT = Alert(
    kind="failed",
    dag_id="crm_to_esp_contacts",
    run_id="manual__2026-11-20T02:00:00+00:00",
    interval="2026-11-19T02:00:00+00:00 → 2026-11-20T02:00:00+00:00",
    task="load[1]",
    reason="VendorError: ESP POST /lists/x: HTTP 400: <script>alert(1)</script> j***@e***.com",
    action="Fix it, then clear the task.",
    link="http://127.0.0.1:8080/dags/crm_to_esp_contacts/runs/manual__2026-11-20T02%3A00%3A00%2B00%3A00",
)


@pytest.fixture
def settings_file(tmp_path, monkeypatch):
    def write(text: str):
        path = tmp_path / "notifications.yaml"
        path.write_text(text)
        monkeypatch.setenv("MAILSYNC_NOTIFICATIONS_FILE", str(path))
        return path

    return write


def test_the_project_gives_the_nightly_a_deadline_and_checks_its_file(monkeypatch, settings_file):
    monkeypatch.setenv("MAILSYNC_NOTIFICATIONS_FILE", str(INCLUDE_DIR / "notifications.yaml"))
    alert = deadline_alert("crm_to_esp_contacts")
    assert alert.interval == timedelta(hours=4)
    assert alert.callback.serialize()["path"] == "mailsync.notifications.deadline_missed"
    assert deadline_alert("esp_to_crm_engagement") is None
    settings_file("email: {conn_id: x, to: [a@b.c]}\nwebhok: {conn_id: y}\n")
    with pytest.raises(ValueError, match="webhok"):
        deadline_alert("crm_to_esp_contacts")  # a typo never silences on-call


def test_the_html_message_escapes_the_reason():
    html = ALERT.html()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert f'<a href="{ALERT.link}">' in html
    assert ALERT.subject == (
        "[mailsync] crm_to_esp_contacts FAILED at load[1] "
        "(2026-11-19T02:00:00+00:00 → 2026-11-20T02:00:00+00:00)"
    )


class _Sink(BaseHTTPRequestHandler):
    received: ClassVar[list] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Sink.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_the_webhook_posts_slack_text_and_keeps_its_secret_path_out_of_messages(settings_file, caplog):
    server = HTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings_file("webhook: {conn_id: test_webhook}\n")
        secret = "/services/T000/B000/s3cr3tT0ken"
        port = server.server_address[1]
        set_connection(
            "test_webhook",
            {
                "conn_type": "http",
                "host": f"http://127.0.0.1:{port}",
                "password": secret,
                "extra": {"retry_budget": 1, "max_attempts": 2, "timeout": 5},
            },
        )
        assert send(ALERT) == ["webhook"]
        (path, body) = _Sink.received[-1]
        assert path == secret and body["text"].startswith(ALERT.subject)
        assert "What to do: Fix it, then clear the task." in body["text"]

        server.shutdown()  # the channel is down now: the failure is logged without the secret
        server.server_close()
        assert send(ALERT) == []
        assert "Notification by webhook (test_webhook) failed" in caplog.text
        assert "s3cr3tT0ken" not in caplog.text
    finally:
        server.server_close()


def test_the_run_note_leads_with_the_warnings_of_a_refused_loyalty_file():
    from mailsync.operators.report import run_note

    report = {
        "interval": ["2026-11-19T02:00:00+00:00", "2026-11-20T02:00:00+00:00"],
        "warnings": ["Loyalty file rejected: cut off: 383 rows, the done-marker says 400. Tiers stay."],
        "extracted": 1003,
        "loyalty": "rejected",
        "quarantine_reasons": {"invalid_email": 6},
        "api_calls": {"crm": 12, "esp": 4},
        "duration_s": 41.5,
    }
    note = run_note(report, ("extracted", "loyalty"))
    lines = note.splitlines()
    assert lines[0] == "### ⚠️ Succeeded with warnings"
    assert lines[1] == "Data interval 2026-11-19 02:00 → 2026-11-20 02:00 UTC"
    assert "- ⚠️ Loyalty file rejected: cut off: 383 rows" in note
    assert "| extracted | 1,003 |" in lines and "| loyalty | rejected |" in lines
    assert "**Quarantined by reason:** invalid_email 6" in note
    assert "**API calls:** crm 12, esp 4 · **duration:** 41.5 s" in note
