"""Shopify orders as staged rows, the orders snapshot (latest version of every order) and the
ESP orders of a run."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from mailsync.mapping import engine
from mailsync.operators import sync
from mailsync.operators.staged import Stager
from mailsync.settings import BUCKETS

if TYPE_CHECKING:
    from mailsync.hooks.shop import ShopHook
    from mailsync.mapping.spec import Mapping
    from mailsync.operators.run import Run
    from mailsync.staging import Area

log = logging.getLogger(__name__)
ORDER_COLUMNS = [
    "id",
    "email",
    "customer_id",
    "created_at",
    "updated_at",
    "cancelled_at",
    "financial_status",
    "currency",
    "total_price",
    "total_tax",
    "total_discounts",
    "refunded",
    "landing_site",
    "referring_site",
]
LINE_COLUMNS = [
    "order_id",
    "line_id",
    "product_id",
    "variant_id",
    "title",
    "variant_title",
    "quantity",
    "price",
]


# -- extract ---------------------------------------------------------------------------------------
def flat_order(order: dict) -> dict:
    """One Shopify order as a staged row: refunds summed from their successful transactions."""
    refunded = sum(
        float(t.get("amount") or 0)
        for refund in order.get("refunds") or []
        for t in refund.get("transactions") or []
        if t.get("kind") == "refund" and t.get("status") == "success"
    )
    customer = order.get("customer") or {}
    return {
        **{c: order.get(c) for c in ORDER_COLUMNS},
        "id": str(order["id"]),
        "email": order.get("email") or customer.get("email"),
        "customer_id": str(customer["id"]) if customer.get("id") is not None else None,
        "refunded": f"{refunded:.2f}",
    }


def _text(value) -> str | None:
    return None if value is None else str(value)


def flat_lines(order: dict) -> list[dict]:
    """The order's line items as staged rows."""
    return [
        {
            "order_id": str(order["id"]),
            "line_id": _text(li.get("id")),
            "product_id": _text(li.get("product_id")),  # null for custom items: quarantined, not "None"
            "variant_id": _text(li.get("variant_id")),
            "title": li.get("title"),
            "variant_title": li.get("variant_title"),
            "quantity": li.get("quantity"),
            "price": li.get("price"),
        }
        for li in order.get("line_items") or []
    ]


def before(order: dict, end) -> bool:
    updated = pd.Timestamp(order.get("updated_at"))
    return updated.tz_convert("UTC") < pd.Timestamp(end).tz_convert("UTC")


def stage_orders(run: Run, hook: ShopHook, out: Area) -> dict[str, Any]:
    """Stage the interval's orders and their line items in `out`/orders and `out`/lines
    (Shopify's bounds are inclusive: orders updated exactly at the interval end belong to the
    next interval)."""
    started_at = datetime.now(UTC).isoformat()
    orders_out = Stager(out / "orders", ORDER_COLUMNS)
    lines_out = Stager(out / "lines", LINE_COLUMNS)
    for page in hook.iter_orders(run.start, run.end):  # one pass, a chunk at a time in memory
        kept = [o for o in page if before(o, run.end)]
        orders_out.add([flat_order(o) for o in kept])
        lines_out.add([li for o in kept for li in flat_lines(o)])
    orders, lines = orders_out.close(), lines_out.close()
    log.info("Extracted %d orders with %d line items", orders, lines)
    return {"started_at": started_at, "orders": orders, "lines": lines, **hook.stats.as_dict()}


