"""Each buyer's totals over every order so far: what the ESP's TOTAL_SPENT, ORDER_COUNT and
LAST_ORDER member fields hold, and what the buyers-over-N segment is drawn from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from mailsync.mapping import engine
from mailsync.operators import sync
from mailsync.settings import BUCKETS
from mailsync.state import SyncState

if TYPE_CHECKING:
    from mailsync.hooks.esp import EspHook
    from mailsync.mapping.spec import Mapping
    from mailsync.staging import Area


def buyer_totals(orders: pd.DataFrame) -> pd.DataFrame:
    """Per buyer (email) of `orders` (with amounts): spent in the reporting currency, counted
    orders, last order day; a buyer whose orders all count zero has zero totals."""
    counted = orders[orders["counted"].to_numpy()]
    g = counted.groupby("email")
    totals = pd.DataFrame(
        {
            "total_spent": g["net_reporting"].sum().round(2),
            "order_count": g["id"].count(),
            "last_order": g["created_at"].max().dt.tz_convert("UTC").dt.strftime("%Y-%m-%d"),
        }
    )
    everyone = pd.DataFrame(index=pd.Index(sorted(set(orders["email"])), name="email"))
    totals = everyone.join(totals)
    totals["total_spent"] = totals["total_spent"].fillna(0.0)
    totals["order_count"] = totals["order_count"].fillna(0).astype(int)
    return totals.reset_index()


def esp_buyers(mapping: Mapping, totals: pd.DataFrame) -> pd.DataFrame:
    """The buyers' member records by the buyer-totals mapping, each with its key bucket."""
    buyers = engine.transform(mapping, engine.prepare(mapping, "buyers", totals))
    buyers[sync.BUCKET] = engine.bucket_of(buyers[engine.KEY], BUCKETS)
    return buyers


def load_buyers(
    hook: EspHook, buyers: pd.DataFrame, mapping: Mapping, *, state: str, run_id: str, out: Area
) -> dict[str, Any]:
    """The member fields of buyers whose totals changed since the ESP acknowledged them (the
    caller keeps audience members only). Totals cover every order so far, so nobody is removed."""
    buckets = sorted(set(buyers[sync.BUCKET]))
    acked = SyncState(state)
    upserts, _, counts = sync.diff(buyers, acked.load(buckets), acked)
    no_removals = pd.DataFrame({"key": pd.Series(dtype="string"), "bucket": pd.Series(dtype="int64")})
    loaded = sync.load_members(hook, mapping, state, [upserts], no_removals, run_id=run_id, out=out)
    return loaded | {"unchanged": counts["unchanged"]}
