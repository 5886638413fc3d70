"""Task logic of esp_buyer_segments: a static ESP segment (a member tag) of buyers over N EUR.

Runs when both the contacts sync and the shop conversions have updated their Assets: it needs
the audience (members exist) and every order so far (exact totals after refunds). A member is
tagged when their total reaches the threshold and untagged when refunds take them below it.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from mailsync.hooks.esp import EspHook
from mailsync.mapping import engine
from mailsync.mapping.spec import load_mapping
from mailsync.operators import sync
from mailsync.operators.run import Run
from mailsync.operators.shop import ORDERS, amounts, buyer_totals
from mailsync.settings import BUCKETS
from mailsync.staging import state_area
from mailsync.state import SyncState

log = logging.getLogger(__name__)


def tag_name(threshold: float) -> str:
    return f"buyers_over_{threshold:g}_eur"


def refresh(run: Run) -> dict[str, Any]:
    threshold = float(run.params.get("threshold_eur", 100))
    tag = tag_name(threshold)
    snapshot = state_area("shop_conversions_to_esp") / "snapshots"
    if not snapshot.exists("orders.parquet"):
        return {"tag": tag, "members_tagged": 0, "note": "no orders yet"}
    orders = amounts(snapshot.read_parquet("orders.parquet"), load_mapping(ORDERS))
    totals = buyer_totals(orders)
    members = sync.audience_members()
    qualifying = set(totals.loc[totals["total_spent"] >= threshold, "email"]) & members
    state = SyncState(f"segment:{tag}")
    tagged = set(state.load()["key"])
    add, remove = sorted(qualifying - tagged), sorted(tagged - qualifying)
    if run.params.get("dry_run"):
        return {"tag": tag, "dry_run": True, "would_add": len(add), "would_remove": len(remove)}
    hook = EspHook()
    changes = [(e, [{"name": tag, "status": "active"}]) for e in add]
    changes += [(e, [{"name": tag, "status": "inactive"}]) for e in remove]
    meta = {e: ("tagged", int(engine.bucket_of(pd.Series([e]), BUCKETS)[0])) for e in add}
    for result in hook.set_tags(changes):
        sync.acknowledge(state, [a for a in result.accepted if a["key"] in meta], meta, run.run_id)
        state.forget([a["key"] for a in result.accepted if a["key"] not in meta])
    log.info(
        "Segment %s: %d members added, %d removed, %d in total", tag, len(add), len(remove), len(qualifying)
    )
    return {
        "tag": tag,
        "added": len(add),
        "removed": len(remove),
        "members_tagged": len(qualifying),
        **hook.stats.as_dict(),
    }
