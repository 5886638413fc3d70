"""Loading the ESP's e-commerce store: products and orders, each sent only when changed since
the ESP acknowledged it (its sync state), the state advancing per acknowledged operation.

Both go through Mailchimp's batch operations (`EspHook.run_batch`: up to 1,000 operations per
`POST /batches`, a status read every `batch_poll_s` until done, the results archive read back)
instead of one call per record: ~2.4 ESP calls per 1,000 records instead of ~1,000. Each record
is one operation whose `operation_id` is its key, with the path and body the e-commerce API takes
for one call: PATCH `/ecommerce/stores/{store}/{orders|products}/{id}` for a record the state
knows (it was accepted before), POST to the collection for a new one; the few whose guess was
wrong (PATCH 404: not there; POST 400 "already exists") are sent once more with the other verb in
a second, small batch. Every batch's accepted operations advance the state as its results come
back, so a retried task resumes where the last one stopped and sends nothing twice; refused ones
go to the rejected file with the ESP's status, title and detail and are tried again next run.

The `esp` connection's extra may set these two (EspHook.option_keys names them, so the HTTP
provider never sends them to Mailchimp as headers):

- `batch_poll_s`: seconds between status reads of open batches (default 5: a few reads per
  batch, so ≤ 100 calls per 10k orders, and a finished batch is noticed within 5 s);
- `batch_timeout_s`: how long one `run_batch` call (the products; each round of orders) may
  wait for the ESP to finish before the task fails (default 1,800 s: all three at their limit
  still leave the buyer totals time within the load task's 2-hour `execution_timeout`).
  Batches still open then are stopped and named in the error; nothing of theirs is
  acknowledged, so the rerun sends them again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd

from mailsync.hooks.base import JobTimeout
from mailsync.mapping import engine
from mailsync.operators import sync
from mailsync.state import SyncState

if TYPE_CHECKING:
    from mailsync.hooks.esp import EspHook
    from mailsync.mapping.spec import Mapping
    from mailsync.staging import Area

POLL_S = 5.0
TIMEOUT_S = 1800.0


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def batch_settings(hook: EspHook) -> dict[str, float]:
    """`run_batch`'s poll interval and timeout from the connection's extra (module docstring)."""
    return {
        "poll_interval_s": float(hook.options.get("batch_poll_s", POLL_S)),
        "timeout_s": float(hook.options.get("batch_timeout_s", TIMEOUT_S)),
    }


def load_products(
    hook: EspHook, products: pd.DataFrame, *, state: str, run_id: str, out: Area | None = None
) -> dict[str, Any]:
    """Products whose doc changed (all in bucket 0: a store has few). Refused products stay
    unacknowledged (tried again next run) and go to `out`/rejected_products.csv when given."""
    acked_state = SyncState(state)
    products = products.assign(
        **{
            engine.KEY: products["id"],
            engine.FINGERPRINT: [digest(d) for d in products["doc"]],
            sync.BUCKET: 0,
        }
    )
    acked = acked_state.load([0])
    upserts, _, counts = sync.diff(products, acked, acked_state)
    meta = sync.ack_meta(upserts)
    known = set(acked["key"])
    docs = ((doc, str(doc["id"]) in known) for doc in (json.loads(d) for d in upserts["doc"]))
    rejected = upsert(hook, "products", docs, lambda ok: sync.acknowledge(acked_state, ok, meta, run_id))
    result: dict[str, Any] = {"sent": len(upserts), "unchanged": counts["unchanged"]}
    result["rejected"] = len(rejected)
    if out is not None:
        path = out.write_text("rejected_products.csv", sync.rejected_csv(rejected))
        result["rejected_file"] = str(path)
    return result


def load_orders(
    hook: EspHook, orders: pd.DataFrame, mapping: Mapping, *, state: str, run_id: str, out: Area
) -> dict[str, Any]:
    """Orders new or changed (by id: a new version replaces the old). An order's fingerprint
    covers its lines too: a changed line sends the order again. Rejected orders are written to
    `out`/rejected_orders.csv and tried again next run (they stay unacknowledged)."""
    acked_state = SyncState(state)
    prints = [
        fp + digest(lines)[:8] for fp, lines in zip(orders[engine.FINGERPRINT], orders["lines"], strict=True)
    ]
    orders = orders.assign(**{engine.FINGERPRINT: pd.Series(prints, index=orders.index, dtype="string")})
    acked = acked_state.load(sorted(set(orders[sync.BUCKET])))
    upserts, _, counts = sync.diff(orders, acked, acked_state)
    meta = sync.ack_meta(upserts)
    known = set(acked["key"])

    def orders_with_lines() -> Iterator[tuple[dict, bool]]:
        for doc, lines in zip(sync.payloads(mapping, upserts), upserts["lines"], strict=True):
            yield {**doc, "lines": json.loads(lines)}, doc["id"] in known

    rejected = upsert(
        hook, "orders", orders_with_lines(), lambda ok: sync.acknowledge(acked_state, ok, meta, run_id)
    )
    path = out.write_text("rejected_orders.csv", sync.rejected_csv(rejected))
    return {
        "sent": len(upserts),
        "unchanged": counts["unchanged"],
        "rejected": len(rejected),
        "rejected_file": str(path),
    }


def upsert(
    hook: EspHook,
    collection: str,
    docs: Iterable[tuple[dict, bool]],
    acknowledge: Callable[[list[dict]], None],
) -> list[dict]:
    """Add or update the store's `collection` ("orders", "products") from (doc, probably_exists)
    by batch operations; `acknowledge` gets each batch's accepted operations as they come back.
    Returns the refused ones ({"key", "status_code", "reason"})."""
    settings = batch_settings(hook)
    base = f"/ecommerce/stores/{hook.store_id}/{collection}"
    sent: dict[str, tuple[dict, str]] = {}  # key -> (doc, verb of the first round)

    def operations(items: Iterable[tuple[dict, str]]) -> Iterator[dict[str, Any]]:
        for doc, verb in items:
            key = str(doc["id"])
            sent.setdefault(key, (doc, verb))
            path = f"{base}/{key}" if verb == "PATCH" else base
            yield {"operation_id": key, "method": verb, "path": path, "body": doc}

    def run(items: Iterable[tuple[dict, str]], round_: str) -> list[dict]:
        refused = []
        try:
            for result in hook.run_batch(operations(items), **settings):
                acknowledge(result.accepted)
                refused.extend(result.rejected)
        except JobTimeout as exc:
            raise JobTimeout(
                f"loading {collection} ({round_}): {exc} (the `esp` connection's extra "
                f"batch_timeout_s is {settings['timeout_s']:g}s)"
            ) from exc
        return refused

    first = run(((doc, "PATCH" if exists else "POST") for doc, exists in docs), "first round")
    retry, rejected = [], []
    for r in first:
        doc, verb = sent[r["key"]]
        if _wrong_guess(verb, r):
            retry.append((doc, "POST" if verb == "PATCH" else "PATCH"))
        else:
            rejected.append(r)
    if retry:
        rejected.extend(run(retry, "second round: the other verb"))
    return rejected


def _wrong_guess(verb: str, refused: dict) -> bool:
    """PATCH of a record not there yet (404), or POST of one already there (400 "already exists")."""
    code, reason = refused.get("status_code"), str(refused.get("reason") or "").lower()
    if verb == "PATCH":
        return code == 404
    return code == 400 and "already exists" in reason
