"""
### ESP buyer segments (Asset-scheduled)

Keeps a static ESP segment — the member tag `buyers_over_<N>_eur` — of audience members whose
purchases (net of refunds, cancellations excluded, in EUR) reach `threshold_eur`, so marketers
can target "buyers over N EUR" without building the segment by hand.

**When it runs:** after *both* `crm_to_esp_contacts` (the audience exists) and
`shop_conversions_to_esp` (every order so far is known) have updated their Assets — that is the
right order: tagging before the contacts sync would miss new members, tagging before the shop
sync would use stale totals. No clock schedule.

**What it does:** computes each buyer's total from the shop DAG's order snapshot, compares the
members who qualify with those it tagged before (its own state), and adds or removes the tag
only where that changed (one ESP call per changed member). Members below the threshold after a
refund lose the tag. Nobody outside the audience is touched.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, task

from mailsync.notifications import deadline_alert
from mailsync.operators.lock import ReleaseRunLockOperator, RunLockSensor, hold_run_lock
from mailsync.operators.run import Run
from mailsync.settings import staging_url, task_defaults

staging_url()  # a staging URL no worker could use is this file's import error, shown in the UI
ESP_CONTACTS = Asset(name="esp_audience_contacts", uri="mailsync://esp/audience/contacts")
SHOP_ORDERS = Asset(name="esp_ecommerce_orders", uri="mailsync://esp/ecommerce/orders")


@dag(
    dag_id="esp_buyer_segments",
    description="Tag audience members who bought for more than N EUR, after contacts and orders are synced",
    schedule=ESP_CONTACTS & SHOP_ORDERS,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    deadline=deadline_alert("esp_buyer_segments"),  # include/notifications.yaml
    tags=["mailsync", "esp", "segments", "asset-scheduled"],
    default_args={
        "owner": "data-engineering",
        **task_defaults(),
        "execution_timeout": timedelta(hours=1),
    },
    params={
        "threshold_eur": Param(
            100, type="number", minimum=0, description="Net spend that qualifies a buyer."
        ),
        "dry_run": Param(False, type="boolean", description="Report the changes; tag nobody."),
    },
)
def esp_buyer_segments():
    @task(pre_execute=hold_run_lock)
    def refresh_segment() -> dict:
        """Add the tag to members who now qualify, remove it from those who no longer do.

        **Inputs:** the orders snapshot and the contacts sync state (both Assets updated), the
        `threshold_eur` param, the `esp_default` connection.

        **When it fails:** an ESP outage: clear it once the ESP answers (tagging is idempotent).
        """
        from mailsync.operators import segments

        return segments.refresh(Run.of_current_task())

    lock = RunLockSensor(task_id="acquire_run_lock")
    lock >> refresh_segment() >> ReleaseRunLockOperator(task_id="release_run_lock").as_teardown(setups=lock)


esp_buyer_segments()
