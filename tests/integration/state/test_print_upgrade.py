"""Issue 20 on the real databases and whole DAGs: a state written by the code before it (prints by
pandas' hash) meets unchanged records, and nothing is sent to any vendor while every print is
rewritten; changed records are still sent. Buckets did not move, so nothing is re-bucketed."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mailsync.mapping import engine
from mailsync.operators import sync
from mailsync.settings import BUCKETS
from mailsync.state import SyncState, sync_state
from tests.integration.dags import dagrun

CONTACTS, ENGAGEMENT, SHOP = "crm_to_esp_contacts", "esp_to_crm_engagement", "shop_conversions_to_esp"
ORDERS, BUYERS = "shop_orders_to_esp", "shop_buyer_totals_to_esp"
NIGHT1, NIGHT2 = "2026-11-20T02:00:00Z", "2026-11-21T02:00:00Z"
QUICK = {"loyalty_wait_minutes": 0}
ENGINE_PRINT = len(engine.PRINT_PREFIX) + 16  # what a caller appends comes after it (shop orders)


def to_pandas_era(integration: str, desired: pd.DataFrame, url: str | None = None) -> int:
    """Rewrite an integration's stored prints as the code before issue 20 wrote them: pandas'
    print of each record's fields (by that code's own function, over the staged records: a Parquet
    round trip changes no pandas print, tests/unit/test_print_upgrade.py), with what the caller
    appended. Returns the number of rows rewritten; also checks that every stored bucket is the
    one pandas' hash_array gave."""
    state = SyncState(integration, url=url)
    pandas_prints = engine.legacy_pandas_fingerprint(desired, engine.record_fields(desired))
    legacy = dict(zip(desired[engine.KEY], pandas_prints, strict=True))
    c = sync_state.c
    with state.engine.begin() as conn:
        rows = conn.execute(
            sa.select(c.key, c.fingerprint, c.bucket).where(c.integration == integration)
        ).all()
        old = [{"k": k, "fp": legacy[k] + fp[ENGINE_PRINT:]} for k, fp, _ in rows if k in legacy]
        conn.execute(
            sa.update(sync_state)
            .where(c.integration == integration, c.key == sa.bindparam("k"))
            .values(fingerprint=sa.bindparam("fp")),
            old,
        )
    keys = pd.Series([k for k, _, _ in rows], dtype="string")
    by_pandas = pd.util.hash_array(keys.fillna("").astype(object).to_numpy()) % np.uint64(BUCKETS)
    assert [b for _, _, b in rows] == by_pandas.astype("int64").tolist()
    return len(old)


def prints(integration: str, url: str | None = None) -> pd.Series:
    return SyncState(integration, url=url).load().set_index("key")["fingerprint"]


