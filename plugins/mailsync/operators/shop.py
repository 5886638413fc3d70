"""Task logic of the daily shop -> ESP conversions DAG (shop_conversions_to_esp).

extract   orders created or updated in the interval (refunds, cancellations of older orders too).
validate  quality gate on orders and line items.
transform merge into the orders snapshot (latest version of every order: an order counts once),
          attribute to campaigns, convert to the reporting currency, build the ESP orders of the
          interval, every touched buyer's totals, and the revenue report.
load      products, orders (by id: a new version replaces the old) and buyer totals, each only
          when changed since the ESP last acknowledged it, and only for audience members.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta
from typing import Any

import pandas as pd

from mailsync.hooks.esp import EspHook
from mailsync.hooks.shop import ShopHook
from mailsync.mapping import engine
from mailsync.mapping.spec import load_mapping
from mailsync.operators import sync
from mailsync.operators.engagement import clicks_between
from mailsync.operators.run import Run
from mailsync.operators.staged import Stager, concat, validate_chunks
from mailsync.settings import BUCKETS, INCLUDE_DIR
from mailsync.state import SyncState

log = logging.getLogger(__name__)
ORDERS, BUYERS = "shop_orders_to_esp", "shop_buyer_totals_to_esp"
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
UNATTRIBUTED = "(unattributed)"


# -- extract ---------------------------------------------------------------------------------------
def _flat_order(order: dict) -> dict:
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


def _flat_lines(order: dict) -> list[dict]:
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


def extract(run: Run) -> dict[str, Any]:
    """Stage the interval's orders and their line items (Shopify's bounds are inclusive: orders
    updated exactly at the interval end belong to the next interval)."""
    from datetime import UTC, datetime

    started_at = datetime.now(UTC).isoformat()
    hook = ShopHook()
    orders_out = Stager(run.area / "extract" / "orders", ORDER_COLUMNS)
    lines_out = Stager(run.area / "extract" / "lines", LINE_COLUMNS)
    for page in hook.iter_orders(run.start, run.end):  # one pass, a chunk at a time in memory
        kept = [o for o in page if _before(o, run.end)]
        orders_out.add([_flat_order(o) for o in kept])
        lines_out.add([li for o in kept for li in _flat_lines(o)])
    orders, lines = orders_out.close(), lines_out.close()
    log.info("Extracted %d orders with %d line items", orders, lines)
    return {"started_at": started_at, "orders": orders, "lines": lines, **hook.stats.as_dict()}


def _before(order: dict, end) -> bool:
    updated = pd.Timestamp(order.get("updated_at"))
    return updated.tz_convert("UTC") < pd.Timestamp(end).tz_convert("UTC")


# -- validate --------------------------------------------------------------------------------------
def validate(run: Run) -> dict[str, Any]:
    m = load_mapping(ORDERS)
    result = {}
    for source in ("orders", "lines"):
        out = run.area / "validated" / source
        out.clear()
        result[source] = validate_chunks(
            m,
            source,
            run.area / "extract" / source,
            run.area / "quality" / source,
            label=f"{run.dag_id} {run.label}",
            write_good=lambda i, good, out=out: out.write_parquet(f"part-{i:05d}.parquet", good),
        )
    return result


# -- transform -------------------------------------------------------------------------------------
def transform(run: Run) -> dict[str, Any]:
    orders_map = load_mapping(ORDERS)
    delta = concat((run.area / "validated" / "orders").iter_parquet())
    delta_lines = concat((run.area / "validated" / "lines").iter_parquet())
    orders, lines = _merge_snapshot(run, delta, delta_lines)
    campaigns = _campaigns(run)
    window = timedelta(days=orders_map.attribution.window_days if orders_map.attribution else 7)
    clicks = clicks_between(run.end - timedelta(days=60), run.end)
    orders = attribute(orders, campaigns, clicks, window)
    snapshot = run.current / "snapshots"
    snapshot.write_parquet("orders.parquet", orders)  # with the attribution: found once, kept
    snapshot.write_parquet("lines.parquet", lines)
    attributed = amounts(orders, orders_map)

    touched = attributed[attributed["id"].isin(delta["id"])] if len(delta) else attributed.iloc[0:0]
    acked = set(SyncState(ORDERS).load()["key"])
    todo = attributed[
        attributed["id"].isin(touched["id"]) | ~attributed["id"].isin(acked)
    ]  # the interval's orders, and any the ESP has not acknowledged yet (earlier rejects)
    desired_orders = engine.transform(
        orders_map, engine.prepare(orders_map, "attributed", _attributed_inputs(todo))
    )
    desired_orders["lines"] = _lines_json(desired_orders["id"], lines)
    desired_orders[sync.BUCKET] = engine.bucket_of(desired_orders[engine.KEY], BUCKETS)
    out = run.area / "desired"
    out.write_parquet("orders.parquet", desired_orders)
    # every product with every variant ever sold, so its doc is stable: the diff sends only
    # products that really changed (a new variant), and order lines always find theirs
    out.write_parquet("products.parquet", _products(lines))

    buyers_map = load_mapping(BUYERS)
    emails = set(touched["email"])
    totals = buyer_totals(attributed[attributed["email"].isin(emails)])
    buyers = engine.transform(buyers_map, engine.prepare(buyers_map, "buyers", totals))
    buyers[sync.BUCKET] = engine.bucket_of(buyers[engine.KEY], BUCKETS)
    out.write_parquet("buyers.parquet", buyers)

    report = revenue_report(run, attributed, campaigns, days=int(run.params.get("report_days", 30)))
    rules = touched["rule"].value_counts().to_dict()
    return {
        "orders_in_snapshot": len(orders),
        "orders_touched": len(touched),
        "buyers_touched": len(buyers),
        "attribution": {k: int(v) for k, v in rules.items()},
        "unattributed": int(touched["campaign_id"].isna().sum()),
        "clicks_until": str(clicks["clicked_at"].max()) if len(clicks) else None,
        **report,
    }


def _merge_snapshot(
    run: Run, delta: pd.DataFrame, delta_lines: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Latest version of every order (by updated_at) with its lines; reruns and older backfills
    change nothing. Lines of quarantined orders never enter. An order keeps the campaign it was
    attributed to when first seen, whatever later versions (refunds) say."""
    snap = run.current / "snapshots"
    current = snap.read_parquet("orders.parquet") if snap.exists("orders.parquet") else delta.iloc[0:0]
    current_lines = (
        snap.read_parquet("lines.parquet") if snap.exists("lines.parquet") else delta_lines.iloc[0:0]
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


def _campaigns(run: Run) -> pd.DataFrame:
    """Campaigns sent in the last 90 days: id, title, emails sent (for attribution and rates)."""
    hook = EspHook()
    rows = [
        {
            "campaign_id": c["id"],
            "title": (c.get("settings") or {}).get("title") or "",
            "emails_sent": int(c.get("emails_sent") or 0),
        }
        for page in hook.iter_campaigns(
            since_send_time=(run.end - timedelta(days=90)).isoformat(), before_send_time=run.end.isoformat()
        )
        for c in page
    ]
    return pd.DataFrame(rows, columns=["campaign_id", "title", "emails_sent"])


def _squash(text: pd.Series) -> pd.Series:
    return text.fillna("").str.lower().str.replace(r"[^0-9a-z]+", "", regex=True)


def attribute(
    orders: pd.DataFrame, campaigns: pd.DataFrame, clicks: pd.DataFrame, window: timedelta
) -> pd.DataFrame:
    """Add campaign_id and the rule that found it (see the mapping's description). An order
    attributed before keeps its campaign; only unattributed ones are looked at again."""
    out = orders.copy()
    known = set(campaigns["campaign_id"])
    sites = out["landing_site"].fillna("") + " " + out["referring_site"].fillna("")
    by_mc_cid = sites.str.extract(r"[?&]mc_cid=([0-9A-Za-z]+)", expand=False)
    by_mc_cid = by_mc_cid.where(by_mc_cid.isin(known))
    utm = sites.str.extract(r"[?&]utm_campaign=([^&#\s]+)", expand=False)
    slug_to_id = dict(zip(_squash(campaigns["title"]), campaigns["campaign_id"], strict=True))
    by_utm = _squash(utm).map(slug_to_id).where(utm.notna())
    by_click = _last_click(out, clicks, window)
    found = by_mc_cid.fillna(by_utm).fillna(by_click).astype("string")
    rule = pd.Series("unattributed", index=out.index, dtype="string")
    rule[by_click.notna().to_numpy()] = "last_click"
    rule[by_utm.notna().to_numpy()] = "utm_campaign"
    rule[by_mc_cid.notna().to_numpy()] = "mc_cid"
    kept = (
        out["rule"].notna() & out["rule"].ne("unattributed")
        if "rule" in out
        else pd.Series(False, index=out.index)
    )
    out["campaign_id"] = out["campaign_id"].where(kept, found) if "campaign_id" in out else found
    out["rule"] = out["rule"].where(kept, rule) if "rule" in out else rule
    return out


def _last_click(orders: pd.DataFrame, clicks: pd.DataFrame, window: timedelta) -> pd.Series:
    if orders.empty or clicks.empty:
        return pd.Series(pd.NA, index=orders.index, dtype="string")
    left = orders[["email", "created_at"]].reset_index().sort_values("created_at")
    right = clicks.rename(columns={"clicked_at": "created_at"}).sort_values("created_at")
    right["created_at"] = right["created_at"].astype(left["created_at"].dtype)
    right["email"] = right["email"].astype(left["email"].dtype)
    hit = pd.merge_asof(
        left,
        right,
        on="created_at",
        by="email",
        direction="backward",
        tolerance=pd.Timedelta(window),
        allow_exact_matches=True,
    )
    return hit.set_index("index")["campaign_id"].reindex(orders.index).astype("string")


def amounts(orders: pd.DataFrame, mapping) -> pd.DataFrame:
    """Net amounts (total - refunds, zero when cancelled or voided) and their reporting value."""
    out = orders.copy()
    cancelled = out["cancelled_at"].notna() | out["financial_status"].eq("voided").fillna(False)
    net = (out["total_price"].fillna(0) - out["refunded"].fillna(0)).clip(lower=0)
    out["counted"] = ~cancelled.to_numpy() & (net > 0).to_numpy()
    out["net_total"] = net.where(~cancelled, 0.0).round(2)
    rates = _rates(mapping)
    day = out["created_at"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize().astype("datetime64[us]")
    left = pd.DataFrame(
        {
            "row": range(len(out)),
            "day": day.to_numpy(),
            # the rates' own dtype: an empty day's column would be object and merge_asof refuses it
            "currency": pd.array(out["currency"].astype(str).to_numpy(), dtype=rates["currency"].dtype),
        }
    )
    joined = pd.merge_asof(
        left.sort_values("day"),
        rates,
        on="day",
        by="currency",
        direction="backward",
        tolerance=pd.Timedelta(days=4),
    )  # a rate older than a few days is no rate: the run fails and names the file to extend
    rate = joined.set_index("row")["rate"].reindex(range(len(out))).to_numpy()
    out["net_reporting"] = (out["net_total"].to_numpy(dtype=float) * rate).round(2)
    missing = out["net_reporting"].isna() & out["counted"]
    if missing.any():
        raise ValueError(
            f"no {mapping.reporting.currency} rate for {missing.sum()} order(s): "
            f"extend {mapping.reporting.rates_file}"
        )
    return out


def _rates(mapping) -> pd.DataFrame:
    spec = mapping.reporting
    table = pd.read_csv(INCLUDE_DIR / spec.rates_file, dtype={"currency": str})
    return pd.DataFrame(
        {
            "day": pd.to_datetime(table["date"]).astype("datetime64[us]"),
            "currency": table["currency"],
            "rate": table[spec.rate_column].astype(float),
        }
    ).sort_values("day")


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


def _products(lines: pd.DataFrame) -> pd.DataFrame:
    """One product doc per product: every variant sold, titles and prices of its latest sale
    (deterministic whatever the order of the lines, so unchanged products diff as unchanged)."""
    rows = []
    ordered = lines.assign(_n=pd.to_numeric(lines["line_id"], errors="coerce")).sort_values(["_n", "line_id"])
    for product_id, group in ordered.groupby("product_id", sort=True):
        variants = group.drop_duplicates("variant_id", keep="last").sort_values("variant_id")
        rows.append(
            {
                "id": product_id,
                "doc": json.dumps(
                    {
                        "id": product_id,
                        "title": str(group["title"].iloc[-1] or product_id),
                        "variants": [
                            {
                                "id": v.variant_id,
                                "title": str(v.variant_title or v.title or v.variant_id),
                                "price": float(v.price),
                            }
                            for v in variants.itertuples(index=False)
                        ],
                    },
                    sort_keys=True,
                ),
            }
        )
    return pd.DataFrame(rows, columns=["id", "doc"])


def buyer_totals(orders: pd.DataFrame) -> pd.DataFrame:
    """Per buyer over every order so far: spent (reporting currency), orders, last order day."""
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


# -- revenue report --------------------------------------------------------------------------------
def revenue_table(orders: pd.DataFrame, campaigns: pd.DataFrame, start, end) -> pd.DataFrame:
    """Revenue, orders, buyers and conversion rate per campaign and order day in [start, end)."""
    created = orders["created_at"].dt.tz_convert("UTC")
    window = orders[((created >= start) & (created < end)).to_numpy() & orders["counted"].to_numpy()].copy()
    window["day"] = window["created_at"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%d")
    window["campaign"] = window["campaign_id"].fillna(UNATTRIBUTED)
    g = window.groupby(["day", "campaign"], sort=True)
    table = pd.DataFrame(
        {
            "orders": g["id"].count(),
            "buyers": g["email"].nunique(),
            "revenue_eur": g["net_reporting"].sum().round(2),
        }
    )
    native = window.pivot_table(
        index=["day", "campaign"], columns="currency", values="net_total", aggfunc="sum"
    )
    table = table.join(native.round(2).add_prefix("revenue_native_")).reset_index()
    info = campaigns.set_index("campaign_id")
    table["campaign_title"] = table["campaign"].map(info["title"]).fillna("")
    sent = pd.to_numeric(table["campaign"].map(info["emails_sent"]), errors="coerce")
    table["conversion_rate"] = (table["orders"] / sent).where(sent > 0).round(6)
    first = ["day", "campaign", "campaign_title", "orders", "buyers", "revenue_eur", "conversion_rate"]
    return table[first + [c for c in table.columns if c not in first]]


def revenue_report(run: Run, orders: pd.DataFrame, campaigns: pd.DataFrame, *, days: int) -> dict[str, Any]:
    from mailsync.reporting import csv_for_people, render_revenue_page

    start = run.end - timedelta(days=days)
    table = revenue_table(orders, campaigns, start, run.end)
    out = run.area / "report"
    csv_path = out.write_text("revenue_by_campaign_day.csv", csv_for_people(table))
    html_path = out.write_text("revenue.html", render_revenue_page(table, start=start, end=run.end))
    return {
        "revenue_eur": float(table["revenue_eur"].sum()) if len(table) else 0.0,
        "revenue_csv": str(csv_path),
        "revenue_html": str(html_path),
    }


# -- load ------------------------------------------------------------------------------------------
def load(run: Run) -> dict[str, Any]:
    """Products, then orders, then buyer totals; only for customers who are audience members."""
    area = run.area / "desired"
    orders, products, buyers = (area.read_parquet(f"{n}.parquet") for n in ("orders", "products", "buyers"))
    members = sync.audience_members()
    known = orders["customer.email_address"].str.lower().isin(members)
    unknown = orders[~known.fillna(False).to_numpy()]
    orders = orders[known.fillna(False).to_numpy()]
    buyers = buyers[buyers[engine.KEY].isin(members).to_numpy()]
    result: dict[str, Any] = {"unknown_customer_orders": len(unknown)}
    from mailsync.reporting import csv_for_people

    (run.area / "load").write_text(
        "unknown_customer_orders.csv", csv_for_people(pd.DataFrame({"order_id": unknown["id"]}))
    )
    if run.params.get("dry_run"):
        return {
            **result,
            "dry_run": True,
            "would_send_orders": len(orders),
            "would_update_buyers": len(buyers),
        }
    hook = EspHook()
    result["products"] = _load_products(hook, products, run.run_id)
    result["orders"] = _load_orders(hook, orders, run.run_id, out=run.area / "load")
    upserts, _, counts = sync.diff(buyers, SyncState(BUYERS).load(sorted(set(buyers[sync.BUCKET]))))
    result["buyers"] = sync.load_members(
        hook,
        load_mapping(BUYERS),
        BUYERS,
        upserts,
        _no_removals(),
        run_id=run.run_id,
        out=run.area / "load" / "buyers",
    ) | {"unchanged": counts["unchanged"]}
    result.update(hook.stats.as_dict())
    log.info(
        "ESP: %s orders sent, %s unknown customers (not loaded), %s buyers updated, %s write calls",
        result["orders"]["sent"],
        len(unknown),
        result["buyers"]["sent"],
        result["write_calls"],
    )
    return result


def _no_removals() -> pd.DataFrame:
    return pd.DataFrame({"key": pd.Series(dtype="string"), "bucket": pd.Series(dtype="int64")})


def _load_products(hook: EspHook, products: pd.DataFrame, run_id: str) -> dict[str, int]:
    state = SyncState("shop_products")
    products = products.assign(
        **{
            engine.KEY: products["id"],
            engine.FINGERPRINT: [_digest(d) for d in products["doc"]],
            sync.BUCKET: 0,
        }
    )
    upserts, _, counts = sync.diff(products, state.load([0]))
    meta = sync.ack_meta(upserts)
    for result in hook.upsert_products(json.loads(doc) for doc in upserts["doc"]):
        sync.acknowledge(state, result.accepted, meta, run_id)
    return {"sent": len(upserts), "unchanged": counts["unchanged"]}


def _load_orders(hook: EspHook, orders: pd.DataFrame, run_id: str, *, out) -> dict[str, Any]:
    """An order's fingerprint covers its lines too: a changed line sends the order again."""
    state = SyncState(ORDERS)
    prints = [
        fp + _digest(lines)[:8] for fp, lines in zip(orders[engine.FINGERPRINT], orders["lines"], strict=True)
    ]
    orders = orders.assign(**{engine.FINGERPRINT: pd.Series(prints, index=orders.index, dtype="string")})
    acked = state.load(sorted(set(orders[sync.BUCKET])))
    upserts, _, counts = sync.diff(orders, acked)
    meta = sync.ack_meta(upserts)
    known = set(acked["key"])

    def orders_with_lines():
        for doc, lines in zip(sync.payloads(load_mapping(ORDERS), upserts), upserts["lines"], strict=True):
            yield {**doc, "lines": json.loads(lines)}, doc["id"] in known

    rejected = []
    for result in hook.upsert_orders(orders_with_lines()):
        sync.acknowledge(state, result.accepted, meta, run_id)
        rejected.extend(result.rejected)
    path = out.write_text("rejected_orders.csv", sync.rejected_csv(rejected))  # tried again next run
    return {
        "sent": len(upserts),
        "unchanged": counts["unchanged"],
        "rejected": len(rejected),
        "rejected_file": str(path),
    }


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
