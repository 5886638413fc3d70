"""The request pipeline shared by the three vendor apps.

Each vendor module supplies plain synchronous handlers ``handler(call) -> Reply`` and its own error
bodies; this module wraps them into Starlette endpoints that apply, in order: authentication,
fault switches (latency, 429, 5xx burst, drop), the vendor's rate limiter, the handler inside one
SQLite transaction, the request log, and the ``slow`` delay. Handlers never await, so one request's
SQL work cannot interleave with another's.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox import esp_fields, store
from sandbox.config import GenParams, Settings
from sandbox.faults import Decision, FaultBook, RecordSelector
from sandbox.timefmt import Clock

log = logging.getLogger("sandbox")
_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode


class _DropNoise(logging.Filter):
    """uvicorn logs an error for the response the ``drop`` fault cuts short on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


logging.getLogger("uvicorn.error").addFilter(_DropNoise())


@dataclass
class AppState:
    """What all servers share: the one DB connection, the switches, the clock, the data set, the mail."""

    settings: Settings
    db: sqlite3.Connection
    params: GenParams
    faults: FaultBook = field(default_factory=FaultBook)
    clock: Clock = field(default_factory=Clock)
    ports: dict[str, int] = field(default_factory=dict)
    host_key: str = ""
    mail: list[dict] = field(default_factory=list)  # what the mail sink accepted (sandbox/mail.py)

    @property
    def sftp_root(self) -> Path:
        return self.settings.sftp_root


@dataclass
class Reply:
    """A handler's answer plus what the request log should record about it."""

    status: int = 200
    body: object = None
    headers: dict[str, str] = field(default_factory=dict)
    keys: list[str] | None = None
    n_records: int = 0
    n_returned: int = 0
    media_type: str = "application/json; charset=utf-8"


class VendorError(Exception):
    """Raised by a handler to answer with a vendor error; the transaction is rolled back."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class Call:
    """One incoming API call as a handler sees it."""

    def __init__(
        self,
        request: Request,
        raw: bytes,
        state: AppState,
        vendor: Vendor,
        records: RecordSelector | None,
        truncate: bool = False,
    ) -> None:
        self.request = request
        self.method = request.method
        self.path = request.url.path
        self.params = request.path_params
        self.query = request.query_params
        self.raw = raw
        self.state = state
        self.db = state.db
        self.vendor = vendor
        self.now_ms = state.clock.now_ms()
        self.records = records
        self.truncate = truncate  # the `truncate` fault: end a listing at this page
        self.base_url = f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"

    def json(self) -> object:
        try:
            return _decode(self.raw) if self.raw else None
        except msgspec.DecodeError as exc:
            raise VendorError(self.vendor.bad_request(f"The request body is not valid JSON: {exc}")) from exc

    def reject_record(self, key: str) -> bool:
        """True when the ``record_errors`` fault rejects this record."""
        return self.records is not None and self.records(key)

    def qint(self, name: str, default: int, *, maximum: int | None = None, minimum: int = 0) -> int:
        raw = self.query.get(name)
        if raw in (None, ""):
            return default
        try:
            value = int(raw)
        except ValueError:
            raise VendorError(self.vendor.bad_request(f"'{name}' must be an integer")) from None
        if value < minimum or (maximum is not None and value > maximum):
            limit = f" and {maximum}" if maximum is not None else ""
            raise VendorError(self.vendor.bad_request(f"'{name}' must be between {minimum}{limit}"))
        return value


Handler = Callable[[Call], Reply]


class Vendor:
    """Base of the three vendor apps: what differs is routes, auth, error bodies and limits."""

    system = ""

    def routes(self) -> list[tuple[str, list[str], Handler]]:
        raise NotImplementedError

    def credential(self, request: Request) -> str | None:
        raise NotImplementedError

    def authorized(self, state: AppState, credential: str | None) -> bool:
        raise NotImplementedError

    def unauthorized(self) -> Reply:
        raise NotImplementedError

    def too_many_requests(self, retry_after: str, *, vendor_limit: bool) -> Reply:
        raise NotImplementedError

    def server_error(self, status: int) -> Reply:
        raise NotImplementedError

    def bad_request(self, message: str) -> Reply:
        raise NotImplementedError

    def not_found(self) -> Reply:
        raise NotImplementedError

    def method_not_allowed(self) -> Reply:
        raise NotImplementedError

    def limit(
        self, state: AppState, credential: str | None, method: str, path: str
    ) -> tuple[dict[str, str], Reply | None]:
        """Headers every response carries, and a 429 when the vendor's own limiter is exhausted."""
        return {}, None


