"""The CeleryExecutor topology of docker-compose.yaml, run natively (devtools/celery_airflow.py).

PostgreSQL metadata DB, Redis broker, two Celery workers with their own AIRFLOW_HOME and one
shared staging folder, every connection (the `mailsync_state` PostgreSQL one included) in the
metadata DB. DAG runs go through the REST API and the scheduler, as in production; the end
state is checked against the same independent expectations the dag.test() tests use.

One topology per module (~25 s to start); each test starts from a fresh sandbox, an empty sync
state, an empty staging folder and no DAG runs.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devtools.celery_airflow import CeleryAirflow
from mailsync.settings import INCLUDE_DIR
from tests.integration.dags.expected_contacts import countries, expected_members, loyalty_tiers
from tests.integration.dags.expected_engagement import crm_state, expected_crm
from tests.integration.dags.test_crm_to_esp_contacts import TAGS, members_by_email
from tests.integration.dags.test_shop_conversions_to_esp import direct_orders

pytestmark = pytest.mark.slow

CONTACTS, ENGAGEMENT, SHOP, SEGMENTS = (
    "crm_to_esp_contacts",
    "esp_to_crm_engagement",
    "shop_conversions_to_esp",
    "esp_buyer_segments",
)
DAGS = (CONTACTS, ENGAGEMENT, SHOP, SEGMENTS)
NIGHT = "2026-11-20T02:00:00+00:00"
FULL = {"full_refresh": True, "loyalty_wait_minutes": 0}
DAY = datetime(2026, 11, 18, tzinfo=UTC)  # a day inside the sandbox's data window (ends 2026-11-20)
WORKERS = 2
ARTIFACT = Path(__file__).resolve().parents[1] / "artifacts" / "celery_topology.json"
FIGURES: dict[str, dict] = {}  # what each test measured, written to ARTIFACT at the end


@pytest.fixture(scope="module")
def topology(sandbox, connections, tmp_path_factory):
    """api-server, scheduler, dag-processor, triggerer and two Celery workers (concurrency 2)."""
    conns = json.loads(json.dumps(connections))
    # many small batches, two in flight: a contacts load of 1000 members is 10 calls, so a slowed
    # ESP makes it last seconds and a kill lands between acknowledged batches
    conns["esp_default"]["extra"].update(batch_size=100, max_connections=2)
    airflow = CeleryAirflow(tmp_path_factory.mktemp("celery") / "airflow", workers=WORKERS, concurrency=2)
    airflow.start(connections=conns)
    try:
        for dag_id in DAGS:
            airflow.wait_for_dag(dag_id)
            airflow.unpause(dag_id)
        yield airflow
    finally:
        airflow.stop()
        ARTIFACT.parent.mkdir(exist_ok=True)
        ARTIFACT.write_text(json.dumps(FIGURES, indent=2, default=str))


@pytest.fixture
def world(topology, vendors):
    """A fresh sandbox, an empty sync state and staging, no DAG runs."""
    for dag_id in DAGS:
        topology.delete_runs(dag_id)
    topology.reset_state()
    return vendors


# -- expectations ----------------------------------------------------------------------------------
def contacts_expectation(sandbox) -> dict[str, dict]:
    tiers = loyalty_tiers(sandbox.loyalty_path("2026-11-19").read_bytes())
    return expected_members(sandbox.crm_contacts(), members_by_email(sandbox), tiers, countries(INCLUDE_DIR))


def contacts_differences(sandbox, expected: dict[str, dict]) -> list[tuple]:
    after = members_by_email(sandbox)
    wrong = []
    for email, want in expected.items():
        got = after.get(email)
        view = got and {
            "status": got["status"],
            "merge_fields": {t: got["merge_fields"].get(t, "") for t in TAGS},
            "language": got["language"],
        }
        if view != want:
            wrong.append((email, want, view))
    return wrong


def quarantined_orders(topology) -> set[str]:
    """Ids of the orders the shop DAG's quality gate quarantined (any run)."""
    ids = set()
    for path in (topology.staging / SHOP).rglob("*.csv"):
        if "quality" in path.parts and "orders" in path.parts:
            ids |= {r.get("id") for r in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))}
    return ids - {None}


def shop_expectation(sandbox, topology, start: datetime, end: datetime, members: set[str]) -> dict:
    """What the ESP must hold after the shop DAG ran the days [start, end) from an empty snapshot:
    direct_orders() (the dag.test() tests' reference) restricted to the orders those days see."""
    updated = {
        str(o["id"]): datetime.fromisoformat(o["updated_at"]).astimezone(UTC) for o in sandbox.shop_orders()
    }
    bad = quarantined_orders(topology)
    seen = [o for o in direct_orders(sandbox) if start <= updated[o["id"]] < end and o["id"] not in bad]
    spent: dict[str, float] = defaultdict(float)
    count: Counter = Counter()
    for o in seen:
        if o["counted"]:
            spent[o["email"]] += o["eur"]
            count[o["email"]] += 1
    return {
        "orders": {o["id"]: (o["currency"], o["net"]) for o in seen if o["email"] in members},
        "spent": {e: round(v, 2) for e, v in spent.items() if e in members},
        "count": {e: n for e, n in count.items() if e in members},
        "quarantined": bad,
    }


