"""Mailchimp's HTTP conventions: problem-JSON errors and count/offset paging."""

from __future__ import annotations

import uuid

from sandbox.config import LIST_ID
from sandbox.web import Call, Reply, VendorError

ERROR_DOCS = "https://mailchimp.com/developer/marketing/docs/errors/"
PROBLEM_TYPE = "application/problem+json; charset=utf-8"
MAX_COUNT = 1000

TITLES = {
    400: "Invalid Resource",
    401: "API Key Invalid",
    404: "Resource Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
DETAILS = {
    401: "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
    404: "The requested resource could not be found.",
    405: "The requested method and resource are not compatible. See the Allow header for this "
    "resource's available methods.",
    500: "An unexpected internal error has occurred. Please contact Support for more information.",
    502: "An unexpected internal error has occurred. Please contact Support for more information.",
    503: "This service is temporarily unavailable. Please try again later.",
    504: "The request timed out. Please try again later.",
}
INVALID_DETAIL = (
    "The resource submitted could not be validated. For field-specific details, see the 'errors' array."
)


def problem(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    errors: list[dict] | None = None,
    headers: dict | None = None,
) -> Reply:
    body = {
        "type": ERROR_DOCS,
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail or DETAILS.get(status, ""),
        "instance": str(uuid.uuid4()),
    }
    if errors:
        body["errors"] = errors
    return Reply(status, body, headers=dict(headers or {}), media_type=PROBLEM_TYPE)


def fail(status: int, detail: str | None = None, **kwargs) -> VendorError:
    return VendorError(problem(status, detail, **kwargs))


def invalid(errors: list[dict], detail: str = INVALID_DETAIL) -> VendorError:
    return fail(400, detail, errors=errors)


def paging(call: Call) -> tuple[int, int]:
    """Mailchimp's count (default 10, at most 1000) and offset."""
    count = call.qint("count", 10, minimum=1, maximum=MAX_COUNT)
    return count, call.qint("offset", 0)


def require_list(call: Call) -> str:
    list_id = call.params["list_id"]
    if list_id != LIST_ID:
        raise fail(404)
    return list_id
