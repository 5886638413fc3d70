"""mailsync_retention: run folders and quarantine files expire; a GDPR erasure leaves no trace."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailsync.operators.run import Run
from mailsync.staging import interval_label
from tests.integration.dags import dagrun
from tests.integration.dags.test_esp_to_crm_engagement import WEEK, run_day

log = logging.getLogger(__name__)
DAG = "mailsync_retention"
CONTACTS = "crm_to_esp_contacts"
QUICK = {"loyalty_wait_minutes": 0}
END = datetime(2026, 12, 10, 5, tzinfo=UTC)  # the retention run's interval end

pytestmark = pytest.mark.slow


@pytest.fixture
def staging(airflow_db, tmp_path, monkeypatch) -> Path:
    dagrun.isolate(tmp_path)
    policy = tmp_path / "retention.yaml"
    policy.write_text("version: 1\nrun_days: 14\nquarantine_days: 7\nerasure_days: 30\n")
    monkeypatch.setenv("MAILSYNC_RETENTION_FILE", str(policy))
    return tmp_path / "staging"


def run_folder(staging: Path, dag_id: str, days_before_end: float) -> Path:
    """A daily run folder whose interval ended `days_before_end` days before END, with files."""
    end = END - timedelta(days=days_before_end)
    folder = staging / dag_id / "runs" / interval_label(end - timedelta(days=1), end)
    for name in (
        "extract/contacts/part-00000.parquet",
        "quality/contacts/quarantine.csv",
        "load/rejected.csv",
    ):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    (folder / "report.json").write_text("{}")
    return folder


def test_run_folders_and_quarantine_files_expire_by_their_interval_not_their_mtime(staging):
    ages = {
        "ancient": 40,
        "just_expired": 14,
        "young": 13.9,
        "quarantine_expired": 7,
        "recent": 1,
        "tonight": 0,
    }
    folders = {
        (dag_id, kind): run_folder(staging, dag_id, age)
        for dag_id in (CONTACTS, "esp_to_crm_engagement")
        for kind, age in ages.items()
    }
    for folder in folders.values():  # every file brand new: only the folder's interval may count
        os.utime(folder / "report.json")
    current = staging / CONTACTS / "current" / "snapshots" / "contacts"
    current.mkdir(parents=True)
    (current / "bucket=00.parquet").write_text("x")
    (staging / CONTACTS / "current" / "quarantine.csv").write_text("x")  # not a run folder's: kept
    stray = staging / CONTACTS / "runs" / "not-an-interval"
    stray.mkdir()

    run = dagrun.run(DAG, END.isoformat())

    assert run.state == "success"
    for (dag_id, kind), folder in folders.items():
        gone = kind in ("ancient", "just_expired")
        assert folder.exists() != gone, (dag_id, kind)
        if not gone:
            people_kept = kind in ("recent", "tonight")  # younger than quarantine_days
            assert (folder / "quality/contacts/quarantine.csv").exists() == people_kept, (dag_id, kind)
            assert (folder / "load/rejected.csv").exists() == people_kept, (dag_id, kind)
            assert (folder / "report.json").exists() and (
                folder / "extract/contacts/part-00000.parquet"
            ).exists()
    assert (current / "bucket=00.parquet").exists() and (
        staging / CONTACTS / "current" / "quarantine.csv"
    ).exists()
    assert stray.exists()


def test_a_running_dag_keeps_its_folders_until_the_next_day(staging):
    from mailsync.operators import retention
    from mailsync.state import RunLock

    old = run_folder(staging, CONTACTS, 30)
    other = run_folder(staging, "esp_to_crm_engagement", 30)
    RunLock(CONTACTS).acquire("scheduled__a_backfill_day", 600)
    run = Run(DAG, "manual__t", END - timedelta(days=1), END)
    result = retention.delete_old_runs(run)
    assert result["busy"] == [CONTACTS] and old.exists() and not other.exists()
    RunLock(CONTACTS).release("scheduled__a_backfill_day")
    assert retention.delete_old_runs(run)["deleted"] == 1 and not old.exists()


# -- erasure -------------------------------------------------------------------------------------
@pytest.fixture
def world(vendors, staging):
    return vendors


def shop_day(start: datetime) -> None:
    """One shop interval through the DAG's operators, `execute` called directly (as run_day does
    for engagement), with the default brand's connections and states."""
    from types import SimpleNamespace

    from mailsync.operators import shop
    from mailsync.operators.steps import QualityGateOperator

    context = {
        "ti": SimpleNamespace(xcom_push=lambda key, value: None),  # the report links: not needed here
        "dag": SimpleNamespace(dag_id="shop_conversions_to_esp"),
        "run_id": f"direct__{start:%Y%m%d}",
        "data_interval_start": start,
        "data_interval_end": start + timedelta(days=1),
        "params": {},
    }
    for step in (
        shop.ExtractShopOrdersOperator(task_id="extract"),
        QualityGateOperator(task_id="validate", mapping="shop_orders_to_esp", source=["orders", "lines"]),
        shop.TransformShopOrdersOperator(task_id="transform"),
        shop.LoadShopOrdersOperator(task_id="load"),
    ):
        step.execute(context)


