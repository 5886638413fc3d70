"""The CRM: HubSpot CRM v3 contacts over an ordinary `http` connection.

Connection `crm_default`: host = https://api.hubapi.com, password = private app token (sent
as a bearer token); extra: optional `max_connections` (default 4: HubSpot allows ~190 calls
per 10 s for private apps), `batch_size` (≤ 100) and `search_rate` (search requests per second,
≤ 5: HubSpot's search endpoints have a limit of their own).

Full extracts of a big CRM go through HubSpot's exports API (`export_contacts`: one start, a few
status reads, one file) instead of 100-contact list pages; incremental nights keep the search.
"""

from __future__ import annotations

import csv
import io
import math
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import IO, Any

from mailsync.hooks.base import (
    BatchResult,
    BearerAuth,
    JobFailed,
    VendorError,
    VendorHttpHook,
    batched,
)
from mailsync.pii import redact

MAX_BATCH = 100  # HubSpot's limit for batch read/update/upsert
SEARCH_PAGE = 200  # HubSpot's largest search page
SEARCH_WINDOW = 10_000  # a search can page through at most 10,000 results
SEARCH_IN_VALUES = 100  # values of one IN filter
SEARCH_RATE = 5.0  # search requests per second per account (HubSpot's own limit, apart from the rest)
ALWAYS = ("hs_object_id", "createdate", "lastmodifieddate", "email")  # the list API always returns these
EXPORT_DONE = {"COMPLETE", "CANCELED", "FAILED"}  # HubSpot documents CANCELED; FAILED is read as one too


class SearchWindowExceeded(VendorError):
    """More contacts share one modification time than a HubSpot search can page through."""


def _ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


