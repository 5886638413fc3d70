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

from airflow.sdk import DAG, Param

from mailsync.brand_dags import brand_asset, brand_dags, integration_dag, mapping_of, one_run_at_a_time
from mailsync.brands import Brand
from mailsync.operators.lock import hold_run_lock
from mailsync.operators.segments import STATE, RefreshBuyerSegmentOperator

INTEGRATION = "esp_buyer_segments"


def build(brand: Brand) -> DAG:
    """The segment for one brand: its ESP, its audience, its shop DAG's orders snapshot."""
    esp = brand.conn_id("esp", INTEGRATION)
    with integration_dag(
        brand,
        INTEGRATION,
        doc_md=__doc__,
        description="Tag audience members who bought for more than N EUR, after contacts and orders "
        "are synced",
        asset_schedule=brand_asset(brand, "esp_audience_contacts")
        & brand_asset(brand, "esp_ecommerce_orders"),
        tags=["esp", "segments", "asset-scheduled"],
        timeout=timedelta(hours=1),
        params={
            "threshold_eur": Param(
                100, type="number", minimum=0, description="Net spend that qualifies a buyer."
            )
        },
        dry_run="Report the changes; tag nobody.",
    ) as dag:
        refresh = RefreshBuyerSegmentOperator(
            task_id="refresh_segment",
            esp_conn_id=esp,
            shop_dag_id=brand.dag_id("shop_conversions_to_esp"),
            state=brand.state(STATE),  # segment:buyers_over_100_eur for the default brand, as before
            audience_state=brand.state("crm_to_esp_contacts"),
            orders_mapping=mapping_of(brand, "shop_conversions_to_esp", "shop_orders_to_esp"),
            threshold_eur="{{ params.threshold_eur }}",
            pre_execute=hold_run_lock,
            doc_md="Add the tag to members who now qualify, remove it from those who no longer do.\n\n"
            "**Inputs:** the orders snapshot and the contacts sync state (both Assets updated), the "
            f"`threshold_eur` param, the `{esp}` connection.\n\n"
            "**When it fails:** an ESP outage: clear it once the ESP answers (tagging is idempotent).",
        )
        one_run_at_a_time(refresh, refresh)
    return dag


globals().update(brand_dags(INTEGRATION, build))  # include/brands/*.yaml: a new file is a new DAG
