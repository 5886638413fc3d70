"""The shop operators in the providers' style: built with arguments, `execute(context)` called
directly, connections from AIRFLOW_CONN_* (the sandbox's shop and ESP), state and staging of the
test's own. The state names are the test's own too: the operators use only what they are given."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from mailsync.links import ui_url
from mailsync.operators.segments import RefreshBuyerSegmentOperator
from mailsync.operators.shop import (
    ExtractShopOrdersOperator,
    LoadShopOrdersOperator,
    TransformShopOrdersOperator,
)
from mailsync.operators.steps import QualityGateOperator, ReportOperator
from mailsync.state import SyncState
from tests.integration.dags import dagrun
from tests.integration.operators.context import links_shown, operator_context, published

DAG = "shop_operator_test"
START, END = datetime(2026, 11, 19, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)
RUN_URL = f"/mailsync/runs/{DAG}/manual__shop_operator_test"
STATES = {
    "orders_state": "test_orders",
    "buyers_state": "test_buyer_totals",
    "products_state": "test_products",
    "audience_state": "test_audience",
}
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def _context(**params) -> dict:
    return operator_context(DAG, "manual__shop_operator_test", START, END, **params)


@pytest.fixture
def shop(vendors, tmp_path):
    """A fresh sandbox, staging and state of the test's own; the audience state holds the ESP's
    members (as the contacts sync would have acknowledged them)."""
    dagrun.isolate(tmp_path)
    members = {m["email_address"].strip().lower() for m in vendors.esp_members() if m["status"] != "archived"}
    SyncState(STATES["audience_state"]).acknowledge(
        [{"key": e, "fingerprint": "seed", "bucket": 0, "status": "subscribed"} for e in sorted(members)],
        "seed",
    )
    return SimpleNamespace(sandbox=vendors, members=members)


def interval_orders(sandbox) -> list[dict]:
    """The orders the interval covers: updated in [START, END)."""
    return [
        o
        for o in sandbox.shop_orders()
        if START <= datetime.fromisoformat(o["updated_at"]).astimezone(UTC) < END
    ]


def test_extract_reads_the_named_shop_connection_only(vendors, connections, tmp_path, monkeypatch):
    dagrun.isolate(tmp_path)
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_BRAND_B", json.dumps(connections["shop_default"]))
    dead = {"conn_type": "http", "host": "http://127.0.0.1:1", "password": "x", "extra": {"retry_budget": 1}}
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_DEFAULT", json.dumps(dead))  # the default would fail
    vendors.clear_requests()

    staged = ExtractShopOrdersOperator(task_id="extract", shop_conn_id="shop_brand_b").execute(_context())

    want = interval_orders(vendors)
    assert (staged["orders"], staged["lines"]) == (len(want), sum(len(o["line_items"]) for o in want))
    assert staged["api_calls"] == len(vendors.requests("shop")) >= 1


def test_transform_and_load_send_members_orders_once_and_publish_the_revenue_page(shop):
    sandbox = shop.sandbox
    context = _context()
    staged = ExtractShopOrdersOperator(task_id="extract").execute(context)
    gate = QualityGateOperator(
        task_id="validate", mapping="shop_orders_to_esp", source=["orders", "lines"]
    ).execute(context)
    assert set(gate) == {"orders", "lines"} and gate["orders"]["rows_good"] > 0

    transform = TransformShopOrdersOperator(
        task_id="transform", orders_state=STATES["orders_state"], engagement_dag_id="no_clicks_here"
    )
    transformed = transform.execute(step := _context())
    assert transformed["orders_touched"] == gate["orders"]["rows_good"]
    assert transformed["clicks_until"] is None and "last_click" not in transformed["attribution"]
    assert links_shown(transform, step) == {"Revenue report": f"{ui_url()}{RUN_URL}/revenue"}

    members_before = sandbox.esp_members()
    load = LoadShopOrdersOperator(task_id="load", **STATES)
    loaded = load.execute(step := _context())
    esp_orders = sandbox.esp_orders()
    assert loaded["orders"]["sent"] == len(esp_orders) > 0
    assert loaded["orders"]["sent"] + loaded["unknown_customer_orders"] == transformed["orders_touched"]
    assert {o["customer"]["email_address"].strip().lower() for o in esp_orders} <= shop.members
    assert {m["email_address"] for m in sandbox.esp_members()} == {m["email_address"] for m in members_before}
    with_totals = [m for m in sandbox.esp_members() if m["merge_fields"]["TOTAL_SPENT"] != ""]
    assert loaded["buyers"]["sent"] == len(with_totals) > 0
    assert len(SyncState(STATES["orders_state"]).load()) == len(esp_orders)
    assert SyncState("shop_orders_to_esp").count() == 0  # the default state was never touched
    assert links_shown(load, step) == {}  # the ESP refused nothing: no Rejected records link
    # products and orders by batch operations (a POST /batches each per 1,000), buyer totals by
    # batch subscribe (500 a call): 3 writes for this day, where one per order and product was
    assert loaded["write_calls"] == 2 + math.ceil(loaded["buyers"]["sent"] / 500) < len(esp_orders)

    sandbox.clear_requests()
    again = _context()
    transform.execute(again)
    second = load.execute(again)
    assert [r for r in sandbox.requests("esp") if r["method"] in WRITES] == []
    assert (second["orders"]["sent"], second["products"]["sent"], second["buyers"]["sent"]) == (0, 0, 0)

    results = {"extract": staged, "validate": gate, "transform": transformed, "load": loaded}
    reporter, step = ReportOperator(task_id="report", summary="shop_report", results=results), _context()
    report = reporter.execute(step)
    assert report["orders_extracted"] == staged["orders"]
    assert report["orders_sent"] == loaded["orders"]["sent"]
    assert report["quarantined"] == gate["orders"]["rows_quarantined"] + gate["lines"]["rows_quarantined"]
    assert report["revenue_eur_report_window"] == transformed["revenue_eur"]
    assert published(reporter, step) == {"Quality report", "Revenue report"}  # nothing refused or quarantined


def test_the_segment_tags_members_over_the_threshold_from_the_shop_snapshot_once(shop):
    sandbox, context = shop.sandbox, _context()
    ExtractShopOrdersOperator(task_id="extract").execute(context)
    QualityGateOperator(task_id="validate", mapping="shop_orders_to_esp", source=["orders", "lines"]).execute(
        context
    )
    TransformShopOrdersOperator(task_id="transform", orders_state=STATES["orders_state"]).execute(context)
    LoadShopOrdersOperator(task_id="load", **STATES).execute(context)
    spent = {
        m["email_address"].strip().lower(): float(m["merge_fields"]["TOTAL_SPENT"])
        for m in sandbox.esp_members()
        if m["merge_fields"]["TOTAL_SPENT"] != ""
    }  # written by the load above: the same totals by another road

    segment = RefreshBuyerSegmentOperator(
        task_id="refresh_segment",
        shop_dag_id=DAG,
        state="test_segment:{tag}",
        audience_state=STATES["audience_state"],
        threshold_eur=50,
    )
    result = segment.execute(_context())
    tagged = {
        m["email_address"].strip().lower() for m in sandbox.esp_members() if "buyers_over_50_eur" in m["tags"]
    }
    assert tagged == {e for e, v in spent.items() if v >= 50} and result["added"] == len(tagged) > 0
    assert set(SyncState("test_segment:buyers_over_50_eur").load()["key"]) == tagged

    sandbox.clear_requests()
    assert segment.execute(_context())["added"] == 0
    assert [r for r in sandbox.requests("esp") if r["method"] in WRITES] == []
