"""Operators of the shop conversions integration (shop -> ESP e-commerce, buyer totals, revenue).

extract   orders created or updated in the interval (refunds, cancellations of older orders too)
          and their line items, from the shop connection.
validate  the shared quality gate (mailsync.operators.steps.QualityGateOperator) on orders and
          line items: good rows in `valid/orders/` and `valid/lines/`.
transform merge into the orders snapshot (latest version of every order: an order counts once),
          attribute to campaigns, convert to the reporting currency, build the ESP orders of the
          interval, every touched buyer's totals, and the revenue report.
load      products, orders (by id: a new version replaces the old) and buyer totals, each only
          when changed since the ESP last acknowledged it, and only for audience members.
report    the run's summary from the steps' results.

The logic is `mailsync.shop`; these classes wire it to connection ids, mapping and state names
(arguments, today's names by default: a brand passes its own).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator

from mailsync import links
from mailsync.operators.run import Run  # light: brand_dags imports it at parse time anyway

log = logging.getLogger(__name__)
ORDERS, BUYERS, PRODUCTS = "shop_orders_to_esp", "shop_buyer_totals_to_esp", "shop_products"
EXTRACT, VALID, DESIRED, LOAD = "extract", "valid", "desired", "load"
SOURCES = ("orders", "lines")


class ExtractShopOrdersOperator(BaseOperator):
    """Stage the orders (and line items) created or updated in the run's data interval, from the
    shop (Shopify Admin API) behind `shop_conn_id`, as Parquet chunks in `extract/orders/` and
    `extract/lines/`."""

    template_fields: Sequence[str] = ("shop_conn_id",)
    ui_color = "#e8f0fb"

    def __init__(self, *, shop_conn_id: str = "shop_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shop_conn_id = shop_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.hooks.shop import ShopHook
        from mailsync.shop.orders import stage_orders

        run = Run.from_context(context)
        return stage_orders(run, ShopHook(self.shop_conn_id), run.area / EXTRACT)


class _ShopEspStep(BaseOperator):
    """What transform and load share: the ESP connection, the orders and buyer-totals mappings
    and the orders' sync state (the transform sends again orders the ESP has not acknowledged)."""

    template_fields: Sequence[str] = ("esp_conn_id", "orders_mapping", "buyers_mapping", "orders_state")

    def __init__(
        self,
        *,
        esp_conn_id: str = "esp_default",
        orders_mapping: str = ORDERS,
        buyers_mapping: str = BUYERS,
        orders_state: str = ORDERS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.esp_conn_id = esp_conn_id
        self.orders_mapping = orders_mapping
        self.buyers_mapping = buyers_mapping
        self.orders_state = orders_state


class TransformShopOrdersOperator(_ShopEspStep):
    """The valid orders merged into the orders snapshot, attributed to the ESP campaigns of
    `esp_conn_id` (last clicks from the engagement DAG `engagement_dag_id`), converted to the
    reporting currency; the ESP orders, products and buyer totals to load, and the revenue report
    (the task's Revenue report link)."""

    template_fields: Sequence[str] = (*_ShopEspStep.template_fields, "engagement_dag_id")
    operator_extra_links = links.REVENUE
    ui_color = "#eef7ee"

    def __init__(self, *, engagement_dag_id: str = "esp_to_crm_engagement", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engagement_dag_id = engagement_dag_id

    def execute(self, context: Any) -> dict[str, Any]:
        run = Run.from_context(context)
        return self._transform(run)

    def _transform(self, run: Run) -> dict[str, Any]:
        from mailsync.engagement.clicks import clicks_between
        from mailsync.hooks.esp import EspHook
        from mailsync.mapping.spec import load_mapping
        from mailsync.operators.staged import concat
        from mailsync.shop import attribution, buyers, currency, orders, products, revenue
        from mailsync.state import SyncState

        orders_map, buyers_map = load_mapping(self.orders_mapping), load_mapping(self.buyers_mapping)
        delta = concat((run.area / VALID / "orders").iter_parquet())
        delta_lines = concat((run.area / VALID / "lines").iter_parquet())
        snapshot = run.current / "snapshots"
        merged, lines = orders.merge_snapshot(snapshot, delta, delta_lines)
        campaigns = attribution.campaigns(EspHook(self.esp_conn_id), run.end)
        clicks = clicks_between(
            self.engagement_dag_id, run.end - timedelta(days=attribution.CLICK_DAYS), run.end
        )
        merged = attribution.attribute(merged, campaigns, clicks, attribution.window(orders_map))
        orders.write_snapshot(snapshot, merged, lines)  # with the attribution: found once, kept
        attributed = currency.amounts(merged, orders_map)

        acked = set(SyncState(self.orders_state).load()["key"])
        touched, todo = orders.to_send(attributed, delta, acked)
        out = run.area / DESIRED
        out.write_parquet("orders.parquet", orders.esp_orders(orders_map, todo, lines))
        # every product with every variant ever sold, so its doc is stable: the diff sends only
        # products that really changed (a new variant), and order lines always find theirs
        out.write_parquet("products.parquet", products.products(lines))
        totals = buyers.buyer_totals(attributed[attributed["email"].isin(set(touched["email"]))])
        esp_buyers = buyers.esp_buyers(buyers_map, totals)
        out.write_parquet("buyers.parquet", esp_buyers)

        days = int(run.params.get("report_days", 30))
        report = revenue.revenue_report(run, attributed, campaigns, days=days)
        rules = touched["rule"].value_counts().to_dict()
        return {
            "orders_in_snapshot": len(merged),
            "orders_touched": len(touched),
            "buyers_touched": len(esp_buyers),
            "attribution": {k: int(v) for k, v in rules.items()},
            "unattributed": int(touched["campaign_id"].isna().sum()),
            "clicks_until": str(clicks["clicked_at"].max()) if len(clicks) else None,
            **report,
        }


class LoadShopOrdersOperator(_ShopEspStep):
    """Products, then orders, then buyer totals into the ESP behind `esp_conn_id`, each only when
    changed since the ESP acknowledged it (its sync state), orders and totals only for members
    of the audience (`audience_state`, the contacts sync's state): an order of anyone else is
    reported (`load/unknown_customer_orders.csv`), never loaded, as loading it would add them."""

    template_fields: Sequence[str] = (
        *_ShopEspStep.template_fields,
        "buyers_state",
        "products_state",
        "audience_state",
    )
    operator_extra_links = links.REJECTED
    ui_color = "#e3f4f4"

    def __init__(
        self,
        *,
        buyers_state: str = BUYERS,
        products_state: str = PRODUCTS,
        audience_state: str = "crm_to_esp_contacts",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.buyers_state = buyers_state
        self.products_state = products_state
        self.audience_state = audience_state

    def execute(self, context: Any) -> dict[str, Any]:
        import pandas as pd

        from mailsync.hooks.esp import EspHook
        from mailsync.mapping import engine
        from mailsync.mapping.spec import load_mapping
        from mailsync.operators import sync
        from mailsync.reporting import csv_for_people
        from mailsync.shop import buyers as shop_buyers
        from mailsync.shop import ecommerce

        run = Run.from_context(context)
        desired, out = run.area / DESIRED, run.area / LOAD
        orders, products, buyers = (
            desired.read_parquet(f"{n}.parquet") for n in ("orders", "products", "buyers")
        )
        members = sync.audience_members(self.audience_state)
        known = orders["customer.email_address"].str.lower().isin(members).fillna(False).to_numpy()
        unknown, orders = orders[~known], orders[known]
        buyers = buyers[buyers[engine.KEY].isin(members).to_numpy()]
        result: dict[str, Any] = {"unknown_customer_orders": len(unknown)}
        out.write_text(
            "unknown_customer_orders.csv", csv_for_people(pd.DataFrame({"order_id": unknown["id"]}))
        )
        if run.params.get("dry_run"):
            return {
                **result,
                "dry_run": True,
                "would_send_orders": len(orders),
                "would_update_buyers": len(buyers),
            }
        hook = EspHook(self.esp_conn_id)
        result["products"] = ecommerce.load_products(
            hook, products, state=self.products_state, run_id=run.run_id, out=out
        )
        result["orders"] = ecommerce.load_orders(
            hook,
            orders,
            load_mapping(self.orders_mapping),
            state=self.orders_state,
            run_id=run.run_id,
            out=out,
        )
        result["buyers"] = shop_buyers.load_buyers(
            hook,
            buyers,
            load_mapping(self.buyers_mapping),
            state=self.buyers_state,
            run_id=run.run_id,
            out=out / "buyers",
        )
        result.update(hook.stats.as_dict())
        log.info(
            "ESP: %s orders sent, %s unknown customers (not loaded), %s buyers updated, %s write calls",
            result["orders"]["sent"],
            len(unknown),
            result["buyers"]["sent"],
            result["write_calls"],
        )
        return result
