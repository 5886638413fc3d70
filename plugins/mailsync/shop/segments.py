"""The buyers-over-N segment: a static ESP segment (a member tag) of audience members whose
purchases (net of refunds, cancellations excluded, in EUR) reach a threshold.

Drawn from the shop DAG's orders snapshot, which holds every order so far, so refunds take a
member below the threshold again. Only changes against what was tagged before (the segment's own
sync state) are sent; nobody outside the audience is touched.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pandas as pd

from mailsync.mapping import engine
from mailsync.operators import sync
from mailsync.settings import BUCKETS
from mailsync.shop.buyers import buyer_totals
from mailsync.shop.currency import amounts
from mailsync.staging import state_area
from mailsync.state import SyncState

if TYPE_CHECKING:
    from mailsync.hooks.esp import EspHook
    from mailsync.mapping.spec import Mapping

log = logging.getLogger(__name__)


def tag_name(threshold: float) -> str:
    return f"buyers_over_{threshold:g}_eur"


def qualifying_buyers(shop_dag_id: str, orders_mapping: Mapping, threshold: float) -> set[str] | None:
    """Emails whose total over the shop DAG's orders snapshot reaches `threshold` (None: the
    shop DAG has not stored a snapshot yet)."""
    snapshot = state_area(shop_dag_id) / "snapshots"
    if not snapshot.exists("orders.parquet"):
        return None
    totals = buyer_totals(amounts(snapshot.read_parquet("orders.parquet"), orders_mapping))
    return set(totals.loc[totals["total_spent"] >= threshold, "email"])


def refresh(
    hook: EspHook,
    *,
    shop_dag_id: str,
    orders_mapping: Mapping,
    threshold: float,
    state: str,
    audience_state: str,
    run_id: str,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Tag the audience members who qualify, untag those tagged before who no longer do. `state`
    is the segment's sync state name (one per tag: another threshold is another segment)."""
    tag = tag_name(threshold)
    buyers = qualifying_buyers(shop_dag_id, orders_mapping, threshold)
    if buyers is None:
        return {"tag": tag, "members_tagged": 0, "note": "no orders yet"}
    qualifying = buyers & sync.audience_members(audience_state)
    segment = SyncState(state)
    tagged = set(segment.load()["key"])
    add, remove = sorted(qualifying - tagged), sorted(tagged - qualifying)
    if dry_run:
        return {"tag": tag, "dry_run": True, "would_add": len(add), "would_remove": len(remove)}
    changes = [(e, [{"name": tag, "status": "active"}]) for e in add]
    changes += [(e, [{"name": tag, "status": "inactive"}]) for e in remove]
    meta = {e: ("tagged", int(engine.bucket_of(pd.Series([e]), BUCKETS)[0])) for e in add}
    for result in hook.set_tags(changes):
        sync.acknowledge(segment, [a for a in result.accepted if a["key"] in meta], meta, run_id)
        segment.forget([a["key"] for a in result.accepted if a["key"] not in meta])
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