def assert_shop_state(sandbox, want: dict) -> None:
    got = {o["id"]: (o["currency_code"], round(float(o["order_total"]), 2)) for o in sandbox.esp_orders()}
    assert got == want["orders"]
    members = members_by_email(sandbox)
    wrong = [
        (e, v, members[e]["merge_fields"].get("TOTAL_SPENT"))
        for e, v in want["spent"].items()
        if members[e]["merge_fields"].get("TOTAL_SPENT") != pytest.approx(v)
        or members[e]["merge_fields"].get("ORDER_COUNT") != want["count"][e]
    ]
    assert not wrong, f"{len(wrong)} buyer totals differ, e.g. {wrong[:3]}"


def audience(topology) -> set[str]:
    """Members the contacts sync acknowledged (not archived), read from the PostgreSQL state DB."""
    from mailsync.state import SyncState

    state = SyncState(CONTACTS, url=topology.state_url).load()
    return set(state.loc[state["status"].ne("archived").fillna(True).to_numpy(), "key"])


def assert_state_in_postgres(topology) -> None:
    """The sync state is in the state database, not in a SQLite file of one worker."""
    stray = sorted(str(p) for p in topology.home.rglob("mailsync-state.db"))
    assert not stray, f"sync state written to SQLite files under AIRFLOW_HOME: {stray}"
    assert topology.state_rows(CONTACTS) > 0


def run_and_wait(topology, dag_id: str, logical_date: str, conf: dict | None = None, timeout=600) -> str:
    run_id = topology.trigger(dag_id, logical_date=logical_date, conf=conf)
    state = topology.wait_for_run(dag_id, run_id, timeout=timeout)
    assert state == "success", (dag_id, run_id, topology.task_states(dag_id, run_id))
    return run_id


def tasks_per_worker(topology, runs: list[tuple[str, str]]) -> Counter:
    return Counter(t.get("hostname") for dag_id, run_id in runs for t in topology.all_tries(dag_id, run_id))


# -- tests -----------------------------------------------------------------------------------------
def test_every_dag_runs_on_the_celery_workers_and_ends_as_expected(topology, world):
    started = time.monotonic()
    expected = contacts_expectation(world)
    contacts_run = run_and_wait(topology, CONTACTS, NIGHT, FULL)
    wrong = contacts_differences(world, expected)
    assert not wrong, f"{len(wrong)} of {len(expected)} members differ, e.g. {wrong[:2]}"
    assert_state_in_postgres(topology)
    assert topology.state_rows(CONTACTS) == len(expected)

    before = crm_state(world)
    day_end = (DAY + timedelta(days=1)).isoformat()  # a manual run's logical date ends its interval
    engagement_run = topology.trigger(ENGAGEMENT, logical_date=day_end)
    shop_run = topology.trigger(SHOP, logical_date=day_end)
    for dag_id, run_id in ((ENGAGEMENT, engagement_run), (SHOP, shop_run)):
        assert topology.wait_for_run(dag_id, run_id) == "success", topology.task_states(dag_id, run_id)
    assert crm_state(world) == expected_crm(world, DAY, DAY + timedelta(days=1), before)
    members = audience(topology)
    shop = shop_expectation(world, topology, DAY, DAY + timedelta(days=1), members)
    assert len(shop["orders"]) >= 10
    assert_shop_state(world, shop)

    segments_run = run_and_wait(topology, SEGMENTS, "2026-11-20T06:00:00+00:00")
    tagged = {
        m["email_address"].strip().lower() for m in world.esp_members() if "buyers_over_100_eur" in m["tags"]
    }
    assert tagged == {e for e, v in shop["spent"].items() if v >= 100} & members
    assert tagged

    runs = [
        (CONTACTS, contacts_run),
        (ENGAGEMENT, engagement_run),
        (SHOP, shop_run),
        (SEGMENTS, segments_run),
    ]
    per_worker = tasks_per_worker(topology, runs)
    FIGURES["a"] = {"wall_s": round(time.monotonic() - started), "tries_per_worker": dict(per_worker)}
    assert {(h or "").split("@", 1)[0] for h in per_worker} == {"w1", "w2"}, per_worker  # both, nothing else