class DroppedResponse:
    """Promise a body with Content-Length, send two bytes, then let uvicorn close the socket."""

    async def __call__(self, scope, receive, send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"', "more_body": True})


def to_response(reply: Reply) -> Response:
    if reply.body is None:
        return Response(status_code=reply.status, headers=reply.headers)
    return Response(
        _encode(reply.body), status_code=reply.status, headers=reply.headers, media_type=reply.media_type
    )


def write_log(
    state: AppState,
    system: str,
    request: Request,
    status: int,
    reply: Reply | None,
    fault: str | None,
    served_s: float | None = None,
) -> None:
    keys = reply.keys if reply is not None else None
    store.log_request(
        state.db,
        (
            system,
            request.method,
            request.url.path,
            request.url.query,
            status,
            datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            reply.n_records if reply else 0,
            reply.n_returned if reply else 0,
            store.dumps(keys) if keys else None,
            fault,
            None if served_s is None else round(served_s * 1000, 3),
        ),
    )


def execute(state: AppState, vendor: Vendor, handler: Handler, call: Call) -> Reply:
    """Run a handler in one transaction; vendor errors roll back, crashes become a vendor 500."""
    db = state.db
    db.execute("BEGIN")
    try:
        reply = handler(call)
    except VendorError as exc:
        db.execute("ROLLBACK")
        return exc.reply
    except Exception:
        db.execute("ROLLBACK")
        log.exception("handler %s %s failed", call.method, call.path)
        return vendor.server_error(500)
    db.execute("COMMIT")
    return reply


def endpoint(vendor: Vendor, state: AppState, handler: Handler):
    system = vendor.system

    async def run(request: Request):
        raw = await request.body()
        credential = vendor.credential(request)
        flights = state.faults.in_flight
        flights[credential] = flights.get(credential, 0) + 1
        try:
            started = time.perf_counter()  # served_ms: the sandbox's own time (no awaits but the latency)
            decision = Decision()
            if not vendor.authorized(state, credential):
                reply = vendor.unauthorized()
            else:
                decision = state.faults.decide(system, request.method, request.url.path)
                if decision.latency_s:
                    await asyncio.sleep(decision.latency_s)
                    started = time.perf_counter()
                headers, limited = vendor.limit(state, credential, request.method, request.url.path)
                if limited is not None:
                    decision.labels.append("rate_limit(vendor)")
                    reply = limited
                elif decision.reject_status == 429:
                    reply = vendor.too_many_requests(decision.retry_after, vendor_limit=False)
                elif decision.reject_status:
                    reply = vendor.server_error(decision.reject_status)
                elif decision.drop:
                    write_log(state, system, request, 0, None, decision.label())
                    return DroppedResponse()
                else:
                    call = Call(request, raw, state, vendor, decision.records, decision.truncate)
                    reply = execute(state, vendor, handler, call)
                    if system == "esp":  # Mailchimp's partial responses
                        reply = esp_fields.shape(reply, request.query_params)
                reply.headers.update(headers)
            response = to_response(reply)
            served = time.perf_counter() - started
            write_log(state, system, request, reply.status, reply, decision.label(), served)
            if decision.slow_s:
                await asyncio.sleep(decision.slow_s)
            return response
        finally:
            flights[credential] -= 1

    return run


def build_app(vendor: Vendor, state: AppState, admin: list[Route]) -> Starlette:
    routes = list(admin)
    for path, methods, handler in vendor.routes():
        routes.append(Route(path, endpoint(vendor, state, handler), methods=methods))

    async def not_found(request: Request, exc: Exception) -> Response:
        reply = vendor.not_found()
        write_log(state, vendor.system, request, reply.status, reply, None)
        return to_response(reply)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        reply = vendor.method_not_allowed()
        write_log(state, vendor.system, request, reply.status, reply, None)
        return to_response(reply)

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
