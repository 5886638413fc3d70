"""shop_conversions_to_esp against the sandbox: money, attribution, buyers, idempotence, report."""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailsync.settings import INCLUDE_DIR
from mailsync.staging import run_area
from tests.integration.dags import dagrun
from tests.integration.dags.test_esp_to_crm_engagement import WEEK, run_day
from tests.services import launch_chromium, require_chromium

DAG = "shop_conversions_to_esp"
END = WEEK[-1] + timedelta(days=1)  # 2026-11-20
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
pytestmark = pytest.mark.slow


def rates() -> dict[tuple[str, str], float]:
    with (INCLUDE_DIR / "rates" / "eur_daily.csv").open(encoding="utf-8") as f:
        return {(r["date"], r["currency"]): float(r["eur_per_unit"]) for r in csv.DictReader(f)}


def squash(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", text.lower())


def direct_orders(sandbox) -> list[dict]:
    """Every order with its net, EUR value and campaign, computed the obvious way."""
    campaigns = {c["id"]: c for c in sandbox.esp_campaigns()}
    by_title = {squash(c["settings"]["title"]): cid for cid, c in campaigns.items()}
    clicks = defaultdict(list)
    for e in sandbox.esp_activity():
        if e["action"] == "click":
            clicks[e["email_address"].strip().lower()].append(
                (datetime.fromtimestamp(e["ts_ms"] // 1000, UTC), e["campaign_id"])
            )
    table = rates()
    out = []
    for o in sandbox.shop_orders():
        created = datetime.fromisoformat(o["created_at"]).astimezone(UTC)
        if datetime.fromisoformat(o["updated_at"]).astimezone(UTC) >= END:
            continue
        refunded = sum(
            float(t["amount"])
            for r in o["refunds"]
            for t in r["transactions"]
            if t["kind"] == "refund" and t["status"] == "success"
        )
        cancelled = o["cancelled_at"] is not None or o["financial_status"] == "voided"
        net = 0.0 if cancelled else round(max(float(o["total_price"]) - refunded, 0.0), 2)
        sites = f"{o.get('landing_site') or ''} {o.get('referring_site') or ''}"
        campaign = None
        if (m := re.search(r"[?&]mc_cid=([0-9A-Za-z]+)", sites)) and m.group(1) in campaigns:
            campaign = m.group(1)
        elif m := re.search(r"[?&]utm_campaign=([^&#\s]+)", sites):
            campaign = by_title.get(squash(m.group(1)))
        if campaign is None:
            email = (o["email"] or "").strip().lower()
            recent = [c for c in clicks[email] if created - timedelta(days=7) <= c[0] <= created]
            campaign = max(recent)[1] if recent else None
        rate = table[(created.strftime("%Y-%m-%d"), o["currency"])]
        out.append(
            {
                "id": str(o["id"]),
                "email": (o["email"] or "").strip().lower(),
                "created": created,
                "currency": o["currency"],
                "net": net,
                "eur": round(net * rate, 2),
                "counted": not cancelled and net > 0,
                "campaign": campaign,
                "refunded": refunded,
                "total": float(o["total_price"]),
            }
        )
    return out


@pytest.fixture(scope="module")
def synced(sandbox, connections, airflow_db, tmp_path_factory):
    """Contacts synced, a week of engagement (clicks) and a week of shop runs: shared by the tests."""
    sandbox.reset(seed=42, contacts=1000, days=7)
    dagrun.isolate(tmp_path_factory.mktemp("shop"))
    assert (
        dagrun.run(
            "crm_to_esp_contacts", "2026-11-20T02:00:00Z", full_refresh=True, loyalty_wait_minutes=0
        ).state
        == "success"
    )
    for start in WEEK:
        run_day(start)
    # the very first shop run is a day without orders (a backfill's empty day may take the lock first)
    empty = dagrun.run(DAG, "2026-11-06T00:00:00Z")
    assert empty.state == "success" and dagrun.report(empty)["orders_extracted"] == 0
    members_before = {m["email_address"].strip().lower() for m in sandbox.esp_members()}
    runs = [dagrun.run(DAG, (start + timedelta(days=1)).isoformat()) for start in WEEK]
    assert [r.state for r in runs] == ["success"] * len(WEEK)
    return sandbox, runs, members_before


def report_rows(run) -> list[dict]:
    area = run_area(DAG, run.data_interval_start, run.data_interval_end) / "report"
    return list(csv.DictReader(io.StringIO(area.read_text("revenue_by_campaign_day.csv"))))


def test_revenue_per_campaign_and_day_equals_a_direct_computation(synced):
    sandbox, runs, _ = synced
    expected: dict[tuple, list] = defaultdict(lambda: [0, set(), 0.0])
    for o in direct_orders(sandbox):
        if o["counted"] and END - timedelta(days=30) <= o["created"] < END:
            cell = expected[(o["created"].strftime("%Y-%m-%d"), o["campaign"] or "(unattributed)")]
            cell[0] += 1
            cell[1].add(o["email"])
            cell[2] += o["eur"]
    got = {
        (r["day"], r["campaign"]): (int(r["orders"]), int(r["buyers"]), float(r["revenue_eur"]))
        for r in report_rows(runs[-1])
    }
    assert got == {k: (v[0], len(v[1]), round(v[2], 2)) for k, v in expected.items()}
    attributed = sum(1 for k in got if k[1] != "(unattributed)")
    assert attributed >= 5  # mc_cid, utm and last-click rules all found campaigns


def test_orders_in_three_currencies_convert_as_the_rate_table_says(synced):
    sandbox, _runs, _ = synced
    table = rates()
    orders = {o["id"]: o for o in direct_orders(sandbox)}
    esp = {o["id"]: o for o in sandbox.esp_orders()}
    seen = set()
    for oid, o in orders.items():
        if oid in esp and o["counted"] and o["currency"] != "EUR":
            day = o["created"].strftime("%Y-%m-%d")
            assert esp[oid]["currency_code"] == o["currency"]  # the ESP keeps the native amount
            assert esp[oid]["order_total"] == pytest.approx(o["net"])
            assert o["eur"] == round(o["net"] * table[(day, o["currency"])], 2)
            seen.add(o["currency"])
    assert seen >= {"USD", "GBP", "CHF"}


def test_refunds_reduce_the_order_and_the_buyer_totals(synced):
    sandbox, _, _ = synced
    orders = direct_orders(sandbox)
    esp_orders = {o["id"]: o for o in sandbox.esp_orders()}
    refunded = [o for o in orders if o["refunded"] > 0 and o["id"] in esp_orders]
    assert refunded, "the generated data has refunded orders of members"
    for o in refunded:
        assert esp_orders[o["id"]]["order_total"] == pytest.approx(o["net"])
        assert o["net"] < o["total"]
    members = {m["email_address"].strip().lower(): m for m in sandbox.esp_members()}
    spent: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for o in orders:
        if o["counted"]:
            spent[o["email"]] += o["eur"]
            count[o["email"]] += 1
    for o in refunded:
        fields = members[o["email"]]["merge_fields"]
        assert fields["TOTAL_SPENT"] == pytest.approx(round(spent[o["email"]], 2))
        assert fields["ORDER_COUNT"] == count[o["email"]]


def test_an_order_of_an_unknown_customer_is_reported_not_loaded(synced):
    sandbox, runs, members_before = synced
    member_emails = {m["email_address"].strip().lower() for m in sandbox.esp_members()}
    crm_emails = {(c["properties"]["email"] or "").strip().lower() for c in sandbox.crm_contacts()}
    strangers = [o for o in direct_orders(sandbox) if o["email"] not in crm_emails]
    assert strangers
    loaded = {o["id"] for o in sandbox.esp_orders()}
    assert not {o["id"] for o in strangers} & loaded
    assert member_emails == members_before  # nobody was added to the audience
    unknown = sum(dagrun.report(r)["unknown_customer_orders"] for r in runs)
    assert unknown >= len(strangers)


def test_rerunning_a_day_changes_nothing(synced):
    sandbox, runs, _ = synced
    before = (sandbox.esp_orders(), sandbox.esp_members())
    sandbox.clear_requests()
    again = dagrun.run(DAG, runs[4].data_interval_end.isoformat())
    assert again.state == "success"
    writes = [r for r in sandbox.requests("esp") if r["method"] in ("POST", "PUT", "PATCH", "DELETE")]
    assert writes == []
    assert (sandbox.esp_orders(), sandbox.esp_members()) == before
    assert report_rows(again) == report_rows(runs[4])


def test_the_revenue_page_renders_in_a_real_browser(synced):
    from playwright.sync_api import sync_playwright

    require_chromium()
    _, runs, _ = synced
    page_path = run_area(DAG, runs[-1].data_interval_start, runs[-1].data_interval_end) / "report"
    html = page_path.file("revenue.html").path
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"file://{html}")
        assert page.locator("#revenue-chart rect.bar").count() >= 2
        rows = page.locator("#revenue-table tbody tr").count()
        assert rows == len(report_rows(runs[-1]))
        assert "Revenue per campaign" in page.title()
        page.screenshot(path=str(ARTIFACTS / "revenue_report.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "revenue_report.png").stat().st_size > 10_000


def test_buyers_over_100_eur_are_tagged_once_contacts_and_orders_are_in(synced):
    from mailsync.state import SyncState

    sandbox, _, _ = synced
    spent: dict[str, float] = defaultdict(float)
    for o in direct_orders(sandbox):
        if o["counted"]:
            spent[o["email"]] += o["eur"]
    state = SyncState("crm_to_esp_contacts").load()
    audience = set(state.loc[state["status"] != "archived", "key"])
    run = dagrun.run("esp_buyer_segments", "2026-11-20T06:00:00Z")
    assert run.state == "success"
    tagged = {
        m["email_address"].strip().lower()
        for m in sandbox.esp_members()
        if "buyers_over_100_eur" in m["tags"]
    }
    assert tagged == {e for e, v in spent.items() if round(v, 2) >= 100} & audience
    assert len(tagged) >= 10
    sandbox.clear_requests()
    assert dagrun.run("esp_buyer_segments", "2026-11-20T07:00:00Z").state == "success"
    assert [
        r for r in sandbox.requests("esp") if r["method"] == "POST"
    ] == []  # nothing changed, nothing sent
