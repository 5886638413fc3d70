"""What every REST vendor hook shares: one pooled session, retries, bounded concurrency.

Built on the HTTP provider's `HttpHook` (the connection gives host, credentials, options), with
what it lacks for bulk work (shared/PITFALLS.md): the session is built once and reused (one
TCP connection per thread, a pool as large as the concurrency), transient failures are retried
(tenacity) with exponential backoff and jitter that honours `Retry-After`, within a bounded time
budget, and 4xx validation errors are never retried. Hooks return plain Python records; they know
nothing of contacts' business rules. The vendors' asynchronous bulk jobs (HubSpot exports, Mailchimp
batch operations) share the polling loop and the download of their pre-signed result files.
"""

from __future__ import annotations

import math
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cached_property
from typing import IO, Any, ClassVar, NoReturn

import requests
from airflow.providers.http.hooks.http import HttpHook
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_before_delay,
)

from mailsync.pii import redact

RETRYABLE_STATUS = {429, 500, 502, 503, 504}
TRANSIENT_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


class VendorError(Exception):
    """A call to a vendor failed for good; the message says what to check, never a secret or an email."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class VendorUnavailable(VendorError):
    """Transient failures went on past the retry budget (the service stayed down or throttled)."""


class JobFailed(VendorError):
    """A vendor's asynchronous job (an export, a batch) ended without its result."""


class JobTimeout(VendorError):
    """A vendor's asynchronous job did not finish within the time the caller allowed."""


