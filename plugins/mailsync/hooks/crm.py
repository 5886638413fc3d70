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

MAX_BATCH = 100  # HubSpot's limit for batch read/update/upsert
SEARCH_PAGE = 200  # HubSpot's largest search page
SEARCH_WINDOW = 10_000  # a search can page through at most 10,000 results


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

    def iter_modified_contacts(
        self, properties: list[str], start: datetime, end: datetime
    ) -> Iterator[list[dict]]:
        """Contacts with lastmodifieddate in [start, end), sorted by it.

        A HubSpot search pages through at most 10,000 results, so after each window the search
        starts again from the last modification time seen; contacts already returned at exactly
        that time are skipped, so none is returned twice and none is missed.
        """
        low, seen_at_low = _ms(start), set()
        while True:
            last_ms, ids_at_last = low, set()
            after = 0
            while after < SEARCH_WINDOW:
                body = self._search(properties, low, _ms(end), after)
                results = body.get("results", [])
                fresh = [r for r in results if r["id"] not in seen_at_low]
                if fresh:
                    yield [_flat(r) for r in fresh]
                for r in results:
                    stamp = _stamp_ms(r)
                    if stamp != last_ms:
                        last_ms, ids_at_last = stamp, set()
                    ids_at_last.add(r["id"])
                next_after = (body.get("paging") or {}).get("next", {}).get("after")
                if not next_after:
                    return
                after = int(next_after)
            if last_ms == low and ids_at_last <= seen_at_low:
                raise VendorError(
                    f"CRM search: more than {SEARCH_WINDOW} contacts share lastmodifieddate {low} ms; "
                    "use full_refresh for this interval"
                )
            seen_at_low = ids_at_last | (seen_at_low if last_ms == low else set())
            low = last_ms

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
    def update_contacts(
        self, updates: Iterable[dict[str, Any]], *, id_property: str = "email", concurrency: int | None = None
    ) -> Iterator[BatchResult]:
        """Batch update (≤ 100 per call) contacts found by `id_property`; never creates one.

        Each update is {"id": <value of id_property>, "properties": {...}}. Contacts the CRM does
        not know come back rejected with reason `unknown_contact`. HubSpot refuses a whole
        batch for one invalid input; such a batch is split until the bad input stands alone, so
        one bad record never costs the others.
        """

        def send(batch: list[dict]) -> BatchResult:
            return self._update_batch([{**u, "idProperty": id_property} for u in batch])

        yield from self.run_concurrently(send, batched(updates, self.batch_size), concurrency=concurrency)

    def _update_batch(self, inputs: list[dict]) -> BatchResult:
        response = self.call(
            "POST",
            "crm/v3/objects/contacts/batch/update",
            json={"inputs": inputs},
            ok=(200, 207, 400),
            write=True,
        )
        if response.status_code == 400:
            if len(inputs) == 1:
                return BatchResult([], [{"key": _key(inputs[0]), "reason": self._describe_error(response)}])
            half = len(inputs) // 2
            left, right = self._update_batch(inputs[:half]), self._update_batch(inputs[half:])
            return BatchResult(
                left.accepted + right.accepted, left.rejected + right.rejected, 1 + left.calls + right.calls
            )
        body = response.json()
        unknown: dict[str, str] = {}
        for error in body.get("errors", []):
            ids = (error.get("context") or {}).get("ids", [])
            reason = (
                "unknown_contact" if error.get("category") == "OBJECT_NOT_FOUND" else error.get("message", "")
            )
            unknown.update({str(i).strip().lower(): reason for i in ids})
        accepted = [{"key": _key(i)} for i in inputs if _key(i) not in unknown]
        rejected = [{"key": k, "reason": r} for k, r in unknown.items()]
        return BatchResult(accepted, rejected)


def _key(update: dict) -> str:
    return str(update["id"]).strip().lower()


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
