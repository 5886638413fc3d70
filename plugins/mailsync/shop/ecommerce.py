"""Loading the ESP's e-commerce store: products and orders, each sent only when changed since
the ESP acknowledged it (its sync state), the state advancing per acknowledged batch."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import pandas as pd

from mailsync.mapping import engine
from mailsync.operators import sync
from mailsync.state import SyncState

if TYPE_CHECKING:
    from mailsync.hooks.esp import EspHook
    from mailsync.mapping.spec import Mapping
    from mailsync.staging import Area


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_products(hook: EspHook, products: pd.DataFrame, *, state: str, run_id: str) -> dict[str, int]:
    """Products whose doc changed (all in bucket 0: a store has few)."""
    acked_state = SyncState(state)
    products = products.assign(
        **{
            engine.KEY: products["id"],
            engine.FINGERPRINT: [digest(d) for d in products["doc"]],
            sync.BUCKET: 0,
        }
    )
    upserts, _, counts = sync.diff(products, acked_state.load([0]), acked_state)
    meta = sync.ack_meta(upserts)
    for result in hook.upsert_products(json.loads(doc) for doc in upserts["doc"]):
        sync.acknowledge(acked_state, result.accepted, meta, run_id)
    return {"sent": len(upserts), "unchanged": counts["unchanged"]}


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

    def orders_with_lines():
        for doc, lines in zip(sync.payloads(mapping, upserts), upserts["lines"], strict=True):
            yield {**doc, "lines": json.loads(lines)}, doc["id"] in known

    rejected = []
    for result in hook.upsert_orders(orders_with_lines()):
        sync.acknowledge(acked_state, result.accepted, meta, run_id)
        rejected.extend(result.rejected)
    path = out.write_text("rejected_orders.csv", sync.rejected_csv(rejected))
    return {
        "sent": len(upserts),
        "unchanged": counts["unchanged"],
        "rejected": len(rejected),
        "rejected_file": str(path),
    }
