"""The mail sink: an aiosmtpd SMTP server that keeps every message it accepts, in memory.

It stands in for the mail relay that Airflow's SMTP provider (``SmtpHook`` / ``SmtpNotifier``)
talks to, so notifications can be sent and read back in tests and the demo. It speaks plain SMTP
(no SSL, no STARTTLS: it is local) and requires AUTH LOGIN or PLAIN with the sandbox's generated
credentials before MAIL FROM; wrong credentials get ``535``, so a test can prove that the
connection's password is the one used. Nothing is delivered anywhere.

Messages live in ``AppState.mail`` (lost with the process; cleared by reset and
``DELETE /_sandbox/mail``); each is a JSON-ready dict with the envelope, the main headers and the
decoded text and HTML bodies. Only the login is kept, never the password.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import socket
import warnings
from datetime import UTC, datetime
from email import policy
from email.headerregistry import AddressHeader
from email.message import EmailMessage
from email.parser import BytesParser

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from sandbox.web import AppState

HOSTNAME = "sandbox.local"
_REQUIRES_TLS_WARNING = "Requiring AUTH while not requiring TLS"


class _KnownNoise(logging.Filter):
    """Two warnings aiosmtpd 1.4.6 logs on every connection / every AUTH, about nothing we do wrong:
    AUTH required without TLS (deliberate here), and its own use of ``Session.login_data``."""

    NOISE = ("auth_require_tls == False", "Session.login_data is deprecated")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in self.NOISE)


logging.getLogger("mail.log").addFilter(_KnownNoise())


def _addresses(message: EmailMessage, name: str) -> list[str]:
    header = message[name]
    if header is None:
        return []
    if isinstance(header, AddressHeader):
        return [a.addr_spec for a in header.addresses]
    return [str(header)]


def _body(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    return None if part is None else part.get_content()


def parse(raw: bytes) -> dict:
    """The parts of a message a test looks at: headers (decoded) and the text / HTML bodies."""
    # SMTP carries CRLF line ends; the parser keeps them in 7/8-bit bodies, a test wants "\n".
    message = BytesParser(policy=policy.default).parsebytes(raw.replace(b"\r\n", b"\n"))
    return {
        "subject": message["Subject"] and str(message["Subject"]),
        "from": _addresses(message, "From"),
        "to": _addresses(message, "To"),
        "cc": _addresses(message, "Cc"),
        "date": message["Date"] and str(message["Date"]),
        "message_id": message["Message-ID"] and str(message["Message-ID"]),
        "headers": {name: str(value) for name, value in message.items()},
        "text": _body(message, "plain"),
        "html": _body(message, "html"),
        "attachments": [
            {
                "filename": part.get_filename(),
                "content_type": part.get_content_type(),
                "size": len(part.get_payload(decode=True) or b""),
            }
            for part in message.iter_attachments()
        ],
        "size": len(raw),
    }


class MailSink:
    """aiosmtpd handler: authenticates against the settings and stores each message it accepts."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self._ids = itertools.count(1)  # never reused, also after a clear

    def authenticate(self, server, session, envelope, mechanism: str, auth_data) -> AuthResult:
        settings = self.state.settings
        ok = (
            isinstance(auth_data, LoginPassword)
            and hmac.compare_digest(auth_data.login, settings.smtp_user.encode())
            and hmac.compare_digest(auth_data.password, settings.smtp_password.encode())
        )
        if not ok:  # handled=False: aiosmtpd answers "535 5.7.8 Authentication credentials invalid"
            return AuthResult(success=False, handled=False)
        # the session keeps auth_data: the login, not the password
        return AuthResult(success=True, auth_data=LoginPassword(auth_data.login, b""))

    async def handle_DATA(self, server, session, envelope) -> str:
        record = {
            "id": next(self._ids),
            "received_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "login": session.auth_data.login.decode(errors="replace"),
            "mail_from": envelope.mail_from,
            "rcpt_to": list(envelope.rcpt_tos),
        }
        record |= parse(envelope.original_content)
        self.state.mail.append(record)
        return "250 2.0.0 Message accepted"


def _protocol(sink: MailSink, loop: asyncio.AbstractEventLoop) -> SMTP:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_REQUIRES_TLS_WARNING)
        return SMTP(
            sink,
            hostname=HOSTNAME,  # else aiosmtpd resolves the machine's FQDN on every connection
            authenticator=sink.authenticate,
            auth_required=True,
            auth_require_tls=False,  # local: AUTH over plain TCP
            loop=loop,
        )


async def start(state: AppState, sock: socket.socket) -> asyncio.AbstractServer:
    """Serve SMTP on an already bound socket, in the running loop."""
    loop = asyncio.get_running_loop()
    sink = MailSink(state)
    return await loop.create_server(lambda: _protocol(sink, loop), sock=sock)
