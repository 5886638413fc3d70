"""The SHOP app: Shopify Admin REST orders under ``/admin/api/{version}/``.

Cursor paging through the ``Link`` header as Shopify does it: the opaque ``page_info`` carries the
filters, so with ``page_info`` only ``limit`` and ``fields`` may be sent (anything else is a 400).
The default ``status`` is ``open``, exactly the trap Shopify sets: a client that forgets
``status=any`` misses closed and cancelled orders. Times are in the shop's zone (Europe/Berlin).
The leaky bucket is always counted for ``X-Shopify-Shop-Api-Call-Limit``; it only answers 429
when switched on (``rate_limit: {"vendor": true}``), so tests are not slowed by surprise.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from starlette.requests import Request

from sandbox import store
from sandbox.timefmt import SHOP_TZ, parse_instant
from sandbox.web import AppState, Call, Reply, Vendor, VendorError

DEFAULT_LIMIT, MAX_LIMIT = 50, 250
_VERSION = re.compile(r"^\d{4}-(01|04|07|10)$|^unstable$")
_STATES = {"open", "closed", "cancelled", "any"}
_FINANCIAL = {
    "authorized",
    "pending",
    "paid",
    "partially_paid",
    "refunded",
    "voided",
    "partially_refunded",
    "any",
    "unpaid",
}
_TIME_FILTERS = {
    "updated_at_min": ("updated_ms", ">="),
    "updated_at_max": ("updated_ms", "<="),
    "created_at_min": ("created_ms", ">="),
    "created_at_max": ("created_ms", "<="),
}
_PAGE_INFO_COMPANIONS = {"page_info", "limit", "fields"}


def _errors(status: int, errors: object) -> Reply:
    return Reply(status, {"errors": errors})


def _bad(name: str, message: str = "Invalid value.") -> VendorError:
    return VendorError(_errors(400, {name: message}))


def _check_version(call: Call) -> str:
    version = call.params["version"]
    if not _VERSION.match(version):
        raise VendorError(_errors(404, "Not Found"))
    return version


def _filters(call: Call) -> dict:
    """The filter set of a first-page request, in a form a cursor can carry."""
    status = call.query.get("status", "open")
    if status not in _STATES:
        raise _bad("status")
    financial = call.query.get("financial_status", "any")
    if financial not in _FINANCIAL:
        raise _bad("financial_status")
    out: dict = {"status": status, "financial_status": financial}
    for name in _TIME_FILTERS:
        if call.query.get(name):
            try:
                out[name] = parse_instant(call.query[name], naive_tz=SHOP_TZ)
            except ValueError:
                raise _bad(name) from None
    if call.query.get("since_id"):
        if not call.query["since_id"].isdigit():
            raise _bad("since_id")
        out["since_id"] = int(call.query["since_id"])
    if call.query.get("ids"):
        try:
            out["ids"] = [int(i) for i in call.query["ids"].split(",") if i.strip()]
        except ValueError:
            raise _bad("ids") from None
    return out


def _where(filters: dict) -> tuple[list[str], list]:
    where, args = [], []
    if filters["status"] != "any":
        where.append("state = ?")
        args.append(filters["status"])
    if filters["financial_status"] == "unpaid":
        where.append("financial_status IN ('pending', 'authorized', 'partially_paid')")
    elif filters["financial_status"] != "any":
        where.append("financial_status = ?")
        args.append(filters["financial_status"])
    for name, (column, op) in _TIME_FILTERS.items():
        if name in filters:
            where.append(f"{column} {op} ?")
            args.append(filters[name])
    if "since_id" in filters:
        where.append("id > ?")
        args.append(filters["since_id"])
    if "ids" in filters:
        where.append(f"id IN ({','.join('?' * len(filters['ids'])) or 'NULL'})")
        args.extend(filters["ids"])
    return where, args


def _encode_cursor(filters: dict, last_id: int, direction: str) -> str:
    raw = json.dumps({"f": filters, "id": last_id, "d": direction}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str) -> tuple[dict, int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        return data["f"], int(data["id"]), data["d"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise _bad("page_info") from None


def _fields(call: Call, doc: dict) -> dict:
    wanted = call.query.get("fields")
    if not wanted:
        return doc
    names = [n.strip() for n in wanted.split(",")]
    return {n: doc[n] for n in names if n in doc}


def list_orders(call: Call) -> Reply:
    version = _check_version(call)
    limit = min(call.qint("limit", DEFAULT_LIMIT, minimum=1), MAX_LIMIT)
    page_info = call.query.get("page_info")
    if page_info:
        if set(call.query.keys()) - _PAGE_INFO_COMPANIONS:
            raise _bad("page_info")
        filters, anchor, direction = _decode_cursor(page_info)
    else:
        filters, anchor, direction = _filters(call), 0, "next"
    where, args = _where(filters)
    if direction == "next":
        where.append("id > ?")
        order = "ASC"
    else:
        where.append("id < ?")
        order = "DESC"
    sql_where = " AND ".join(where)
    rows = call.db.execute(
        f"SELECT id, doc FROM shop_orders WHERE {sql_where} ORDER BY id {order} LIMIT ?",
        [*args, anchor, limit + 1],
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    if direction == "prev":
        rows.reverse()
    has_next = more if direction == "next" else True
    has_prev = bool(page_info) and (more if direction == "prev" else True)
    links = []
    extra = f"&fields={call.query['fields']}" if call.query.get("fields") else ""
    base = f"{call.base_url}/admin/api/{version}/orders.json?limit={limit}{extra}&page_info="
    if rows and has_prev:
        links.append(f'<{base}{_encode_cursor(filters, rows[0][0], "prev")}>; rel="previous"')
    if rows and has_next:
        links.append(f'<{base}{_encode_cursor(filters, rows[-1][0], "next")}>; rel="next"')
    orders = [_fields(call, store.loads(doc)) for _, doc in rows]
    reply = Reply(body={"orders": orders}, n_returned=len(orders))
    if links:
        reply.headers["Link"] = ", ".join(links)
    return reply


def count_orders(call: Call) -> Reply:
    _check_version(call)
    where, args = _where(_filters(call))
    sql_where = (" WHERE " + " AND ".join(where)) if where else ""
    count = call.db.execute(f"SELECT COUNT(*) FROM shop_orders{sql_where}", args).fetchone()[0]
    return Reply(body={"count": count})


def get_order(call: Call) -> Reply:
    _check_version(call)
    row = call.db.execute("SELECT doc FROM shop_orders WHERE id = ?", (call.params["order_id"],)).fetchone()
    if row is None:
        raise VendorError(_errors(404, "Not Found"))
    return Reply(body={"order": _fields(call, store.loads(row[0]))}, n_returned=1)


ROUTES = [
    ("/admin/api/{version}/orders.json", ["GET"], list_orders),
    ("/admin/api/{version}/orders/count.json", ["GET"], count_orders),
    ("/admin/api/{version}/orders/{order_id:int}.json", ["GET"], get_order),
]


class Shopify(Vendor):
    system = "shop"

    def routes(self):
        return ROUTES

    def credential(self, request: Request) -> str | None:
        return request.headers.get("x-shopify-access-token")

    def authorized(self, state: AppState, credential: str | None) -> bool:
        return credential == state.settings.shop_token

    def unauthorized(self) -> Reply:
        return _errors(401, "[API] Invalid API key or access token (unrecognized login or wrong password)")

    def too_many_requests(self, retry_after: str, *, vendor_limit: bool) -> Reply:
        reply = _errors(
            429,
            "Exceeded 2 calls per second for api client. Reduce request rates to resume "
            "uninterrupted service.",
        )
        reply.headers["Retry-After"] = retry_after
        return reply

    def server_error(self, status: int) -> Reply:
        return _errors(
            status,
            {
                500: "Internal Server Error",
                502: "Bad Gateway",
                503: "Unavailable Shop",
                504: "Gateway Timeout",
            }[status],
        )

    def bad_request(self, message: str) -> Reply:
        return _errors(400, message)

    def not_found(self) -> Reply:
        return _errors(404, "Not Found")

    def method_not_allowed(self) -> Reply:
        return _errors(406, "Not Acceptable")

    def limit(self, state: AppState, credential, method, path):
        cfg = state.faults.vendor_limit(self.system, method, path)
        headers, over = state.faults.shop_bucket.hit(cfg)
        version = path.split("/")[3] if path.startswith("/admin/api/") else ""
        if version:
            headers["X-Shopify-API-Version"] = version
        if over:
            return headers, self.too_many_requests("2.0", vendor_limit=True)
        return headers, None