def norm(value) -> str:
    return str(value).strip().lower()


def scan(staging: Path, person: dict) -> tuple[Counter, int]:
    """Where the person still is: hits per file (Parquet rows holding their email, customer id,
    CRM id or full name; text files containing any of those as bytes), and files scanned."""
    import pyarrow.parquet as pq

    email, cid, crm_id, name = (
        norm(person["email"]),
        norm(person["customer_id"]),
        person["crm_id"],
        person["name"],
    )
    first, last = norm(person["first"]), norm(person["last"])
    needles = [email.encode(), cid.encode(), name.lower().encode("utf-8"), name.lower().encode("cp1252")]
    hits, files = Counter(), 0
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        files += 1
        where = str(path.relative_to(staging))
        if path.suffix == ".parquet":
            for row in pq.read_table(path).to_pylist():
                cells = {k: norm(v) for k, v in row.items() if isinstance(v, str)}
                values = set(cells.values())
                if (
                    any(email in v for v in values)
                    or cid in values
                    or any(v.endswith(f"-{cid}") for v in values)
                    or cells.get("hs_object_id") == crm_id
                    or name.lower() in values
                    or {first, last} <= values
                ):
                    hits[where] += 1
        else:
            data = path.read_bytes().lower()
            hits[where] += sum(data.count(n) for n in needles)
    return +hits, files


def state_rows() -> set[tuple[str, str]]:
    import sqlalchemy as sa

    from mailsync.state import engine, sync_state

    with engine().connect() as conn:
        return {tuple(r) for r in conn.execute(sa.select(sync_state.c.integration, sync_state.c.key))}


