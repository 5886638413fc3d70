"""
### Shop conversions → ESP, daily

Takes the shop's (Shopify) orders created or updated in the run's data interval — refunds and
cancellations of older orders included — attributes them to ESP (Mailchimp) campaigns, loads them
into the ESP's e-commerce store, keeps each buyer's `TOTAL_SPENT`, `ORDER_COUNT` and `LAST_ORDER`
member fields exact, and writes a revenue report per campaign and day.

**Flow:** `acquire_run_lock` → `extract` → `validate` (Great Expectations on orders and line items:
known currency, amounts not negative, one row per order id, valid customer email; bad orders quarantined with
reasons) → `transform` → `load` → `report` → `release_run_lock`. Days run one at a time between
the lock and its release, even in a backfill of many days at once (which ignores
`max_active_runs`): they share the orders snapshot and the buyer totals.

**Attribution** (first rule that applies, stated in `include/mappings/shop_orders_to_esp.yaml`):
`mc_cid` in the landing URL → `utm_campaign` matching a campaign title → the customer's last
campaign click within `attribution.window_days` before the order (clicks stored by
`esp_to_crm_engagement`; rerun a day after that DAG has processed it for final attribution) →
unattributed (counted, never dropped).

**Money:** net = total − refunds; cancelled and voided orders count zero; EUR at the rate of the
order's creation day (`include/rates/eur_daily.csv`). An order counts once: a newer version of an
order replaces the older one everywhere.

**Safe by design:** orders of customers who are not audience members are reported
(`unknown_customer_orders`), never loaded — loading them would add people to the audience.
Buyer totals are recomputed from every order so far and written only for existing members,
without any status. Everything is sent only when it changed since the ESP acknowledged it, so a
rerun of a day writes nothing.

**Report:** `report` returns revenue, orders, attribution counts and the paths of
`revenue_by_campaign_day.csv` and `revenue.html` (chart + table) in the run's staging folder.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param

from mailsync.brand_dags import brand_asset, brand_dags, integration_dag, mapping_of, one_run_at_a_time
from mailsync.brands import Brand
from mailsync.mapping.spec import load_mapping
from mailsync.operators.lock import hold_run_lock
from mailsync.operators.shop import (
    ExtractShopOrdersOperator,
    LoadShopOrdersOperator,
    TransformShopOrdersOperator,
)
from mailsync.operators.steps import QualityGateOperator, ReportOperator

INTEGRATION = "shop_conversions_to_esp"
ORDERS, BUYERS = "shop_orders_to_esp", "shop_buyer_totals_to_esp"  # mappings and state names


def build(brand: Brand) -> DAG:
    """The integration for one brand: its shop and ESP, its states, its audience and clicks."""
    orders_mapping = mapping_of(brand, INTEGRATION, ORDERS)
    load_mapping(BUYERS)  # the buyer totals' fields are the product's, not a brand's
    shop, esp = brand.conn_id("shop", INTEGRATION), brand.conn_id("esp", INTEGRATION)
    engagement = brand.dag_id("esp_to_crm_engagement")
    shared = {  # what transform and load share: the brand's ESP, the mappings, the orders' state
        "esp_conn_id": esp,
        "orders_mapping": orders_mapping,
        "buyers_mapping": BUYERS,
        "orders_state": brand.state(ORDERS),
    }
    with integration_dag(
        brand,
        INTEGRATION,
        doc_md=__doc__,
        description="Daily shop orders → ESP e-commerce: campaign attribution, buyer totals, revenue report",
        schedule="0 0 * * *",
        catchup=True,  # every interval runs: days missed while the scheduler was down are not lost
        tags=["shop", "esp", "daily", "revenue"],
        timeout=timedelta(hours=2),
        params={
            "report_days": Param(
                30, type="integer", minimum=1, maximum=366, description="Days covered by the revenue report."
            )
        },
        dry_run="Compute and report; write nothing to the ESP.",
    ) as dag:
        extract = ExtractShopOrdersOperator(
            task_id="extract",
            shop_conn_id=shop,
            pre_execute=hold_run_lock,
            doc_md="Stage the orders (and line items) created or updated in the interval.\n\n"
            f"**Inputs:** the `{shop}` connection (Shopify), the data interval (refunds and "
            "cancellations of older orders included).\n\n"
            "**When it fails:** nothing is written yet. 401/403: fix the connection's token; \"rerun "
            'the task later": the shop was down past the retry budget, clear the task once it answers.',
        )
        validate = QualityGateOperator(
            task_id="validate",
            mapping=orders_mapping,
            source=["orders", "lines"],
            pre_execute=hold_run_lock,
            doc_md="Great Expectations quality gate on orders and line items; bad rows quarantined.\n\n"
            "**Inputs:** the staged orders and lines; the checks of "
            f"`include/mappings/{orders_mapping}.yaml`.\n\n"
            "**When it fails:** past the bad-row threshold: open the quality report named in the "
            "error, fix at the source or raise the threshold in the mapping, clear the task.",
        )
        transform = TransformShopOrdersOperator(
            task_id="transform",
            engagement_dag_id=engagement,
            **shared,
            pre_execute=hold_run_lock,
            doc_md="Orders snapshot, attribution, EUR amounts; ESP orders, buyer totals and the "
            "revenue report.\n\n**Inputs:** the valid orders, the orders snapshot, engagement clicks "
            f"(last-click attribution, stored by `{engagement}`), the `{esp}` connection (campaigns), "
            "`include/rates/eur_daily.csv`.\n\n"
            "**When it fails:** a currency without a rate names the currency and day: add the rate "
            "to the rates file, clear the task. A mapping error names file, line and key.",
        )
        load = LoadShopOrdersOperator(
            task_id="load",
            **shared,
            buyers_state=brand.state(BUYERS),
            products_state=brand.state("shop_products"),
            audience_state=brand.state("crm_to_esp_contacts"),
            retries=5,
            pre_execute=hold_run_lock,
            doc_md="Products, orders (replacing earlier versions) and buyer totals, for audience "
            "members only.\n\n**Inputs:** the transform's ESP orders and buyer totals, the "
            f"`{esp}` connection, the audience of `{brand.dag_id('crm_to_esp_contacts')}`.\n\n"
            "**When it fails:** an ESP outage past the retries: clear it once the ESP answers; the "
            "state knows what was acknowledged, nothing is sent twice.",
        )
        report = ReportOperator(
            task_id="report",
            summary="shop_report",
            results={
                "extract": extract.output,
                "validate": validate.output,
                "transform": transform.output,
                "load": load.output,
            },
            outlets=[brand_asset(brand, "esp_ecommerce_orders")],
            pre_execute=hold_run_lock,
            doc_md="Revenue, orders, attribution, unknown customers, API calls; paths of the CSV and "
            "HTML report.\n\nThe one XCom of this task, the run's note (on the run's page) and "
            "`report.json`.\n\n**When it fails:** the load is done; clear it to get the summary.",
        )
        extract >> validate >> transform >> load >> report
        one_run_at_a_time(extract, report)
    return dag


globals().update(brand_dags(INTEGRATION, build))  # include/brands/*.yaml: a new file is a new DAG
