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

import pendulum
from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task

from mailsync.mapping.spec import load_mapping
from mailsync.notifications import deadline_alert
from mailsync.operators.lock import ReleaseRunLockOperator, RunLockSensor, hold_run_lock
from mailsync.operators.run import Run, logical_date_help
from mailsync.settings import staging_url, task_defaults

staging_url()  # a staging URL no worker could use is this file's import error, shown in the UI
MAPPINGS = (load_mapping("shop_orders_to_esp"), load_mapping("shop_buyer_totals_to_esp"))
SHOP_ORDERS = Asset(name="esp_ecommerce_orders", uri="mailsync://esp/ecommerce/orders")


@dag(
    dag_id="shop_conversions_to_esp",
    description="Daily shop orders → ESP e-commerce: campaign attribution, buyer totals, revenue report",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=True,  # every interval runs: days missed while the scheduler was down are not lost
    max_active_runs=1,  # scheduled runs; backfills ignore it: the run lock serialises every run
    doc_md=__doc__,
    deadline=deadline_alert("shop_conversions_to_esp"),  # include/notifications.yaml
    tags=["mailsync", "shop", "esp", "daily", "revenue"],
    default_args={
        "owner": "data-engineering",
        **task_defaults(),
        "execution_timeout": timedelta(hours=2),
    },
    params={
        "report_days": Param(
            30,
            type="integer",
            minimum=1,
            maximum=366,
            description="Days covered by the revenue report.",
            description_md=logical_date_help("00:00")
            + "\n\n**report_days:** days covered by the revenue report.",
        ),
        "dry_run": Param(False, type="boolean", description="Compute and report; write nothing to the ESP."),
    },
)
def shop_conversions_to_esp():
    @task(pre_execute=hold_run_lock)
    def extract() -> dict:
        """Stage the orders (and line items) created or updated in the interval.

        **Inputs:** the `shop_default` connection (Shopify), the data interval (refunds and
        cancellations of older orders included).

        **When it fails:** nothing is written yet. 401/403: fix the connection's token; "rerun the
        task later": the shop was down past the retry budget, clear the task once it answers.
        """
        from mailsync.operators import shop

        return shop.extract(Run.of_current_task())

    @task(pre_execute=hold_run_lock)
    def validate(extracted: dict) -> dict:
        """Great Expectations quality gate on orders and line items; bad rows quarantined.

        **Inputs:** the staged orders and lines; the checks of
        `include/mappings/shop_conversions_to_esp.yaml`.

        **When it fails:** past the bad-row threshold: open the quality report named in the error,
        fix at the source or raise the threshold in the mapping, clear the task.
        """
        from mailsync.operators import shop

        return shop.validate(Run.of_current_task())

    @task(pre_execute=hold_run_lock)
    def transform(validated: dict) -> dict:
        """Orders snapshot, attribution, EUR amounts; ESP orders, buyer totals and the revenue report.

        **Inputs:** the valid orders, the orders snapshot, engagement clicks (last-click attribution),
        `include/rates/eur_daily.csv`.

        **When it fails:** a currency without a rate names the currency and day: add the rate to
        the rates file, clear the task. A mapping error names file, line and key.
        """
        from mailsync.operators import shop

        return shop.transform(Run.of_current_task())

    @task(retries=5, pre_execute=hold_run_lock)
    def load(transformed: dict) -> dict:
        """Products, orders (replacing earlier versions) and buyer totals, for audience members only.

        **Inputs:** the transform's ESP orders and buyer totals, the `esp_default` connection.

        **When it fails:** an ESP outage past the retries: clear it once the ESP answers; the state
        knows what was acknowledged, nothing is sent twice.
        """
        from mailsync.operators import shop

        return shop.load(Run.of_current_task())

    @task(outlets=[SHOP_ORDERS], pre_execute=hold_run_lock, multiple_outputs=False)
    def report(extracted: dict, validated: dict, transformed: dict, loaded: dict) -> dict:
        """Revenue, orders, attribution, unknown customers, API calls; paths of the CSV and HTML report.

        The one XCom of this task, the run's note (on the run's page) and `report.json`.

        **When it fails:** the load is done; clear it to get the summary.
        """
        from mailsync.operators.report import shop_report

        return shop_report(Run.of_current_task(), extracted, validated, transformed, loaded)

    lock = RunLockSensor(task_id="acquire_run_lock")
    extracted = extract()
    validated = validate(extracted)
    transformed = transform(validated)
    lock >> extracted
    done = report(extracted, validated, transformed, load(transformed))
    done >> ReleaseRunLockOperator(task_id="release_run_lock").as_teardown(setups=lock)


shop_conversions_to_esp()
