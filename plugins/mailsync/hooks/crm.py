"""The CRM: HubSpot CRM v3 contacts over an ordinary `http` connection.

Connection `crm_default`: host = https://api.hubapi.com, password = private app token (sent
as a bearer token); extra: optional `max_connections` (default 4: HubSpot allows ~190 calls
per 10 s for private apps) and `batch_size` (≤ 100).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import requests

from mailsync.hooks.base import BatchResult, VendorError, VendorHttpHook, batched
from mailsync.pii import redact

MAX_BATCH = 100  # HubSpot's limit for batch read/update/upsert
SEARCH_PAGE = 200  # HubSpot's largest search page
SEARCH_WINDOW = 10_000  # a search can page through at most 10,000 results


class SearchWindowExceeded(VendorError):
    """More contacts share one modification time than a HubSpot search can page through."""


class BearerAuth(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def _ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


class CrmHook(VendorHttpHook):
    """HubSpot CRM v3 contacts: list, search by modification time, batch update by email."""

    default_conn_name = "crm_default"
    hook_name = "CRM (HubSpot CRM v3)"
    vendor = "CRM"
    option_keys = ("batch_size",)
    default_max_connections = 4

    def _auth(self, connection) -> BearerAuth:
        if not connection.password:
            raise VendorError(f"connection {self.http_conn_id!r} has no token (password field)")
        return BearerAuth(connection.password)

    @property
    def batch_size(self) -> int:
        return min(MAX_BATCH, int(self.options.get("batch_size", MAX_BATCH)))

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.call("GET", "crm/v3/objects/contacts", params={"limit": 1})
        except VendorError as exc:
            return False, str(exc)
        return True, "HubSpot answered with a contact page"

    # -- reads -------------------------------------------------------------------------------
    def iter_contacts(self, properties: list[str], *, archived: bool = False) -> Iterator[list[dict]]:
        """Every contact (or every archived one), by `after` cursor, 100 per page."""
        params: dict[str, Any] = {
            "limit": 100,
            "properties": ",".join(properties),
            "archived": str(archived).lower(),
        }
        after = None
        while True:
            body = self.call(
                "GET", "crm/v3/objects/contacts", params={**params, **({"after": after} if after else {})}
            ).json()
            results = body.get("results", [])
            if results:
                yield [_flat(r) for r in results]
            after = (body.get("paging") or {}).get("next", {}).get("after")
            if not after:
                return

    def count_contacts(self) -> int:
        """How many (unarchived) contacts the CRM holds: the search's `total` of an unfiltered query,
        to tell a complete listing from one that ended early."""
        body = {"filterGroups": [], "properties": ["hs_object_id"], "limit": 1}
        return int(self.call("POST", "crm/v3/objects/contacts/search", json=body).json()["total"])

    def iter_modified_contacts(
        self, properties: list[str], start: datetime, end: datetime
    ) -> Iterator[list[dict]]:
        """Contacts with lastmodifieddate in [start, end), sorted by it, each exactly once.

        Keyset paging: every page searches again from the last modification time seen, skipping
        the contacts already returned at exactly that time. Offsets (`after`) would skip rows
        when a contact is edited while we page (the result set shifts), and a search cannot page
        past 10,000 results anyway; offsets are used only among contacts sharing one timestamp.
        """
        low, seen_at_low, offset = _ms(start), set(), 0
        while True:
            body = self._search(properties, low, _ms(end), offset)
            results = body.get("results", [])
            fresh = [r for r in results if r["id"] not in seen_at_low]
            if fresh:
                yield [_flat(r) for r in fresh]
            if not (body.get("paging") or {}).get("next"):
                return
            last = _stamp_ms(results[-1])
            if last != low:  # move the window up; re-seen contacts at `last` are skipped
                low, offset = last, 0
                seen_at_low = {r["id"] for r in results if _stamp_ms(r) == last}
            else:  # a whole page at one timestamp: page on among them
                seen_at_low |= {r["id"] for r in results}
                offset += len(results)
                if offset >= SEARCH_WINDOW:
                    raise SearchWindowExceeded(
                        f"CRM search: more than {SEARCH_WINDOW} contacts share lastmodifieddate {low} ms; "
                        "list them all instead (full refresh)"
                    )

    def _search(self, properties: list[str], low: str, high: str, after: int) -> dict:
        body = {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "lastmodifieddate", "operator": "GTE", "value": low},
                        {"propertyName": "lastmodifieddate", "operator": "LT", "value": high},
                    ]
                }
            ],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
            "properties": properties,
            "limit": SEARCH_PAGE,
            "after": str(after),
        }
        return self.call("POST", "crm/v3/objects/contacts/search", json=body).json()

    # -- writes -----------------------------------------------------------------------------
    def ids_by_email(self, emails: list[str]) -> dict[str, str]:
        """Contact ids of up to 100 emails (batch read by email); unknown emails are left out."""
        body = {"idProperty": "email", "inputs": [{"id": e} for e in emails], "properties": ["email"]}
        response = self.call("POST", "crm/v3/objects/contacts/batch/read", json=body, ok=(200, 207))
        found = {}
        for result in response.json().get("results", []):
            email = ((result.get("properties") or {}).get("email") or "").strip().lower()
            found.setdefault(email, str(result["id"]))  # several contacts share an email: the first
        return found

    def update_contacts(
        self, updates: Iterable[dict[str, Any]], *, concurrency: int | None = None
    ) -> Iterator[BatchResult]:
        """Update contacts found by email, 100 per batch; never creates one.

        Each update is {"email": ..., "properties": {...}}. HubSpot's batch update goes by record
        id only (by email it answers "non-unique property"), so each batch first reads the ids of
        its emails (batch read by email), then updates by id: two calls per 100 contacts. Emails
        the CRM does not know come back rejected as `unknown_contact`. HubSpot refuses a whole
        batch for one invalid input; such a batch is split until the bad input stands alone — but
        when both halves fail the same way the error is not about one record (a missing custom
        property, say) and the task fails with it instead.
        """
        yield from self.run_concurrently(
            self._update_batch, batched(updates, self.batch_size), concurrency=concurrency
        )

    def _update_batch(self, updates: list[dict]) -> BatchResult:
        ids = self.ids_by_email([_key(u) for u in updates])
        known = [u for u in updates if _key(u) in ids]
        unknown = [{"key": _key(u), "reason": "unknown_contact"} for u in updates if _key(u) not in ids]
        inputs = [{"id": ids[_key(u)], "properties": u["properties"]} for u in known]
        result = self._update_by_id(inputs, [_key(u) for u in known]) if inputs else BatchResult()
        return BatchResult(result.accepted, result.rejected + unknown)

    def _post_update(self, inputs: list[dict]):
        response = self.call(
            "POST",
            "crm/v3/objects/contacts/batch/update",
            json={"inputs": inputs},
            ok=(200, 207, 400),
            write=True,
        )
        return response.status_code, response

    def _update_by_id(self, inputs: list[dict], keys: list[str], first=None) -> BatchResult:
        status, response = first or self._post_update(inputs)
        if status == 400:
            reason = self._describe_error(response)
            if len(inputs) == 1:
                return BatchResult([], [{"key": keys[0], "reason": redact(reason)[:300]}])
            half = len(inputs) // 2
            halves = [(inputs[:half], keys[:half]), (inputs[half:], keys[half:])]
            firsts = [self._post_update(part) for part, _ in halves]
            if all(st == 400 and self._describe_error(r) == reason for st, r in firsts):
                raise VendorError(
                    f"CRM refuses every contact of a batch: {redact(reason)[:300]} (not about one record)"
                )
            parts = [self._update_by_id(i, k, f) for (i, k), f in zip(halves, firsts, strict=True)]
            return BatchResult([a for p in parts for a in p.accepted], [r for p in parts for r in p.rejected])
        by_id = dict(zip((i["id"] for i in inputs), keys, strict=True))
        failed: dict[str, str] = {}
        for error in response.json().get("errors", []):
            reason = (
                "unknown_contact" if error.get("category") == "OBJECT_NOT_FOUND" else error.get("message", "")
            )
            failed.update(
                {by_id.get(str(i), str(i)): reason for i in (error.get("context") or {}).get("ids", [])}
            )
        return BatchResult(
            [{"key": k} for k in keys if k not in failed],
            [{"key": k, "reason": r} for k, r in failed.items()],
        )


def _key(update: dict) -> str:
    return str(update["email"]).strip().lower()


def _flat(result: dict) -> dict:
    """HubSpot nests properties; the extract wants one flat record per contact."""
    record = dict(result.get("properties") or {})
    record["hs_object_id"] = record.get("hs_object_id") or result.get("id")
    record["archived"] = bool(result.get("archived", False))
    record["archivedAt"] = result.get("archivedAt")
    return record


def _stamp_ms(result: dict) -> str:
    value = (result.get("properties") or {}).get("lastmodifieddate") or result.get("updatedAt")
    if value and not str(value).isdigit():
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return _ms(moment)
    return str(value)
