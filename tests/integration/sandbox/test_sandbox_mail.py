"""The mail sink: Airflow's SMTP provider sends through it with the `mailsync_smtp` connection, the
client reads the messages back; AUTH (LOGIN and PLAIN) with the connection's password is required."""

from __future__ import annotations

import asyncio
import json
import smtplib

import pytest

from tests.connections import variant

CONN_ID = "mailsync_smtp"
SUBJECT = "mailsync: Lauf für 2026-11-20 fertig (3 Kontakte übersprungen)"
HTML = "<h1>Sync fertig</h1><p>Grüße aus dem Sandkasten: 1 000 Kontakte, 3 übersprungen.</p>"


@pytest.fixture
def mailbox(sandbox, connections):
    """The session sandbox with an empty mail sink and its connections set as AIRFLOW_CONN_*."""
    sandbox.clear_mail()
    yield sandbox
    sandbox.clear_mail()


def notifier(conn_id: str = CONN_ID, **kwargs):
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    kwargs.setdefault("to", "ops@example.com, data@example.org")
    kwargs.setdefault("subject", SUBJECT)
    kwargs.setdefault("html_content", HTML)
    return SmtpNotifier(smtp_conn_id=conn_id, **kwargs)


def smtp_client(sb) -> smtplib.SMTP:
    return smtplib.SMTP(sb.info["host"], sb.info["ports"]["smtp"], timeout=5)


def test_ready_json_and_the_connection(sandbox):
    conn = json.loads(sandbox.airflow_connections()[CONN_ID])
    port = sandbox.info["ports"]["smtp"]
    assert sandbox.url("smtp") == f"smtp://127.0.0.1:{port}"
    assert conn["conn_type"] == "smtp" and (conn["host"], conn["port"]) == ("127.0.0.1", port)
    assert (conn["login"], conn["password"]) == (
        sandbox.info["credentials"]["smtp_user"],
        sandbox.info["credentials"]["smtp_password"],
    )
    # JSON booleans on purpose: SmtpHook reads the string "false" as true
    assert conn["extra"] == {
        "from_email": "mailsync@sandbox.local",
        "disable_ssl": True,
        "disable_tls": True,
        "timeout": 10,
        "retry_limit": 0,
    }


def test_notifier_sends_and_the_client_reads_it_back(mailbox):
    notifier().notify({})  # from_email comes from the connection
    (message,) = mailbox.mail()
    assert message["subject"] == SUBJECT
    assert message["from"] == ["mailsync@sandbox.local"]
    assert message["to"] == ["ops@example.com", "data@example.org"]
    assert message["mail_from"] == "mailsync@sandbox.local"
    assert message["rcpt_to"] == ["ops@example.com", "data@example.org"]
    assert message["html"] == HTML and message["text"] is None  # decoded from base64 utf-8
    assert message["date"] and message["headers"]["Subject"] == SUBJECT
    assert message["login"] == mailbox.info["credentials"]["smtp_user"]
    assert mailbox.info["credentials"]["smtp_password"] not in json.dumps(message)


def test_async_notifier_and_bcc_attachments(mailbox, tmp_path):
    """The provider's async path (aiosmtplib, AUTH LOGIN) works too; Bcc is envelope-only."""
    report = tmp_path / "report.csv"
    report.write_text("email;reason\nx@example.com;invalid\n")
    asyncio.run(notifier(to="ops@example.com", bcc="audit@example.com", files=[str(report)]).async_notify({}))
    (message,) = mailbox.mail()
    assert message["to"] == ["ops@example.com"] and "Bcc" not in message["headers"]
    assert message["rcpt_to"] == ["ops@example.com", "audit@example.com"]
    assert message["attachments"] == [
        {"filename": "report.csv", "content_type": "application/octet-stream", "size": report.stat().st_size}
    ]


def test_wrong_password_is_refused_without_echoing_it(mailbox, connections):
    wrong = "not-the-smtp-password"
    variant(connections, CONN_ID, "mailsync_smtp_wrong", password=wrong)
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        notifier("mailsync_smtp_wrong").notify({})
    assert refused.value.smtp_code == 535
    assert b"Authentication credentials invalid" in refused.value.smtp_error
    assert wrong not in str(refused.value)
    assert mailbox.mail() == []


def test_a_connection_without_password_cannot_send(mailbox, connections):
    """SmtpHook skips AUTH when the password is empty: the sink then refuses the sender."""
    variant(connections, CONN_ID, "mailsync_smtp_nopw", password="")
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        notifier("mailsync_smtp_nopw").notify({})
    assert refused.value.smtp_code == 530
    assert mailbox.mail() == []


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
def test_auth_mechanisms_over_plain_smtp(mailbox, mechanism):
    creds = mailbox.info["credentials"]
    with smtp_client(mailbox) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        assert set(client.esmtp_features["auth"].split()) == {"LOGIN", "PLAIN"}
        client.user, client.password = creds["smtp_user"], "wrong"
        method = client.auth_login if mechanism == "LOGIN" else client.auth_plain
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth(mechanism, method)
        client.password = creds["smtp_password"]
        assert client.auth(mechanism, method)[0] == 235
        client.sendmail(
            "robot@sandbox.local",
            ["Someone@Example.com"],
            "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nFrom: Robot <robot@sandbox.local>\r\n"
            "To: Someone <Someone@Example.com>\r\n\r\nline one\r\nline two\r\n",
        )
    (message,) = mailbox.mail()
    assert message["subject"] == "Grüße" and message["from"] == ["robot@sandbox.local"]
    assert message["to"] == ["Someone@Example.com"] and message["text"] == "line one\nline two\n"


def test_clear_and_reset_empty_the_sink(mailbox):
    notifier().notify({})
    notifier(subject="second").notify({})
    first, second = mailbox.mail()
    assert second["id"] > first["id"] and second["subject"] == "second"
    assert mailbox.clear_mail() == 2 and mailbox.mail() == []
    notifier().notify({})
    mailbox.reset()
    assert mailbox.mail() == []
