"""The shop's e-commerce load through Mailchimp batch operations, against the sandbox: a batch
that refuses half its operations, a batch that never finishes, and the ESP calls of a day's load.

The ESP connection's extra lowers the poll interval and timeout (`batch_poll_s`,
`batch_timeout_s`, as strings, as the ecommerce module's docstring says), so each test waits
well under a second for its batches."""

from __future__ import annotations

import csv
import io
import math
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from mailsync.hooks.base import JobTimeout
from mailsync.hooks.esp import EspHook
from mailsync.mapping.spec import load_mapping
from mailsync.operators.run import Run
from mailsync.operators.shop import (
    ExtractShopOrdersOperator,
    LoadShopOrdersOperator,
    TransformShopOrdersOperator,
)
from mailsync.operators.steps import QualityGateOperator, ReportOperator
from mailsync.shop import ecommerce
from mailsync.state import SyncState
from tests.connections import set_connection
from tests.integration.dags import dagrun
from tests.integration.operators.context import operator_context, published, run_task

DAG = "shop_batches_test"
START, END = datetime(2026, 11, 19, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)
STATES = {
    "orders_state": "batch_orders",
    "buyers_state": "batch_buyer_totals",
    "products_state": "batch_products",
    "audience_state": "batch_audience",
}
FAST = {"batch_poll_s": "0.02", "batch_timeout_s": "10"}
REFUSED = "HTTP 400 Invalid Resource: The operation was refused by the sandbox's jobs fault (fail_every)."


def _context() -> dict:
    return operator_context(DAG, "manual__shop_batches_test", START, END)


def _fast_esp(connections: dict, **extra) -> None:
    definition = {**connections["esp_default"]}
    definition["extra"] = {**definition.get("extra", {}), **FAST, **extra}
    set_connection("esp_default", definition)


@pytest.fixture
def day(vendors, connections, tmp_path):
    """A day of the shop extracted, gated and transformed (no ESP write yet), the audience state
    holding the ESP's members; the ESP connection polling fast. Yields what the load reads."""
    dagrun.isolate(tmp_path)
    _fast_esp(connections)
    members = {m["email_address"].strip().lower() for m in vendors.esp_members() if m["status"] != "archived"}
    SyncState(STATES["audience_state"]).acknowledge(
        [{"key": e, "fingerprint": "seed", "bucket": 0, "status": "subscribed"} for e in sorted(members)],
        "seed",
    )
    context = _context()
    ExtractShopOrdersOperator(task_id="extract").execute(context)
    QualityGateOperator(task_id="validate", mapping="shop_orders_to_esp", source=["orders", "lines"]).execute(
        context
    )
    TransformShopOrdersOperator(
        task_id="transform", orders_state=STATES["orders_state"], engagement_dag_id="no_clicks_here"
    ).execute(context)
    desired = Run.from_context(context).area / "desired"
    orders = desired.read_parquet("orders.parquet")
    orders = orders[orders["customer.email_address"].str.lower().isin(members).fillna(False).to_numpy()]
    yield SimpleNamespace(
        sandbox=vendors,
        context=context,
        orders=orders,
        products=desired.read_parquet("products.parquet"),
        out=Run.from_context(context).area / "load",
    )
    set_connection("esp_default", connections["esp_default"])


def _load_orders(day, hook: EspHook) -> dict:
    return ecommerce.load_orders(
        hook,
        day.orders,
        load_mapping("shop_orders_to_esp"),
        state=STATES["orders_state"],
        run_id="manual__shop_batches_test",
        out=day.out,
    )


def _rejected_rows(day) -> list[dict]:
    return list(csv.DictReader(io.StringIO(day.out.read_text("rejected_orders.csv"))))


def test_half_refused_half_acknowledged_and_the_rerun_sends_only_the_refused_half(day):
    sandbox = day.sandbox
    products = ecommerce.load_products(
        EspHook(), day.products, state=STATES["products_state"], run_id="r1", out=day.out
    )
    assert products["sent"] == len(day.products) > 0 and products["rejected"] == 0
    n = len(day.orders)
    assert n >= 10

    sandbox.set_faults("esp", jobs={"fail_every": 2})  # every 2nd operation of a batch refused
    first = _load_orders(day, EspHook())
    refused = n // 2
    assert (first["sent"], first["rejected"]) == (n, refused)
    rows = _rejected_rows(day)
    assert len(rows) == refused and {r["reason"] for r in rows} == {REFUSED}
    acked = set(SyncState(STATES["orders_state"]).load()["key"])
    in_esp = {o["id"] for o in sandbox.esp_orders()}
    assert acked == in_esp and len(acked) == n - refused  # acknowledged exactly what the ESP took
    assert not acked & {r["key"] for r in rows}

    sandbox.clear_faults("esp")
    sandbox.clear_requests()
    second = _load_orders(day, EspHook())
    assert (second["sent"], second["rejected"], second["unchanged"]) == (refused, 0, n - refused)
    posts = [r for r in sandbox.requests("esp") if r["method"] == "POST"]
    assert [r["path"] for r in posts] == ["/3.0/batches"]  # one batch, the refused half only
    assert set(posts[0]["record_keys"]) == {r["key"] for r in rows}
    assert set(SyncState(STATES["orders_state"]).load()["key"]) == {o["id"] for o in sandbox.esp_orders()}
    assert len(sandbox.esp_orders()) == n
    assert _rejected_rows(day) == []


