"""The ESP: Mailchimp Marketing API v3 over an ordinary `http` connection.

Connection `esp_default`: host = API base URL (https://<dc>.api.mailchimp.com/3.0), login =
any name, password = API key; extra: `list_id` (the audience), `store_id` (e-commerce store),
optional `batch_size` (≤ 500) and `max_connections` (Mailchimp allows 10 simultaneous
connections per key; default 10).

Bulk writes (e-commerce orders and products by the thousand) go through Mailchimp's batch
operations (`run_batch`: up to 1,000 operations per call, polled, results read from the archive)
instead of one call per record.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import time
from collections.abc import Iterable, Iterator
from typing import Any

from requests.auth import HTTPBasicAuth

from mailsync.hooks.base import BatchResult, JobTimeout, VendorError, VendorHttpHook, batched
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
MAX_BATCH_OPERATIONS = 1000  # operations per POST /batches
MAX_OPEN_BATCHES = 10  # batches of one run_batch call in flight (Mailchimp refuses past 500 pending)
BATCH_STATUS_FIELDS = "id,status,total_operations,finished_operations,errored_operations,response_body_url"


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
    # batch_poll_s / batch_timeout_s: run_batch's (mailsync.shop.ecommerce); not headers
    option_keys = ("list_id", "store_id", "batch_size", "batch_poll_s", "batch_timeout_s")
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

    # -- batch operations ----------------------------------------------------------------------
    def run_batch(
        self,
        operations: Iterable[dict[str, Any]],
        *,
        poll_interval_s: float = 5.0,
        timeout_s: float = 3600.0,
        batch_size: int = MAX_BATCH_OPERATIONS,
    ) -> Iterator[BatchResult]:
        """Run operations through Mailchimp's batch endpoint; yield each batch's per-operation outcome.

        Each operation is {"operation_id", "method", "path" (relative to /3.0, e.g.
        "/ecommerce/stores/s/orders"), optional "body" (a dict, sent as the JSON string Mailchimp
        wants) and "params"}; operation ids must be unique, they are the results' keys. At most
        `batch_size` (≤ 1,000) operations go in one POST /batches, up to 10 batches are open at
        once; each is polled every `poll_interval_s` until `finished`, then its results archive
        (a .tar.gz of JSON files) is fetched from the pre-signed link. Per batch: accepted
        [{"key": operation_id, "status_code", "response"}] and rejected [{"key", "status_code",
        "reason"}] with the ESP's status, title and detail, so the per-record accept/reject path
        takes them as it takes `upsert_members`' results. One refused operation never fails the
        batch. Batches still unfinished `timeout_s` after the first was sent are stopped
        (DELETE) and JobTimeout names them with their status; what they already did stays done.
        When a batch cannot be sent (or an operation is malformed), the batches already sent are
        still awaited and yielded before that error is raised, so what the ESP did is recorded.
        """
        size = max(1, min(MAX_BATCH_OPERATIONS, batch_size))
        chunks = batched(_batch_operations(operations), size)
        open_batches: dict[str, list[str]] = {}  # batch id -> its operation ids, in order
        last: dict[str, dict] = {}
        started = time.monotonic()
        exhausted = False
        error: BaseException | None = None
        while True:
            while not exhausted and len(open_batches) < MAX_OPEN_BATCHES:
                try:
                    chunk = next(chunks, None)
                    if chunk is None:
                        exhausted = True
                        break
                    batch = self.call("POST", "batches", json={"operations": chunk}, write=True).json()
                except (VendorError, ValueError) as exc:  # finish what was sent, then raise
                    error, exhausted = exc, True
                    break
                open_batches[str(batch["id"])] = [op["operation_id"] for op in chunk]
            if not open_batches:
                if error is not None:
                    raise error
                return
            for batch_id in list(open_batches):
                last[batch_id] = doc = self.call(
                    "GET", f"batches/{batch_id}", params={"fields": BATCH_STATUS_FIELDS}
                ).json()
                if doc.get("status") == "finished":
                    yield self._batch_results(batch_id, doc, open_batches.pop(batch_id))
            if not open_batches:
                continue
            left = timeout_s - (time.monotonic() - started)
            if left <= 0:
                self._stop_batches(open_batches, last, timeout_s, unsent=not exhausted)
            time.sleep(min(poll_interval_s, left))

    def _stop_batches(
        self, open_batches: dict[str, list[str]], last: dict[str, dict], timeout_s: float, *, unsent: bool
    ) -> None:
        stopped = []
        for batch_id in open_batches:
            try:
                self.call("DELETE", f"batches/{batch_id}", ok=(200, 204, 404), write=True)
                stopped.append(batch_id)
            except VendorError:
                pass  # the timeout is the error to report
        states = ", ".join(
            f"{b} {last[b].get('status')} {last[b].get('finished_operations', 0)}/"
            f"{last[b].get('total_operations', len(ops))}"
            for b, ops in open_batches.items()
        )
        raise JobTimeout(
            f"ESP batch operations: {len(open_batches)} batch(es) not finished after {timeout_s:g}s "
            f"({states}); stopped {len(stopped)} of them (operations they already ran stay done)"
            + ("; later operations were not sent" if unsent else "")
            + ": rerun the task later or allow a longer timeout"
        )

    def _batch_results(self, batch_id: str, doc: dict, op_ids: list[str]) -> BatchResult:
        outcomes: dict[str, dict] = {}
        if doc.get("response_body_url"):
            with (
                self.download(doc["response_body_url"], what=f"batch {batch_id} results") as saved,
                tarfile.open(fileobj=saved, mode="r:gz") as archive,
            ):
                for member in archive:
                    if member.isfile() and member.name.endswith(".json"):
                        for item in json.load(archive.extractfile(member)):
                            outcomes[str(item.get("operation_id"))] = item
        accepted, rejected = [], []
        for op_id in op_ids:
            item = outcomes.get(op_id)
            if item is None:
                rejected.append(
                    {"key": op_id, "status_code": None, "reason": f"no result in batch {batch_id}"}
                )
                continue
            code, body = int(item.get("status_code") or 0), _loads(item.get("response"))
            if 200 <= code < 300:
                accepted.append({"key": op_id, "status_code": code, "response": body})
            else:
                rejected.append(
                    {"key": op_id, "status_code": code, "reason": redact(_op_reason(code, body))[:300]}
                )
        return BatchResult(accepted, rejected)

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


def _batch_operations(operations: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Operations as POST /batches takes them (body a JSON string); ids checked unique."""
    seen: set[str] = set()
    for op in operations:
        op_id = op.get("operation_id")
        if op_id in (None, ""):
            raise ValueError("every batch operation needs an operation_id (its result's key)")
        op_id = str(op_id)
        if op_id in seen:
            raise ValueError(f"operation_id {op_id!r} appears twice in one run_batch call")
        seen.add(op_id)
        out = {
            "method": str(op["method"]).upper(),
            "path": "/" + str(op["path"]).lstrip("/"),
            "operation_id": op_id,
        }
        body = op.get("body")
        if body is not None:
            out["body"] = body if isinstance(body, str) else json.dumps(body)
        if op.get("params"):
            out["params"] = op["params"]
        yield out


def _loads(text: object) -> Any:
    if not isinstance(text, str) or not text:
        return text or None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _op_reason(code: int, body: Any) -> str:
    """An operation's refusal as the ESP put it: status, title, detail and field errors."""
    if not isinstance(body, dict):
        return f"HTTP {code}: {str(body or '')[:200]}".rstrip(": ")
    text = f"HTTP {code} {body.get('title') or ''}: {body.get('detail') or ''}".strip()
    fields = [
        f"{e.get('field')}: {e.get('message')}" for e in body.get("errors") or [] if isinstance(e, dict)
    ]
    return text + (f" ({'; '.join(fields)})" if fields else "")


def _reason(error: dict) -> str:
    field = error.get("field")
    text = error.get("error") or error.get("field_message") or "rejected"
    return f"{error.get('error_code') or 'ERROR'}: {text}" + (f" (field {field})" if field else "")