class CrmHook(VendorHttpHook):
    """HubSpot CRM v3 contacts: list, search by modification time, batch update by email."""

    default_conn_name = "crm_default"
    hook_name = "CRM (HubSpot CRM v3)"
    vendor = "CRM"
    # the full extract's options (mailsync.contacts.extract): connection settings, not headers
    option_keys = (
        "batch_size",
        "search_rate",
        "full_extract",
        "export_over",
        "export_poll_s",
        "export_timeout_s",
    )
    default_max_connections = 4

    def __init__(self, conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(conn_id, **kwargs)
        self._search_lock = threading.Lock()
        self._next_search = 0.0

    def _search_call(self, body: dict) -> dict:
        """One search request, paced to HubSpot's search limit (`search_rate` per second, at most
        5) across every thread of this hook: the search endpoints answer 429 past it. The pace
        keeps a 10 % margin: requests sent 200 ms apart arrive up to some ms closer."""
        rate = min(SEARCH_RATE, float(self.options.get("search_rate", SEARCH_RATE)))
        with self._search_lock:
            now = time.monotonic()
            wait_s, self._next_search = self._next_search - now, max(now, self._next_search) + 1.1 / rate
        if wait_s > 0:
            time.sleep(wait_s)
        return self.call("POST", "crm/v3/objects/contacts/search", json=body).json()

    def _quota_exhausted(self, response) -> bool:
        """HubSpot's daily limit (policyName DAILY) lasts until midnight in the account's time
        zone: retrying within the task's budget only spends it."""
        if response.status_code != 429:
            return False
        try:
            body = response.json()
        except ValueError:
            return False
        return isinstance(body, dict) and body.get("policyName") == "DAILY"

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
        return int(self._search_call(body)["total"])

    def iter_modified_contacts(
        self, properties: list[str], start: datetime, end: datetime
    ) -> Iterator[list[dict]]:
        """Contacts with lastmodifieddate in [start, end), sorted by it, each exactly once.

        Keyset paging: every page searches again from the last modification time seen, skipping
        the contacts already returned at exactly that time. Offsets (`after`) would skip rows
        when a contact is edited while we page (the result set shifts), and a search cannot page
        past 10,000 results anyway; offsets are used only among contacts sharing one timestamp.
        """
        for _, fresh in self._modified_pages(properties, start, end):
            if fresh:
                yield [_flat(r) for r in fresh]

    def ids_modified_since(self, start: datetime, end: datetime, *, max_searches: int) -> dict | None:
        """email -> the ids of every contact with lastmodifieddate in [start, end): the records a
        snapshot of `start` may miss (created since, or their email changed). None when that takes
        more than `max_searches` searches (the first one's `total` tells), so a caller can read by
        email instead."""
        found: dict[str, list[str]] = {}
        pages = self._modified_pages(["email", "lastmodifieddate"], start, end)
        try:
            for n, (body, fresh) in enumerate(pages):
                if n == 0 and math.ceil(int(body.get("total") or 0) / SEARCH_PAGE) > max_searches:
                    return None
                for result in fresh:
                    email = ((result.get("properties") or {}).get("email") or "").strip().lower()
                    found.setdefault(email, []).append(str(result["id"]))
        except SearchWindowExceeded:  # a bulk edit: more than a search can page through
            return None
        return found

    def _modified_pages(self, properties: list[str], start: datetime, end: datetime) -> Iterator[tuple]:
        """(search body, its results not returned before) per search: `iter_modified_contacts`."""
        low, seen_at_low, offset = _ms(start), set(), 0
        while True:
            body = self._search(properties, low, _ms(end), offset)
            results = body.get("results", [])
            yield body, [r for r in results if r["id"] not in seen_at_low]
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
        return self._search_call(body)

    def export_contacts(
        self,
        properties: list[str],
        *,
        poll_interval_s: float = 5.0,
        timeout_s: float = 3600.0,
        page_size: int = 1000,
    ) -> Iterator[list[dict]]:
        """Every (unarchived) contact through HubSpot's exports API, in pages of `page_size`.

        Start a CSV export of the properties (plus those the list API always returns), read its
        status every `poll_interval_s` until COMPLETE, fetch the file from the pre-signed link
        (no token sent) and stream its rows. HubSpot zips CSVs over 2 MB: a zip is read member by
        member. The records are shaped as `iter_contacts` yields them (the properties, with an
        empty cell as None, `hs_object_id`, `archived` false), so a caller stages them the same
        way; unlike the list API a CSV cannot tell an empty string from null. An export that
        ends CANCELED (or FAILED) raises JobFailed, one still running after `timeout_s` raises
        JobTimeout; both name the export id and its status.
        """
        columns = list(dict.fromkeys([*properties, *ALWAYS]))
        body = {
            "exportType": "VIEW",
            "format": "CSV",
            "exportName": "mailsync contacts",
            "objectType": "CONTACT",
            "objectProperties": columns,
            "language": "EN",
            "exportInternalValuesOptions": ["NAMES", "VALUES"],  # property names as headers, raw values
        }
        export_id = str(
            self.call("POST", "crm/v3/exports/export/async", json=body, ok=(200, 202)).json()["id"]
        )
        endpoint = f"crm/v3/exports/export/async/tasks/{export_id}/status"
        state = self.poll_job(
            f"export {export_id}",
            lambda: self.call("GET", endpoint).json(),
            lambda st: str(st.get("status", "")).upper() in EXPORT_DONE,
            poll_interval_s=poll_interval_s,
            timeout_s=timeout_s,
            describe=lambda st: str(st.get("status")),
        )
        status = str(state.get("status")).upper()
        if status != "COMPLETE" or not state.get("result"):
            errors = "; ".join(
                str(e.get("message", e.get("category", ""))) for e in state.get("errors") or []
            )
            raise JobFailed(
                f"CRM export {export_id} ended {status} with {state.get('numErrors', 0)} error(s)"
                + (f": {redact(errors)[:300]}" if errors else "")
                + "; nothing was read: rerun the task"
            )
        with self.download(state["result"], what=f"export {export_id} file") as saved:
            yield from batched(_export_rows(saved, columns), page_size)

    # -- writes -----------------------------------------------------------------------------
    def ids_by_email(self, emails: list[str]) -> dict[str, str]:
        """Contact ids of up to 100 emails (batch read by email); unknown emails are left out.
        HubSpot answers one record per email: use `all_ids_by_email` to reach duplicates."""
        body = {"idProperty": "email", "inputs": [{"id": e} for e in emails], "properties": ["email"]}
        response = self.call("POST", "crm/v3/objects/contacts/batch/read", json=body, ok=(200, 207))
        found = {}
        for result in response.json().get("results", []):
            email = ((result.get("properties") or {}).get("email") or "").strip().lower()
            found.setdefault(email, str(result["id"]))
        return found

    def all_ids_by_email(self, emails: list[str]) -> dict[str, list[str]]:
        """Every contact id of up to 100 emails, duplicates included: one search with an `IN`
        filter on email (HubSpot: ≤ 100 values, lower-case; pages of 200; ≤ 10,000 results),
        paced to the search limit. Unknown emails are left out."""
        if len(emails) > SEARCH_IN_VALUES:
            raise ValueError(f"at most {SEARCH_IN_VALUES} emails per search, got {len(emails)}")
        wanted = sorted({e.strip().lower() for e in emails})
        found: dict[str, list[str]] = {}
        after = 0
        while wanted:
            body = self._search_call(
                {
                    "filterGroups": [
                        {"filters": [{"propertyName": "email", "operator": "IN", "values": wanted}]}
                    ],
                    "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                    "properties": ["email"],
                    "limit": SEARCH_PAGE,
                    "after": str(after),
                }
            )
            results = body.get("results", [])
            for result in results:
                email = ((result.get("properties") or {}).get("email") or "").strip().lower()
                found.setdefault(email, []).append(str(result["id"]))
            after += len(results)
            if not results or not (body.get("paging") or {}).get("next"):
                break
            if after >= SEARCH_WINDOW:
                raise SearchWindowExceeded(
                    f"CRM search: more than {SEARCH_WINDOW} contacts share {len(wanted)} emails"
                )
        return found

    def update_contacts(
        self,
        updates: Iterable[dict[str, Any]],
        *,
        concurrency: int | None = None,
        all_records: bool = True,
    ) -> Iterator[BatchResult]:
        """Update contacts found by email, 100 per batch; never creates one.

        Each update is {"email": ..., "properties": {...}}. HubSpot's batch update goes by record
        id only (by email it answers "non-unique property"), so the ids come first. With
        `all_records` (the default) every record sharing the email is updated: a search with an
        `IN` filter per 100 emails finds them all (the batch read by email answers one per email);
        emails the search misses (its index lags behind new contacts by minutes) are read by
        email, 100 at a time, before they count as unknown. The id updates are packed 100 per
        call, the records of one email in one call, so a night costs about one search and one
        update per 100 contacts. Without `all_records`: one batch read per 100 emails, the one
        record HubSpot returns per email. An email is acknowledged only when every one of its
        records was updated; emails the CRM does not know come back rejected as
        `unknown_contact`. HubSpot refuses a whole batch for one invalid input; such a batch is
        split until the bad input stands alone — but when both halves fail the same way the
        error is not about one record (a missing custom property, say) and the task fails with it
        instead.
        """
        yield from self.run_concurrently(
            self._update_ids, self._id_batches(updates, all_records=all_records), concurrency=concurrency
        )

    def update_contacts_by_id(
        self, updates: Iterable[dict[str, Any]], *, concurrency: int | None = None
    ) -> Iterator[BatchResult]:
        """Update contacts whose record ids the caller already knows, 100 inputs per call, with no
        read first; never creates one.

        Each update is {"email": ..., "ids": [...], "properties": {...}}: the email is the key
        results are reported by, the ids are every record to write (the records of one email go
        in one call). Results have the shape of `update_contacts`: an email is accepted only when
        every one of its records was; when the CRM no longer has one of its ids (deleted or
        archived since the caller learnt it) the email comes back rejected as `unknown_contact`,
        which tells the caller to look that email up again (`update_contacts`), not that the
        person is gone. A batch refused for one invalid input is split as in `update_contacts`.
        """
        yield from self.run_concurrently(
            self._update_ids, self._known_id_batches(updates), concurrency=concurrency
        )

    def _known_id_batches(self, updates: Iterable[dict[str, Any]]) -> Iterator[tuple]:
        """(inputs by id, the (update number, email) of each input, rejections), ≤ 100 inputs per
        call, an email's records never split over two calls."""
        inputs: list[dict] = []
        keys: list[tuple[int, str]] = []
        for n, update in enumerate(updates):
            ids = list(dict.fromkeys(str(i) for i in update["ids"]))
            if len(ids) > MAX_BATCH:
                reason = f"more than {MAX_BATCH} CRM records share the email"
                yield [], [], [{"key": _key(update), "reason": reason}]
                continue
            if len(inputs) + len(ids) > self.batch_size:
                yield inputs, keys, []
                inputs, keys = [], []
            inputs += [{"id": i, "properties": update["properties"]} for i in ids]
            keys += [(n, _key(update))] * len(ids)
        if inputs:
            yield inputs, keys, []

    def _id_batches(self, updates: Iterable[dict[str, Any]], *, all_records: bool) -> Iterator[tuple]:
        """(inputs by id, the (update number, email) of each input, rejections) packed ≤ 100
        inputs per call. Runs in the caller's thread, so the searches are sequential (and paced)
        while the updates go out in parallel."""
        inputs: list[dict] = []
        keys: list[tuple[int, str]] = []
        missed: list[tuple[int, dict]] = []

        def add(n: int, update: dict, ids: list[str]) -> Iterator[tuple]:
            nonlocal inputs, keys
            if len(ids) > MAX_BATCH:
                yield (
                    [],
                    [],
                    [{"key": _key(update), "reason": f"more than {MAX_BATCH} CRM records share the email"}],
                )
                return
            if len(inputs) + len(ids) > self.batch_size:
                yield inputs, keys, []
                inputs, keys = [], []
            inputs += [{"id": i, "properties": update["properties"]} for i in ids]
            keys += [(n, _key(update))] * len(ids)

        def read_missed(final: bool) -> Iterator[tuple]:
            nonlocal missed
            while len(missed) >= MAX_BATCH or (final and missed):
                part, missed = missed[:MAX_BATCH], missed[MAX_BATCH:]
                ids = self.ids_by_email([_key(u) for _, u in part])
                for n, u in part:
                    if _key(u) in ids:
                        yield from add(n, u, [ids[_key(u)]])
                unknown = [
                    {"key": _key(u), "reason": "unknown_contact"} for _, u in part if _key(u) not in ids
                ]
                if unknown:
                    yield [], [], unknown

        for batch in batched(enumerate(updates), min(self.batch_size, SEARCH_IN_VALUES)):
            if all_records:
                found = self.all_ids_by_email([_key(u) for _, u in batch])
                for n, u in batch:
                    if _key(u) in found:
                        yield from add(n, u, found[_key(u)])
                    else:
                        missed.append((n, u))
                yield from read_missed(final=False)
            else:
                missed.extend(batch)
                yield from read_missed(final=True)
        yield from read_missed(final=True)
        if inputs:
            yield inputs, keys, []

    def _update_ids(self, item: tuple) -> BatchResult:
        """Update one packed batch by id; an update (an email) is accepted only when every one of
        its records was, and rejected once with the first reason otherwise."""
        inputs, keys, rejected = item
        result = self._update_by_id(inputs, keys) if inputs else BatchResult()
        failed: dict[tuple[int, str], str] = {}
        for r in result.rejected:
            failed.setdefault(r["key"] if isinstance(r["key"], tuple) else (-1, r["key"]), r["reason"])
        accepted = [{"key": email} for n, email in dict.fromkeys(keys) if (n, email) not in failed]
        refused = [{"key": email, "reason": reason} for (_, email), reason in failed.items()]
        return BatchResult(accepted, refused + rejected)

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


def _export_rows(saved: IO[bytes], columns: list[str]) -> Iterator[dict]:
    """The rows of an export file (a CSV, or a zip of CSVs) as flat records like `_flat` makes."""
    if saved.read(4) == b"PK\x03\x04":
        saved.seek(0)
        with zipfile.ZipFile(saved) as archive:
            for name in sorted(n for n in archive.namelist() if n.lower().endswith(".csv")):
                with archive.open(name) as member:
                    yield from _csv_rows(member, columns)
        return
    saved.seek(0)
    yield from _csv_rows(saved, columns)


def _csv_rows(binary: IO[bytes], columns: list[str]) -> Iterator[dict]:
    reader = csv.DictReader(io.TextIOWrapper(binary, encoding="utf-8-sig", newline=""))
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise VendorError(f"CRM export file lacks the column(s) {', '.join(missing)}")
    for row in reader:
        record: dict[str, Any] = {c: (row[c] if row[c] != "" else None) for c in columns}
        record["archived"] = False
        record["archivedAt"] = None
        yield record


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
