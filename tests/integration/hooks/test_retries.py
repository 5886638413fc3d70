"""VendorHttpHook's retry policy, call by call: what is retried, how long it waits, when it gives
up, and that the call statistics count every try exactly.

Against the sandbox ESP, except `Retry-After` as an HTTP date: the sandbox's vendors send
seconds (as Mailchimp, HubSpot and Shopify do), so a small real HTTP server in the test sends
the date form RFC 9110 also allows.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mailsync.hooks.base import VendorError, VendorUnavailable
from mailsync.hooks.esp import EspHook
from tests.connections import variant


def esp_with(connections, conn_id: str, **extra) -> EspHook:
    return EspHook(variant(connections, "esp_default", conn_id, extra=extra))


def retry_lines(capfd) -> list[str]:
    """The hook's warning per retry, from the task log (structlog writes it to stdout)."""
    return re.findall(r"\[warning\s*\] (ESP .*?, retry \d+ in [\d.]+s) ", capfd.readouterr().out)


def test_retry_after_seconds_is_waited_and_logged_once_per_retry(vendors, capfd):
    vendors.set_faults("esp", rate_limit={"next": 2, "retry_after": 0.6, "path": "/3.0/ping"})
    hook = EspHook()
    started = time.monotonic()
    assert hook.call("GET", "ping").status_code == 200
    assert time.monotonic() - started >= 1.2  # two waits of 0.6 s, as the vendor asked
    assert hook.stats.as_dict() == {"api_calls": 3, "write_calls": 0, "retries": 2}
    assert retry_lines(capfd) == [
        "ESP GET ping: HTTP 429, retry 1 in 0.6s",
        "ESP GET ping: HTTP 429, retry 2 in 0.6s",
    ]


def test_a_retry_after_longer_than_the_budget_gives_up_at_once(vendors, connections):
    vendors.set_faults("esp", rate_limit={"next": 5, "retry_after": 60, "path": "/3.0/ping"})
    hook = esp_with(connections, "esp_budget_5s", retry_budget=5)
    started = time.monotonic()
    with pytest.raises(VendorUnavailable) as err:
        hook.call("GET", "ping")
    assert time.monotonic() - started < 2  # never started the 60 s wait
    assert str(err.value) == (
        "ESP GET ping: still failing after 1 attempt(s) in 0s (HTTP 429); gave up (retry budget 5s, "
        "connection esp_budget_5s). The service is down or throttling: rerun the task later."
    )
    assert hook.stats.as_dict() == {"api_calls": 1, "write_calls": 0, "retries": 0}
    assert len([r for r in vendors.requests("esp") if r["path"] == "/3.0/ping"]) == 1


def test_max_attempts_bounds_the_tries_and_each_is_counted(vendors, connections):
    vendors.set_faults("esp", status_burst={"count": 100, "status": 502})
    hook = esp_with(connections, "esp_three_tries", max_attempts=3, retry_budget=60)
    with pytest.raises(VendorUnavailable, match=r"still failing after 3 attempt\(s\) in \d+s \(HTTP 502\)"):
        hook.call("POST", f"lists/{hook.list_id}", json={"members": [], "update_existing": True}, write=True)
    assert hook.stats.as_dict() == {"api_calls": 3, "write_calls": 3, "retries": 2}
    assert len(vendors.requests("esp")) == 3


def test_dropped_connections_and_timeouts_are_retried_without_counting_a_call(vendors, connections, capfd):
    vendors.set_faults("esp", drop={"count": 1, "path": "/3.0/ping"})
    hook = esp_with(connections, "esp_timeout_1s", timeout=1)
    assert hook.call("GET", "ping").status_code == 200
    vendors.set_faults("esp", slow={"count": 1, "seconds": 2, "path": "/3.0/ping"})
    assert hook.call("GET", "ping").status_code == 200
    # calls count answers; a try that got none is a retry only
    assert hook.stats.as_dict() == {"api_calls": 2, "write_calls": 0, "retries": 2}
    problems = [line.split(": ")[1].split(",")[0] for line in retry_lines(capfd)]
    assert problems[0] in ("ChunkedEncodingError", "ConnectionError") and problems[1] == "ReadTimeout"


def test_other_4xx_are_never_retried_and_listed_ones_are_returned(vendors):
    hook = EspHook()
    with pytest.raises(VendorError) as err:
        hook.call("GET", "lists/no-such-list")
    assert err.value.status == 404 and not isinstance(err.value, VendorUnavailable)
    assert hook.call("GET", "lists/no-such-list", ok=(404,)).status_code == 404
    assert hook.stats.as_dict() == {"api_calls": 2, "write_calls": 0, "retries": 0}


# -- Retry-After as an HTTP date ---------------------------------------------------------------------


class _DatedThrottle(BaseHTTPRequestHandler):
    """429 with `Retry-After: <HTTP date>` to the first `throttle` requests, then 200 `{}`."""

    server: ThreadingHTTPServer

    def do_GET(self) -> None:
        state = self.server.state  # type: ignore[attr-defined]
        state["seen"] += 1
        if state["seen"] <= state["throttle"]:
            self.send_response(429)
            self.send_header("Retry-After", formatdate(time.time() + state["in_s"], usegmt=True))
            body = b'{"title": "Too Many Requests"}'
        else:
            self.send_response(200)
            body = b"{}"
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def dated_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DatedThrottle)
    server.state = {"seen": 0, "throttle": 1, "in_s": 0}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _hook_on(server, connections, conn_id: str, **extra) -> EspHook:
    host = f"http://127.0.0.1:{server.server_address[1]}/3.0"
    return EspHook(variant(connections, "esp_default", conn_id, host=host, extra=extra))


def test_retry_after_as_an_http_date_is_waited_until_that_moment(dated_server, connections, capfd):
    dated_server.state.update(throttle=1, in_s=3)
    hook = _hook_on(dated_server, connections, "esp_dated")
    started = time.monotonic()
    assert hook.call("GET", "ping").status_code == 200
    waited = time.monotonic() - started
    assert 1.5 <= waited < 4  # the date has whole seconds: 2-3 s from when it was written
    [line] = retry_lines(capfd)
    assert line.startswith("ESP GET ping: HTTP 429, retry 1 in ")
    assert 1.5 <= float(line.rsplit(" ", 1)[1].rstrip("s")) <= 3.0
    assert hook.stats.as_dict() == {"api_calls": 2, "write_calls": 0, "retries": 1}


def test_a_past_http_date_retries_at_once(dated_server, connections):
    dated_server.state.update(throttle=2, in_s=-30)
    hook = _hook_on(dated_server, connections, "esp_dated_past")
    started = time.monotonic()
    assert hook.call("GET", "ping").status_code == 200
    assert time.monotonic() - started < 1
    assert hook.stats.as_dict() == {"api_calls": 3, "write_calls": 0, "retries": 2}


def test_an_http_date_past_the_budget_gives_up_without_waiting(dated_server, connections):
    dated_server.state.update(throttle=100, in_s=3600)
    hook = _hook_on(dated_server, connections, "esp_dated_far", retry_budget=30)
    started = time.monotonic()
    with pytest.raises(VendorUnavailable, match=r"after 1 attempt\(s\) .*rerun the task later"):
        hook.call("GET", "ping")
    assert time.monotonic() - started < 2
    assert dated_server.state["seen"] == 1