def parquet_rows(staging: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    return {str(p.relative_to(staging)): pq.read_metadata(p).num_rows for p in staging.rglob("*.parquet")}


def pick_person(world, staging: Path) -> dict:
    """A synced contact with a loyalty tier, engagement and orders, whose email and name are
    nobody else's: so any trace found later is theirs."""
    import pyarrow.parquet as pq

    contacts = world.crm_contacts()
    emails = Counter(norm(c["properties"]["email"]) for c in contacts)
    names = Counter(f"{c['properties']['firstname']} {c['properties']['lastname']}".strip() for c in contacts)
    daily = set(
        pq.read_table(staging / "esp_to_crm_engagement" / "current" / "daily").column("email").to_pylist()
    )
    orders = Counter(
        norm(e)
        for e in pq.read_table(staging / "shop_conversions_to_esp/current/snapshots/orders.parquet")["email"]
    )
    loyalty = world.loyalty_path("2026-11-19").read_bytes().decode("cp1252")
    members = {norm(m["email_address"]) for m in world.esp_members() if m["status"] == "subscribed"}
    for c in contacts:
        p = c["properties"]
        email, name = norm(p["email"]), f"{p['firstname']} {p['lastname']}".strip()
        cid = (p.get("customer_id") or "").strip().upper()
        if (
            emails[email] == 1
            and names[name] == 1
            and cid
            and f"\n{cid};" in loyalty
            and loyalty.count(name) == 1
            and email in daily
            and orders[email] >= 1
            and email in members
        ):
            return {
                "id": c["id"],
                "email": email,
                "customer_id": cid,
                "crm_id": str(c["id"]),
                "name": name,
                "first": p["firstname"],
                "last": p["lastname"],
            }
    raise AssertionError("no contact found everywhere")


def test_a_gdpr_erasure_leaves_no_trace_in_staging_or_state_and_nobody_else_is_touched(world, staging):
    from mailsync.state import ErasureLedger, erasure, pseudonym

    assert dagrun.run(CONTACTS, "2026-11-20T02:00:00Z", full_refresh=True, **QUICK).state == "success"
    for start in WEEK[-3:]:
        run_day(start)
        shop_day(start)
    person = pick_person(world, staging)
    world.crm_gdpr_delete(person["id"])
    full = dagrun.run(CONTACTS, "2026-11-21T02:00:00Z", full_refresh=True, **QUICK)
    assert full.state == "success"
    assert world.esp_member(person["email"])["status"] == "archived"
    (recorded,) = ErasureLedger().all()
    assert recorded.subject == pseudonym("email", person["email"]) and recorded.applied_at is None

    before, files = scan(staging, person)
    assert sum(before.values()) > 20, before  # the leak the retention DAG must close, seen by the scan
    assert any("/current/" in f for f in before) and any("/runs/" in f for f in before)
    state_before, rows_before = state_rows(), parquet_rows(staging)
    person_keys = {(i, k) for i, k in state_before if k == person["email"]}
    assert {i for i, _ in person_keys} >= {"esp_to_crm_engagement", "shop_buyer_totals_to_esp"}

    started = time.monotonic()
    run = dagrun.run(DAG, "2026-11-22T05:00:00Z")  # every folder is younger than run_days: rewritten
    took = time.monotonic() - started
    assert run.state == "success"

    after, _ = scan(staging, person)
    assert not after, after
    state_after = state_rows()
    assert not {(i, k) for i, k in state_after if k == person["email"]}
    orders_gone = state_before - state_after - person_keys
    assert {i for i, _ in orders_gone} <= {"shop_orders_to_esp"}  # the person's order ids, nothing else
    assert len(orders_gone) <= Counter(i for i, _ in state_before)["shop_orders_to_esp"]
    rows_after = parquet_rows(staging)
    assert rows_after.keys() == rows_before.keys()
    changed = {f: rows_before[f] - rows_after[f] for f in rows_before if rows_before[f] != rows_after[f]}
    # only the person's rows went: every rewritten file lost exactly the rows the scan saw, or
    # the lines of the person's orders (no email in them)
    for f, lost in changed.items():
        assert lost == before.get(f, 0) or "lines" in f, (f, lost, before.get(f))
    import sqlalchemy as sa

    from mailsync.state import engine

    with engine().connect() as conn:
        ledger = [dict(r._mapping) for r in conn.execute(sa.select(erasure))]
    assert ledger[0]["applied_at"] is not None and person["email"] not in json.dumps(ledger, default=str)
    log.info("retention run %.1f s, %d files scanned, %d traces removed", took, files, sum(before.values()))

    # the next day: nothing left to rewrite, and the ledger stays (a backfill could bring them back)
    again = dagrun.run(DAG, "2026-11-23T05:00:00Z")
    assert again.state == "success" and parquet_rows(staging) == rows_after


def test_a_request_is_applied_but_one_for_somebody_the_crm_still_has_is_held_back_then_fails(staging):
    import pandas as pd

    from mailsync.operators import retention
    from mailsync.staging import state_area

    snapshot = state_area(CONTACTS) / "snapshots" / "contacts"
    snapshot.write_parquet("bucket=00.parquet", pd.DataFrame({"__key": ["live@example.com"], "email": ["x"]}))
    daily = state_area("esp_to_crm_engagement") / "daily"
    daily.write_parquet(
        "interval=a.parquet", pd.DataFrame({"email": ["gone@example.com", "kept@example.com"]})
    )
    retention.request_erasure(["Gone@Example.com", "live@example.com"])
    now = datetime.now(UTC)  # the ledger dates an erasure when it is recorded
    run = Run(DAG, "manual__t", now - timedelta(days=1), now)

    result = retention.apply_erasures(run)  # recorded just now: within the deadline
    assert result["applied_now"] == 1 and len(result["held_back_in_crm"]) == 1
    assert daily.read_parquet("interval=a.parquet")["email"].tolist() == ["kept@example.com"]
    assert snapshot.read_parquet("bucket=00.parquet")["__key"].tolist() == ["live@example.com"]
    late = Run(DAG, "manual__late", now + timedelta(days=30), now + timedelta(days=31))
    with pytest.raises(retention.ErasureOverdue, match="still in the CRM"):
        retention.apply_erasures(late)


def test_an_erasure_reaches_every_brands_files_and_state_and_a_brands_crm_holds_it_back(staging):
    """Brands (include/brands/): each brand's shop DAG and its orders' state are scrubbed, not only
    the default brand's; a person another brand's CRM still has is held back."""
    import pandas as pd

    from mailsync.operators import retention
    from mailsync.staging import state_area
    from mailsync.state import SyncState

    shop_dag, orders_state = "shop_conversions_to_esp__hotel_alpenhof", "shop_orders_to_esp__hotel_alpenhof"
    orders = pd.DataFrame({"id": ["901", "902"], "email": ["gone@example.com", "kept@example.com"]})
    snapshots = state_area(shop_dag) / "snapshots"
    snapshots.write_parquet("orders.parquet", orders)
    snapshots.write_parquet("lines.parquet", pd.DataFrame({"order_id": ["901", "902"]}))
    acked = [{"key": k, "fingerprint": "f", "bucket": 0, "status": "sent"} for k in ("901", "902")]
    SyncState(orders_state).acknowledge(acked, "run")
    seeblick = state_area("crm_to_esp_contacts__hotel_seeblick") / "snapshots" / "contacts"
    seeblick.write_parquet("bucket=00.parquet", pd.DataFrame({"__key": ["live@example.com"]}))
    retention.request_erasure(["gone@example.com", "live@example.com"])
    now = datetime.now(UTC)

    result = retention.apply_erasures(Run(DAG, "manual__brands", now - timedelta(days=1), now))
    assert result["applied_now"] == 1 and len(result["held_back_in_crm"]) == 1  # live: Seeblick's CRM
    assert snapshots.read_parquet("orders.parquet")["id"].tolist() == ["902"]
    assert snapshots.read_parquet("lines.parquet")["order_id"].tolist() == ["902"]
    assert sorted(SyncState(orders_state).load()["key"]) == ["902"]  # the brand's orders' state