def test_refused_orders_are_in_the_runs_report_and_its_warning_not_only_in_a_file(day):
    """On-call reads the report and the run's note: a load that the ESP half refused must say so
    there (count, files, a warning that notifies), not succeed looking clean."""
    day.sandbox.set_faults("esp", jobs={"fail_every": 2})
    load = LoadShopOrdersOperator(task_id="load", **STATES)
    loaded = load.execute(day.context)
    refused = loaded["orders"]["rejected"]
    assert 0 < refused < len(day.orders)  # every 2nd operation of each batch, products included
    assert "Rejected records" in published(load, day.context)

    results = {"extract": {"orders": len(day.orders)}, "validate": {}, "transform": {}, "load": loaded}
    day.sandbox.clear_mail()
    report = run_task(ReportOperator(task_id="report", summary="shop_report", results=results), day.context)
    assert report["orders_rejected"] == refused
    assert report["products_rejected"] == loaded["products"]["rejected"]
    assert report["rejected_files"] and all(f.endswith(".csv") for f in report["rejected_files"])
    assert any(f"refused {refused} orders" in w and "sent again next run" in w for w in report["warnings"])
    [mail] = day.sandbox.mail()  # on-call is told, once
    assert "succeeded with warnings" in mail["subject"] and f"refused {refused} orders" in mail["html"]


def test_an_order_the_state_does_not_know_but_the_esp_has_is_updated_by_the_other_verb(day):
    """The state lost (a restored database): every order is POSTed, the ESP answers "already
    exists", and a second small batch PATCHes them; nothing is refused."""
    hook = EspHook()
    ecommerce.load_products(hook, day.products, state=STATES["products_state"], run_id="r1")
    _load_orders(day, hook)
    n = len(day.orders)
    SyncState(STATES["orders_state"]).forget([str(k) for k in day.orders["id"]])
    day.sandbox.clear_requests()
    again = _load_orders(day, EspHook())
    assert (again["sent"], again["rejected"]) == (n, 0)
    assert len(SyncState(STATES["orders_state"]).load()) == n
    posts = [r for r in day.sandbox.requests("esp") if r["method"] == "POST"]
    assert len(posts) == 2  # POST round (all "already exists"), PATCH round


def test_a_batch_that_never_finishes_fails_naming_it_and_acknowledges_nothing(day, connections):
    _fast_esp(connections, batch_timeout_s="0.3")
    ecommerce.load_products(EspHook(), day.products, state=STATES["products_state"], run_id="r1")
    day.sandbox.set_faults("esp", jobs={"stall": True})
    day.sandbox.clear_requests()
    with pytest.raises(JobTimeout) as err:
        _load_orders(day, EspHook())
    stopped = [r["path"].rsplit("/", 1)[-1] for r in day.sandbox.requests("esp") if r["method"] == "DELETE"]
    assert len(stopped) == 1
    message = str(err.value)
    assert message.startswith("loading orders (first round): ESP batch operations: 1 batch(es)")
    assert f"{stopped[0]} started 0/{len(day.orders)}" in message and "batch_timeout_s is 0.3s" in message
    assert SyncState(STATES["orders_state"]).count() == 0


def test_a_days_load_takes_a_handful_of_esp_calls(day):
    """Products, orders (≤ 1,000 operations per batch: a POST, two status reads, the archive)
    and buyer totals (≤ 500 members per call): a handful of calls, not one per order."""
    sandbox = day.sandbox
    sandbox.clear_requests()
    loaded = LoadShopOrdersOperator(task_id="load", **STATES).execute(day.context)
    orders, buyers = loaded["orders"]["sent"], loaded["buyers"]["sent"]
    assert orders == len(day.orders) == len(sandbox.esp_orders()) and loaded["orders"]["rejected"] == 0
    batches = math.ceil(loaded["products"]["sent"] / 1000) + math.ceil(orders / 1000)
    bound = 4 * batches + math.ceil(buyers / EspHook().batch_size)  # members per batch subscribe
    calls = sandbox.requests("esp")
    assert loaded["api_calls"] == len(calls) == bound  # 9 for this day's 35 orders and 16 products
    assert bound < orders  # the per-call path took one call per order, one or two per product


def test_the_batch_options_never_reach_mailchimp_as_headers(day, connections):
    """Not as strings (sent to the ESP with every call) nor as numbers (requests refuses a
    header that is not a string: every call of the load would fail)."""
    _fast_esp(connections, batch_poll_s=0.02, batch_timeout_s=10)
    hook = EspHook()
    settings = ecommerce.batch_settings(hook)
    assert settings == {"poll_interval_s": 0.02, "timeout_s": 10.0}
    assert not {"batch_poll_s", "batch_timeout_s"} & set(hook.session.headers)
    assert hook.call("GET", "ping").status_code == 200