@dataclass
class BatchResult:
    """Outcome of one batch call: which records the vendor took and which it refused, and why."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # each has "key" and "reason"


@dataclass
class CallStats:
    """Calls made by one hook instance (for the run report); safe to update from threads."""

    calls: int = 0
    retries: int = 0
    writes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, calls: int = 0, retries: int = 0, writes: int = 0) -> None:
        with self._lock:
            self.calls += calls
            self.retries += retries
            self.writes += writes

    def as_dict(self) -> dict[str, int]:
        return {"api_calls": self.calls, "write_calls": self.writes, "retries": self.retries}


class BearerAuth(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


class VendorHttpHook(HttpHook):
    """Base of the REST vendor hooks. Subclasses set the class attributes and `_auth`.

    Connection options (in the connection's extra, not sent as headers): `max_connections`
    (parallel calls), `timeout` (seconds per call), `retry_budget` (seconds spent retrying one
    call before giving up), `max_attempts`.
    """

    conn_type = "http"
    vendor: ClassVar[str] = "vendor"
    option_keys: ClassVar[tuple[str, ...]] = ()
    default_max_connections: ClassVar[int] = 4
    _common_options = ("max_connections", "timeout", "retry_budget", "max_attempts")

    def __init__(self, conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(method="GET", http_conn_id=conn_id or self.default_conn_name, **kwargs)
        self.stats = CallStats()

    # -- connection and session ---------------------------------------------------------------
    @cached_property
    def connection(self):
        return self.get_connection(self.http_conn_id)

    @cached_property
    def options(self) -> dict[str, Any]:
        return dict(self.connection.extra_dejson)

    @property
    def max_connections(self) -> int:
        return int(self.options.get("max_connections", self.default_max_connections))

    @cached_property
    def session(self) -> requests.Session:
        session = self.get_conn()
        for key in (*self.option_keys, *self._common_options):
            session.headers.pop(key, None)  # options live in extra too; they are not headers
        session.auth = self._auth(self.connection)
        adapter = HTTPAdapter(
            pool_connections=1, pool_maxsize=max(10, self.max_connections + 2), max_retries=0
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def _auth(self, connection) -> requests.auth.AuthBase | None:
        raise NotImplementedError

    def url(self, endpoint: str) -> str:
        if endpoint.startswith(("http://", "https://")):
            return endpoint
        return self.url_from_endpoint(endpoint)

    # -- one call, with retries ---------------------------------------------------------------
    def call(
        self,
        method: str,
        endpoint: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        ok: Iterable[int] = (200, 201, 204, 207),
        write: bool = False,
    ) -> requests.Response:
        """Send one request; retry transient failures; raise VendorError on anything else.

        Responses whose status is in `ok` are returned, as are other 4xx when the caller lists
        them in `ok` (e.g. 404 for "already gone"). 429/5xx and broken connections are retried.
        """
        ok = set(ok)
        timeout = float(self.options.get("timeout", 60))
        session = self.session  # builds the session and the base URL on first use
        url = self.url(endpoint)

        def attempt() -> requests.Response:
            response = session.request(method, url, params=params, json=json, timeout=(10, timeout))
            self.stats.add(calls=1, writes=1 if write else 0)
            if response.status_code not in ok and (
                response.status_code not in RETRYABLE_STATUS or self._quota_exhausted(response)
            ):
                raise self._error(method, endpoint, response)  # 4xx, a used-up quota: never retried
            return response

        return self._retrying(method, endpoint, ok)(attempt)

    def _retrying(self, method: str, endpoint: str, ok: set[int]) -> Retrying:
        """The retry policy of one call: 429/5xx answers (those not in `ok`) and broken connections,
        waiting what `Retry-After` says or else backing off, until `max_attempts` or until the next
        wait would end past `retry_budget` seconds after the first try."""
        budget = float(self.options.get("retry_budget", 300))
        max_attempts = int(self.options.get("max_attempts", 8))

        def log_retry(state: RetryCallState) -> None:
            self.stats.add(retries=1)
            self.log.warning(
                "%s %s %s: %s, retry %d in %.1fs",
                self.vendor,
                method,
                _path(endpoint),
                _problem(state),
                state.attempt_number,
                state.upcoming_sleep,
            )

        def give_up(state: RetryCallState) -> NoReturn:
            raise VendorUnavailable(
                f"{self.vendor} {method} {_path(endpoint)}: still failing after {state.attempt_number} "
                f"attempt(s) in {state.seconds_since_start:.0f}s ({_problem(state)}); gave up (retry budget "
                f"{budget:.0f}s, connection {self.http_conn_id}). The service is down or throttling: "
                "rerun the task later."
            )

        return Retrying(
            retry=retry_if_exception_type(TRANSIENT_ERRORS)
            | retry_if_result(lambda response: response.status_code not in ok),
            wait=_retry_wait,
            stop=stop_after_attempt(max_attempts) | stop_before_delay(budget),
            before_sleep=log_retry,
            retry_error_callback=give_up,
        )

    def _quota_exhausted(self, response: requests.Response) -> bool:
        """A 429 that waiting minutes will not lift (a daily quota); vendors that have one say so."""
        return False

    def _error(self, method: str, endpoint: str, response: requests.Response) -> VendorError:
        status = response.status_code
        hint = {
            429: "a quota that lasts until it resets (a daily limit): rerun the task after that",
            401: f"check the credentials of connection {self.http_conn_id!r}",
            403: f"the credentials of connection {self.http_conn_id!r} lack a permission",
            404: "the resource does not exist (check ids in the connection's extra)",
        }.get(status, "the request was refused")
        detail = redact(self._describe_error(response))[:500]
        return VendorError(
            f"{self.vendor} {method} {_path(endpoint)}: HTTP {status}: {detail} ({hint})", status
        )

    def _describe_error(self, response: requests.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return response.text[:200]
        if isinstance(body, dict):
            parts = [body.get(k) for k in ("title", "message", "detail", "errors", "category") if body.get(k)]
            return "; ".join(str(p) for p in parts) or str(body)[:200]
        return str(body)[:200]

    # -- asynchronous jobs: poll, then fetch the result file -----------------------------------
    def poll_job(
        self,
        what: str,
        read: Callable[[], dict],
        finished: Callable[[dict], bool],
        *,
        poll_interval_s: float,
        timeout_s: float,
        describe: Callable[[dict], str],
    ) -> dict:
        """Read a job's status every `poll_interval_s` until `finished` says so; return that status.

        Each read is one `call` (so 429/5xx are retried, `Retry-After` honoured, a 4xx raises).
        Raises JobTimeout when the job is still unfinished `timeout_s` after the first read; the
        message names the job (`what`) and its last status (`describe`), never a URL or data.
        """
        started = time.monotonic()
        reads = 0
        while True:
            state = read()
            reads += 1
            if finished(state):
                return state
            left = timeout_s - (time.monotonic() - started)
            if left <= 0:
                raise JobTimeout(
                    f"{self.vendor} {what}: not finished after {timeout_s:g}s ({reads} status reads, "
                    f"last: {describe(state)}); the vendor is slow or the job is stuck: rerun later or "
                    "allow a longer timeout"
                )
            time.sleep(min(poll_interval_s, left))

    @cached_property
    def _download_session(self) -> requests.Session:
        """A session with no credentials and no connection headers: result links are pre-signed
        (they carry their own signature), and they may point at another host, which must never
        see the vendor's API key or token."""
        session = requests.Session()
        adapter = HTTPAdapter(
            pool_connections=1, pool_maxsize=max(10, self.max_connections + 2), max_retries=0
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def download(self, url: str, *, what: str) -> IO[bytes]:
        """Fetch a pre-signed result file into a temporary file (rewound; the caller closes it).

        The same retry rules as `call` (429/5xx and broken or cut-short transfers are retried,
        the whole file again); any other status raises VendorError. `what` names the file in
        messages: the URL is never logged, its signature is a credential while it lasts.
        """
        timeout = float(self.options.get("timeout", 60))

        def attempt() -> requests.Response:
            saved = tempfile.TemporaryFile()  # noqa: SIM115 (handed to the caller, who closes it)
            try:
                with self._download_session.get(url, stream=True, timeout=(10, timeout)) as response:
                    self.stats.add(calls=1)
                    if response.status_code != 200:
                        saved.close()
                        if response.status_code in RETRYABLE_STATUS:
                            return response
                        raise VendorError(
                            f"{self.vendor} {what}: HTTP {response.status_code} fetching the result file "
                            "(its link may have expired: rerun the task)",
                            response.status_code,
                        )
                    for chunk in response.iter_content(1 << 20):
                        saved.write(chunk)
            except BaseException:
                saved.close()
                raise
            saved.seek(0)
            response.saved = saved  # the body, on disk: result files can be large
            return response

        return self._retrying("GET", what, {200})(attempt).saved

    # -- many calls, bounded concurrency --------------------------------------------------------
    def run_concurrently(
        self, work: Callable[[Any], BatchResult], items: Iterable[Any], *, concurrency: int | None = None
    ) -> Iterator[BatchResult]:
        """Run `work` over items with at most `concurrency` calls in flight; yield as each completes.

        On a failure no new work starts; the results of calls already in flight are still yielded
        (so the caller can record what the vendor acknowledged) before the first error is raised.
        """
        limit = max(1, concurrency or self.max_connections)
        items = iter(items)
        error: BaseException | None = None
        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix=f"{self.vendor}-io") as pool:
            pending: set[Future] = set()
            exhausted = False
            while True:
                while not exhausted and error is None and len(pending) < limit:
                    item = next(items, _END)
                    if item is _END:
                        exhausted = True
                        break
                    pending.add(pool.submit(work, item))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    exc = future.exception()
                    if exc is not None:
                        error = error or exc
                    else:
                        yield future.result()
        if error is not None:
            raise error


_END = object()


def batched(records: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _retry_wait(state: RetryCallState) -> float:
    """Seconds to wait before the next try: what the vendor's `Retry-After` says, else backoff."""
    if not state.outcome.failed:
        after = _retry_after(state.outcome.result())
        if after is not None:
            return after
    return _backoff(state.attempt_number)


def _backoff(attempt: int) -> float:
    """Exponential backoff with jitter: 0.5, 1, 2, 4 ... s (capped at 30 s), each times a random
    factor in [0.5, 1], so parallel callers that failed together do not retry together."""
    return random.uniform(0.5, 1.0) * min(30.0, 0.5 * 2 ** (attempt - 1))


def _retry_after(response: requests.Response) -> float | None:
    """`Retry-After` in seconds (RFC 9110: a number of seconds or an HTTP date), within 0-120 s;
    None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = _seconds_until(value)
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), 120.0)


def _seconds_until(http_date: str) -> float | None:
    """Seconds from now to an HTTP date ("Wed, 21 Oct 2026 07:28:00 GMT"); None if it is not one."""
    try:
        moment = parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # "-0000" means UTC (RFC 5322)
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime.now(UTC)).total_seconds()  # the date is a moment on the wall clock


def _problem(state: RetryCallState) -> str:
    """What went wrong on the last try, for the log and the give-up message (no URL, no body)."""
    if state.outcome.failed:
        return type(state.outcome.exception()).__name__
    return f"HTTP {state.outcome.result().status_code}"


def _path(endpoint: str) -> str:
    """The endpoint without query string (which may carry personal data) for messages."""
    return re.sub(r"\?.*$", "", endpoint)