# -- the orders snapshot ---------------------------------------------------------------------------
def merge_snapshot(
    snapshot: Area, delta: pd.DataFrame, delta_lines: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Latest version of every order (by updated_at) with its lines; reruns and older backfills
    change nothing. Lines of quarantined orders never enter. An order keeps the campaign it was
    attributed to when first seen, whatever later versions (refunds) say."""
    current = (
        snapshot.read_parquet("orders.parquet") if snapshot.exists("orders.parquet") else delta.iloc[0:0]
    )
    current_lines = (
        snapshot.read_parquet("lines.parquet") if snapshot.exists("lines.parquet") else delta_lines.iloc[0:0]
    )
    both = pd.concat([current.assign(_new=False), delta.assign(_new=True)], ignore_index=True)
    both = both.sort_values(["updated_at", "_new"], kind="stable")
    if "rule" in both:  # carry the first attribution over to the newest version
        first = both.dropna(subset=["rule"]).drop_duplicates("id", keep="first").set_index("id")
        both["campaign_id"] = both["id"].map(first["campaign_id"]).astype("string")
        both["rule"] = both["id"].map(first["rule"]).astype("string")
    both = both.drop_duplicates("id", keep="last")
    fresh = set(both.loc[both["_new"], "id"])
    lines = pd.concat(
        [
            current_lines[~current_lines["order_id"].isin(fresh)],
            delta_lines[delta_lines["order_id"].isin(fresh)],
        ],
        ignore_index=True,
    )
    return both.drop(columns="_new").reset_index(drop=True), lines


def write_snapshot(snapshot: Area, orders: pd.DataFrame, lines: pd.DataFrame) -> None:
    """The attributed orders and their lines become the snapshot (an attribution found is kept)."""
    snapshot.write_parquet("orders.parquet", orders)
    snapshot.write_parquet("lines.parquet", lines)


# -- the ESP orders --------------------------------------------------------------------------------
def esp_orders(mapping: Mapping, todo: pd.DataFrame, lines: pd.DataFrame) -> pd.DataFrame:
    """The ESP orders of `todo` (attributed orders with amounts) by the orders mapping, each with
    its lines as JSON and its key bucket."""
    desired = engine.transform(mapping, engine.prepare(mapping, "attributed", _attributed_inputs(todo)))
    desired["lines"] = _lines_json(desired["id"], lines)
    desired[sync.BUCKET] = engine.bucket_of(desired[engine.KEY], BUCKETS)
    return desired


def _attributed_inputs(orders: pd.DataFrame) -> pd.DataFrame:
    guests = orders["customer_id"].isna()
    customer = orders["customer_id"].astype("string").copy()
    customer[guests] = [
        "guest-" + hashlib.sha256(str(e).encode()).hexdigest()[:16] for e in orders.loc[guests, "email"]
    ]  # a stable id for guest checkouts that does not expose the email
    return pd.DataFrame(
        {
            "id": orders["id"],
            "email": orders["email"],
            "customer_id": customer,
            "campaign_id": orders["campaign_id"],
            "financial_status": orders["financial_status"],
            "currency": orders["currency"],
            "net_total": orders["net_total"],
            "total_tax": orders["total_tax"],
            "total_discounts": orders["total_discounts"],
            "created_at": orders["created_at"],
            "updated_at": orders["updated_at"],
            "cancelled_at": orders["cancelled_at"],
        }
    )


def _lines_json(order_ids: pd.Series, lines: pd.DataFrame) -> list[str]:
    by_order: dict[str, list] = {}
    for li in lines.itertuples(index=False):
        by_order.setdefault(li.order_id, []).append(
            {
                "id": li.line_id,
                "product_id": li.product_id,
                "product_variant_id": li.variant_id,
                "quantity": int(li.quantity),
                "price": float(li.price),
            }
        )
    return [json.dumps(by_order.get(o, []), sort_keys=True) for o in order_ids]


def to_send(
    attributed: pd.DataFrame, delta: pd.DataFrame, acked: set[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(orders the interval's valid orders `delta` touched, orders to build for the ESP): the
    interval's orders and any the ESP has not acknowledged yet (earlier rejects)."""
    touched = attributed[attributed["id"].isin(delta["id"])] if len(delta) else attributed.iloc[0:0]
    todo = attributed[attributed["id"].isin(touched["id"]) | ~attributed["id"].isin(acked)]
    return touched, todo