@pytest.mark.soak  # ~85 s: `make soak` runs it (the suite must stay under 20 min in CI)
def test_a_worker_killed_in_the_middle_of_the_load_is_replaced_by_the_other(topology, world):
    started = time.monotonic()
    expected = contacts_expectation(world)
    world.set_faults("esp", latency_ms={"ms": 1500, "method": "POST"})  # ~8 s of batches
    run_id = topology.trigger(CONTACTS, logical_date=NIGHT, conf={**FULL, "partitions": 1})
    deadline = time.monotonic() + 300
    victim = None
    while victim is None and time.monotonic() < deadline:
        for ti in topology.task_instances(CONTACTS, run_id):
            running = ti["task_id"] == "load" and ti["state"] == "running" and ti.get("hostname")
            if running and topology.state_rows(CONTACTS) >= 200:  # batches acknowledged, more in flight
                victim = ti
        time.sleep(0.3)
    assert victim, topology.task_states(CONTACTS, run_id)
    acked_at_kill = topology.state_rows(CONTACTS)
    name = victim["hostname"].split("@", 1)[0]
    topology.kill_worker(name)
    assert acked_at_kill < len(expected)
    try:
        assert topology.wait_for_run(CONTACTS, run_id, timeout=300) == "success"
        tries = topology.tries(CONTACTS, run_id, "load", victim["map_index"])
        hosts = [(t["try_number"], t["hostname"], t["state"]) for t in tries]
        assert hosts[0][1] == victim["hostname"] and hosts[0][2] != "success", hosts
        assert hosts[-1][2] == "success" and not hosts[-1][1].startswith(f"{name}@"), hosts
        wrong = contacts_differences(world, expected)
        assert not wrong, f"{len(wrong)} of {len(expected)} members differ, e.g. {wrong[:2]}"
        assert topology.state_rows(CONTACTS) == len(expected)  # nothing lost
        FIGURES["b"] = {
            "wall_s": round(time.monotonic() - started),
            "killed": name,
            "acked_at_kill": acked_at_kill,
            "load_tries": hosts,
        }
    finally:
        world.clear_faults("esp")
        topology.start_worker(f"w{WORKERS + len(topology.killed)}")  # back to two workers
        topology.wait_for_workers()


@pytest.mark.soak  # ~60 s
def test_state_database_connections_dropped_mid_run(topology, world):
    started = time.monotonic()
    expected = contacts_expectation(world)
    world.set_faults("esp", latency_ms={"ms": 500, "method": "POST"})
    run_id = topology.trigger(CONTACTS, logical_date=NIGHT, conf=FULL)
    dropped = []
    done = threading.Event()

    def drop_while_loading() -> None:
        while not done.is_set():
            states = topology.task_states(CONTACTS, run_id)
            if any(k.startswith("load[") and v == "running" for k, v in states.items()):
                dropped.append(topology.terminate_state_connections())
            time.sleep(0.7)

    dropper = threading.Thread(target=drop_while_loading, daemon=True)
    dropper.start()
    try:
        state = topology.wait_for_run(CONTACTS, run_id, timeout=400)
    finally:
        done.set()
        dropper.join(10)
        world.clear_faults("esp")
    assert state == "success", topology.task_states(CONTACTS, run_id)
    assert sum(dropped) >= 1, f"no state DB session was open while loading: {dropped}"
    wrong = contacts_differences(world, expected)
    assert not wrong, f"{len(wrong)} of {len(expected)} members differ, e.g. {wrong[:2]}"
    assert topology.state_rows(CONTACTS) == len(expected)
    retried = [t for t in topology.all_tries(CONTACTS, run_id) if t["try_number"] > 1]
    FIGURES["c"] = {
        "wall_s": round(time.monotonic() - started),
        "sessions_terminated": sum(dropped),
        "rounds": len([d for d in dropped if d]),
        "retried": [(t["task_id"], t["map_index"], t["try_number"]) for t in retried],
    }


@pytest.mark.soak  # ~4-5 min
@pytest.mark.timeout(1200)  # ten runs one at a time per DAG: ~4 min here, twice that on a busy machine
def test_parallel_five_day_backfills_equal_the_serial_expectation(topology, world):
    """Needs the run lock: days of one DAG share a daily store / an orders snapshot."""
    started = time.monotonic()
    run_and_wait(topology, CONTACTS, NIGHT, FULL)
    members = audience(topology)
    before = crm_state(world)
    first, last = DAY - timedelta(days=4), DAY  # interval starts 2026-11-14 .. 2026-11-18
    for dag_id in (ENGAGEMENT, SHOP):
        topology.backfill(dag_id, f"{first:%Y-%m-%d}", f"{last:%Y-%m-%d}", max_active_runs=5)
    for dag_id in (ENGAGEMENT, SHOP):
        runs = topology.wait_for_backfill(dag_id, 5, timeout=1000)
        failed = {
            r["dag_run_id"]: {
                t: s for t, s in topology.task_states(dag_id, r["dag_run_id"]).items() if s != "success"
            }
            for r in runs
            if r["state"] != "success"
        }
        assert len(runs) == 5 and not failed, (dag_id, failed)
        starts = sorted(datetime.fromisoformat(r["data_interval_start"]) for r in runs)
        assert starts == [first + timedelta(days=i) for i in range(5)]
    end = last + timedelta(days=1)
    assert crm_state(world) == expected_crm(world, first, end, before)
    assert_shop_state(world, shop_expectation(world, topology, first, end, members))
    FIGURES["d"] = {"wall_s": round(time.monotonic() - started)}
