"""The ESP: Mailchimp Marketing API v3 over an ordinary `http` connection.

Connection `esp_default`: host = API base URL (https://<dc>.api.mailchimp.com/3.0), login =
any name, password = API key; extra: `list_id` (the audience), `store_id` (e-commerce store),
optional `batch_size` (≤ 500) and `max_connections` (Mailchimp allows 10 simultaneous
connections per key; default 10).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

from requests.auth import HTTPBasicAuth

from mailsync.hooks.base import BatchResult, VendorError, VendorHttpHook, batched
from mailsync.pii import redact

MAX_BATCH = 500  # Mailchimp's limit for POST /lists/{list_id}
# Only what the load needs back: the full answer repeats every member (~1 KB each), and parsing
# that would cost more CPU than sending the batch.
BATCH_FIELDS = (
    ",".join(
        f"{group}.{name}"
        for group in ("new_members", "updated_members")
        for name in ("email_address", "status")
    )
    + ",errors,total_created,total_updated,error_count"
)
PAGE = 1000  # Mailchimp's largest `count`


def subscriber_hash(email: str) -> str:
    """Mailchimp addresses a member by the MD5 of the lower-cased email."""
    return hashlib.md5(email.strip().lower().encode("utf-8"), usedforsecurity=False).hexdigest()


def _key(email: str | None) -> str:
    return (email or "").strip().lower()


class EspHook(VendorHttpHook):
    """Mailchimp Marketing API v3: audience members (batch upsert, archive), reports, e-commerce."""

    default_conn_name = "esp_default"
    hook_name = "ESP (Mailchimp Marketing API v3)"
    vendor = "ESP"
    option_keys = ("list_id", "store_id", "batch_size")
    default_max_connections = 10

    def _auth(self, connection) -> HTTPBasicAuth:
        return HTTPBasicAuth(connection.login or "mailsync", connection.password or "")

    @property
    def list_id(self) -> str:
        return self._required_option("list_id")

    @property
    def store_id(self) -> str:
        return self._required_option("store_id")

    @property
    def batch_size(self) -> int:
        return min(MAX_BATCH, int(self.options.get("batch_size", MAX_BATCH)))

    def _required_option(self, name: str) -> str:
        value = self.options.get(name)
        if not value:
            raise VendorError(f"connection {self.http_conn_id!r} has no `{name}` in its extra")
        return str(value)

    def test_connection(self) -> tuple[bool, str]:
        """Used by the UI's Test button: /ping, then the audience, so a wrong list id shows too."""
        try:
            self.call("GET", "ping")
            self.call("GET", f"lists/{self.list_id}", params={"fields": "id,name"})
        except VendorError as exc:
            return False, str(exc)
        return True, "Mailchimp answered and the audience exists"

    # -- members ----------------------------------------------------------------------------
    def iter_members(self, *, fields: str | None = None, status: str | None = None) -> Iterator[list[dict]]:
        params: dict[str, Any] = {"count": PAGE}
        if fields:
            params["fields"] = f"members.{fields.replace(',', ',members.')},total_items"
        if status:
            params["status"] = status
        yield from self._offset_pages(f"lists/{self.list_id}/members", "members", params)

    def upsert_members(
        self, members: Iterable[dict[str, Any]], *, concurrency: int | None = None
    ) -> Iterator[BatchResult]:
        """Batch subscribe/update (≤ 500 per call, in parallel); yield each batch's outcome.

        Replaying a batch is harmless (an upsert of the same values), so a batch whose answer
        was lost to a broken connection is simply sent again.
        """
        yield from self.run_concurrently(
            self._upsert_batch, batched(members, self.batch_size), concurrency=concurrency
        )

    def _upsert_batch(self, members: list[dict[str, Any]]) -> BatchResult:
        response = self.call(
            "POST",
            f"lists/{self.list_id}",
            params={"fields": BATCH_FIELDS},
            json={"members": members, "update_existing": True},
            write=True,
        )
        body = response.json()
        accepted = [
            {"key": _key(m.get("email_address")), "status": m.get("status"), "created": created}
            for created, group in ((True, "new_members"), (False, "updated_members"))
            for m in body.get(group, [])
        ]
        rejected = [
            {"key": _key(e.get("email_address")), "reason": _reason(e)} for e in body.get("errors", [])
        ]
        return BatchResult(accepted, rejected)

    def remove_members(
        self, emails: Iterable[str], *, permanently: bool = False, concurrency: int | None = None
    ) -> Iterator[BatchResult]:
        """Archive (or permanently delete, for erasure) members; one call each, as Mailchimp has it."""
        yield from self.run_concurrently(
            lambda email: self._remove(email, permanently), emails, concurrency=concurrency
        )

    def _remove(self, email: str, permanently: bool) -> BatchResult:
        member = f"lists/{self.list_id}/members/{subscriber_hash(email)}"
        if permanently:
            response = self.call("POST", f"{member}/actions/delete-permanent", ok=(200, 204, 404), write=True)
        else:
            response = self.call("DELETE", member, ok=(200, 204, 404), write=True)
        gone = "already absent" if response.status_code == 404 else "removed"
        status = "deleted" if permanently else "archived"
        return BatchResult([{"key": _key(email), "status": status, "outcome": gone}], [])

    def set_tags(
        self, changes: Iterable[tuple[str, list[dict]]], *, concurrency: int | None = None
    ) -> Iterator[BatchResult]:
        """Add or remove tags of members: (email, [{"name": tag, "status": "active"|"inactive"}])."""

        def post(change: tuple[str, list[dict]]) -> BatchResult:
            email, tags = change
            endpoint = f"lists/{self.list_id}/members/{subscriber_hash(email)}/tags"
            response = self.call("POST", endpoint, json={"tags": tags}, ok=(200, 204, 404), write=True)
            if response.status_code == 404:
                return BatchResult([], [{"key": _key(email), "reason": "not a member"}])
            return BatchResult([{"key": _key(email)}], [])

        yield from self.run_concurrently(post, changes, concurrency=concurrency)

    # -- campaigns and their reports ------------------------------------------------------------
    def iter_campaigns(self, *, since_send_time: str, before_send_time: str) -> Iterator[list[dict]]:
        params = {
            "count": PAGE,
            "status": "sent",
            "since_send_time": since_send_time,
            "before_send_time": before_send_time,
            "sort_field": "send_time",
            "sort_dir": "ASC",
        }
        yield from self._offset_pages("campaigns", "campaigns", params)

    def iter_email_activity(self, campaign_id: str, *, since: str) -> Iterator[list[dict]]:
        """Open, click and bounce events at or after `since`, one flat record per event."""
        for page in self._offset_pages(
            f"reports/{campaign_id}/email-activity", "emails", {"count": PAGE, "since": since}
        ):
            yield [
                {
                    "campaign_id": campaign_id,
                    "email_address": member.get("email_address"),
                    "action": event.get("action"),
                    "type": event.get("type"),
                    "timestamp": event.get("timestamp"),
                    "url": event.get("url"),
                }
                for member in page
                for event in member.get("activity", [])
            ]

    def iter_unsubscribes(self, campaign_id: str) -> Iterator[list[dict]]:
        for page in self._offset_pages(
            f"reports/{campaign_id}/unsubscribed", "unsubscribes", {"count": PAGE}
        ):
            yield [
                {
                    "campaign_id": campaign_id,
                    "email_address": u.get("email_address"),
                    "action": "unsubscribe",
                    "type": None,
                    "timestamp": u.get("timestamp"),
                    "url": None,
                }
                for u in page
            ]

    # -- e-commerce ----------------------------------------------------------------------------
    def upsert_products(
        self, products: Iterable[dict], *, concurrency: int | None = None
    ) -> Iterator[BatchResult]:
        """Add or update products (order lines must reference a known product and variant).
        Mailchimp has no PUT for products: PATCH, and POST when it does not exist yet."""
        base = f"ecommerce/stores/{self.store_id}/products"
        yield from self.run_concurrently(
            lambda p: self._patch_or_post(base, p, probably_exists=True), products, concurrency=concurrency
        )

    def upsert_orders(
        self, orders: Iterable[tuple[dict, bool]], *, concurrency: int | None = None
    ) -> Iterator[BatchResult]:
        """Add or replace orders by id. Each item is (order, probably_exists): PATCH if it
        probably exists, else POST; the other verb is used when the guess was wrong."""
        base = f"ecommerce/stores/{self.store_id}/orders"
        yield from self.run_concurrently(
            lambda item: self._patch_or_post(base, item[0], probably_exists=item[1]),
            orders,
            concurrency=concurrency,
        )

    def _patch_or_post(self, base: str, doc: dict, *, probably_exists: bool) -> BatchResult:
        key = str(doc["id"])
        for verb in ("PATCH", "POST") if probably_exists else ("POST", "PATCH"):
            response = self.call(
                verb,
                f"{base}/{key}" if verb == "PATCH" else base,
                json=doc,
                ok=(200, 201, 400, 404),
                write=True,
            )
            if response.status_code in (200, 201):
                return BatchResult([{"key": key}], [])
            if verb == "PATCH" and response.status_code == 404:
                continue  # not there yet: add it
            if verb == "POST" and response.status_code == 400 and "already exists" in response.text.lower():
                continue  # already there: update it
            return BatchResult([], [{"key": key, "reason": redact(self._describe_error(response))[:300]}])
        return BatchResult([], [{"key": key, "reason": "neither added nor updated"}])

    # -- paging ----------------------------------------------------------------------------------
    def _offset_pages(self, endpoint: str, items_key: str, params: dict[str, Any]) -> Iterator[list[dict]]:
        """Mailchimp pages by count/offset up to total_items."""
        offset = 0
        while True:
            body = self.call("GET", endpoint, params={**params, "offset": offset}).json()
            items = body.get(items_key, [])
            if items:
                yield items
            offset += len(items)
            if not items or offset >= int(body.get("total_items", 0)):
                return


def _reason(error: dict) -> str:
    field = error.get("field")
    text = error.get("error") or error.get("field_message") or "rejected"
    return f"{error.get('error_code') or 'ERROR'}: {text}" + (f" (field {field})" if field else "")