# -- the state-only rewrite, on both backends -------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, tmp_path):
    return (
        f"sqlite:///{tmp_path / 'state.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )


def test_the_diff_rewrites_pandas_era_prints_in_the_database(state_url):
    n = 12_345  # more than two of the rewrite's batches
    members = pd.DataFrame(
        {
            "email_address": pd.Series([f"user{i}@example.com" for i in range(n)], dtype="string"),
            "merge_fields.LTV": pd.Series(np.arange(n) / 4, dtype="Float64"),
        }
    )
    members[engine.KEY] = members["email_address"]
    members[engine.FINGERPRINT] = engine.fingerprint(members, ["email_address", "merge_fields.LTV"])
    pandas_prints = engine.legacy_pandas_fingerprint(members, ["email_address", "merge_fields.LTV"])
    members[sync.BUCKET] = engine.bucket_of(members[engine.KEY], BUCKETS)
    state = SyncState(CONTACTS, url=state_url)
    state.acknowledge(
        [
            {"key": k, "bucket": b, "fingerprint": f, "status": "subscribed"}
            for k, b, f in zip(members[engine.KEY], members[sync.BUCKET], pandas_prints, strict=True)
        ],
        run_id="before",
    )
    with state.engine.connect() as conn:
        acked_at = conn.execute(sa.select(sa.func.min(sync_state.c.acked_at))).scalar_one()
    members.loc[3, "merge_fields.LTV"] = -1.0  # one record changed since
    members[engine.FINGERPRINT] = engine.fingerprint(members, ["email_address", "merge_fields.LTV"])
    upserts, _, counts = sync.diff(members, state.load(range(BUCKETS)), state)
    assert upserts[engine.KEY].tolist() == ["user3@example.com"]
    assert (counts["reprinted"], counts["unchanged"]) == (n - 1, n - 1)
    after = prints(CONTACTS, state_url)
    assert after.str.startswith(engine.PRINT_PREFIX).sum() == n - 1
    assert not after["user3@example.com"].startswith(engine.PRINT_PREFIX)  # sent, acknowledged then
    with state.engine.connect() as conn:
        kept = conn.execute(
            sa.select(sa.func.count()).where(
                sync_state.c.acked_at == acked_at, sync_state.c.run_id == "before"
            )
        ).scalar_one()
    assert kept == n  # a rewrite is no acknowledgement: when and by which run stay
    state.engine.dispose()


# -- whole DAGs: every integration that keeps engine prints -----------------------------------------
@pytest.fixture
def world(vendors, airflow_db, tmp_path):
    dagrun.isolate(tmp_path)
    return vendors


def area(dag_run):
    from mailsync.staging import run_area

    return run_area(dag_run.dag_id, dag_run.data_interval_start, dag_run.data_interval_end)


def writes(sandbox, vendor: str) -> list[dict]:
    return [
        r
        for r in sandbox.requests(vendor)
        if r["method"] in ("POST", "PUT", "PATCH", "DELETE") and r["status"] < 300
    ]


def contacts_desired(dag_run) -> pd.DataFrame:
    desired = area(dag_run) / "desired"
    return pd.concat([desired.read_parquet(name) for name in desired.names(".parquet")], ignore_index=True)


@pytest.mark.slow
def test_contacts_a_quiet_night_after_the_upgrade_sends_nothing(world):
    first = dagrun.run(CONTACTS, NIGHT1, full_refresh=True, **QUICK)
    assert first.state == "success"
    members = len(prints(CONTACTS))
    assert to_pandas_era(CONTACTS, contacts_desired(first)) == members > 500
    assert not prints(CONTACTS).str.startswith(engine.PRINT_PREFIX).any()
    world.clear_requests()
    second = dagrun.run(CONTACTS, NIGHT2, **QUICK)
    assert second.state == "success"
    assert [r for r in writes(world, "esp") if "/lists/" in r["path"]] == []
    report = dagrun.report(second)
    assert (report["unchanged"], report["new"], report["changed"], report["esp_write_calls"]) == (
        members,
        0,
        0,
        0,
    )
    after = prints(CONTACTS)
    assert after.str.startswith(engine.PRINT_PREFIX).all() and len(after) == members
    tonight = contacts_desired(second).set_index(engine.KEY)[engine.FINGERPRINT]
    assert after.sort_index().equals(tonight.reindex(after.index).sort_index())


@pytest.mark.slow
def test_contacts_a_one_percent_night_after_the_upgrade_sends_only_the_changed(world):
    first = dagrun.run(CONTACTS, NIGHT1, full_refresh=True, **QUICK)
    assert first.state == "success"
    to_pandas_era(CONTACTS, contacts_desired(first))
    changed_ids = {str(i) for i in world.mutate_crm(fraction=0.01, seed=7, at="2026-11-20T03:00:00Z")}
    changed = {
        c["properties"]["email"].strip().lower() for c in world.crm_contacts() if str(c["id"]) in changed_ids
    }
    world.clear_requests()
    night = dagrun.run(CONTACTS, NIGHT2, **QUICK)
    assert night.state == "success"
    written = Counter(k for r in writes(world, "esp") if "/lists/" in r["path"] for k in r["record_keys"])
    assert set(written) <= changed and len(written) >= 0.8 * len(changed) and max(written.values()) == 1
    assert dagrun.report(night)["changed"] == len(written)
    assert prints(CONTACTS).str.startswith(engine.PRINT_PREFIX).all()


@pytest.mark.slow
def test_engagement_rerunning_a_day_after_the_upgrade_writes_what_it_wrote_before(world):
    day = "2026-11-19T00:00:00Z"
    assert dagrun.run(ENGAGEMENT, day).state == "success"
    again = dagrun.run(ENGAGEMENT, day)  # what a rerun writes without any pandas-era print
    assert again.state == "success"
    baseline = dagrun.report(again)
    desired = (area(again) / "desired").read_parquet("contacts.parquet")
    assert to_pandas_era(ENGAGEMENT, desired) == len(prints(ENGAGEMENT)) > 50  # unknown contacts: no row
    world.clear_requests()
    upgraded = dagrun.run(ENGAGEMENT, day)
    assert upgraded.state == "success"
    report = dagrun.report(upgraded)
    assert (report["written"], report["unchanged"]) == (baseline["written"], baseline["unchanged"])
    assert report["unchanged"] > 50
    assert prints(ENGAGEMENT).str.startswith(engine.PRINT_PREFIX).all()


@pytest.mark.slow
def test_shop_rerunning_a_day_after_the_upgrade_sends_no_order_and_no_buyer(world):
    assert dagrun.run(CONTACTS, NIGHT1, full_refresh=True, **QUICK).state == "success"
    day = "2026-11-19T00:00:00Z"
    first = dagrun.run(SHOP, day)
    assert first.state == "success"
    desired = area(first) / "desired"
    orders, buyers = desired.read_parquet("orders.parquet"), desired.read_parquet("buyers.parquet")
    assert to_pandas_era(ORDERS, orders) == len(prints(ORDERS)) > 10
    assert to_pandas_era(BUYERS, buyers) == len(prints(BUYERS)) > 10
    world.clear_requests()
    again = dagrun.run(SHOP, day)
    assert again.state == "success"
    assert writes(world, "esp") == []
    for integration in (ORDERS, BUYERS):
        stored = prints(integration)
        assert stored.str.startswith(engine.PRINT_PREFIX).all(), integration
    assert (prints(ORDERS).str.len() == ENGINE_PRINT + 8).all()  # the lines' digest is still there
