"""Vendor API faults during whole contact-sync nights (dag.test() against the sandbox).

Night A groups the transient faults that do not interfere with one another (each hits its own
calls): 429 storms and 5xx bursts on both vendors, dropped connections, a client timeout after
the server applied the write, per-record rejections. It must succeed after recovery; the next
night resends the rejected records once the vendor takes them. The outage cases fail (or
retry) and their rerun must reach the prescribed state.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from tests.connections import set_connection
from tests.integration.dags.expected_contacts import loyalty_tiers
from tests.reliability.checker import Outcome, check_contacts, members, norm

DAG = "crm_to_esp_contacts"
NIGHT1, NIGHT2 = "2026-11-20T02:00:00Z", "2026-11-21T02:00:00Z"
QUICK = {"loyalty_wait_minutes": 0}
pytestmark = pytest.mark.slow


def _with_options(connections: dict, conn_id: str, **extra) -> None:
    definition = json.loads(json.dumps(connections[conn_id]))
    definition["extra"].update(extra)
    set_connection(conn_id, definition)


@pytest.fixture
def restore_connections(connections):
    yield connections
    for conn_id, definition in connections.items():
        set_connection(conn_id, definition)
    os.environ.pop("MAILSYNC_TASK_RETRIES", None)


def world_expected(world, before):
    from tests.reliability.checker import expected_contacts

    return expected_contacts(world, before, loyalty_tiers(world.loyalty_path("2026-11-19").read_bytes()))


def test_transient_faults_and_rejections_recover_within_the_night(
    world, restore_connections, recorder, clock, nights
):
    connections = restore_connections
    before = members(world)
    expected = world_expected(world, before)
    new_subscribers = [e for e, m in expected.items() if e not in before and m["status"] == "subscribed"]
    refused = set(new_subscribers[:5])
    # small batches and a short client timeout so every fault meets a call
    _with_options(connections, "esp_default", batch_size=200, timeout=3, retry_budget=30)
    _with_options(connections, "crm_default", retry_budget=30)
    batch = {"method": "POST", "path": "/3.0/lists/*"}
    world.set_faults(
        "esp",
        rate_limit={"every": 3, "retry_after": 0.1, **batch},
        drop={"count": 2, **batch},
        slow={"count": 1, "seconds": 4.5, **batch},
        record_errors={"keys": sorted(refused)},
    )
    world.set_faults(
        "crm",
        status_burst={"count": 2, "status": 502},
        rate_limit={"every": 5, "retry_after": 0.1},
    )
    first = nights(DAG, NIGHT1, full_refresh=True, **QUICK)
    faults = world.faults()
    world.clear_faults()
    report_first = first.report or {}
    second = nights(DAG, NIGHT2, **QUICK)  # the vendor takes the refused records again
    requests = world.requests()
    applied = {
        f"{system}.{name}": sw.get("applied", 0)
        for system, switches in faults.items()
        if isinstance(switches, dict)
        for name, sw in switches.items()
        if isinstance(sw, dict)
    }
    rows = [
        ("429 storm (ESP every 3rd batch, CRM every 5th call)", ["esp.rate_limit", "crm.rate_limit"]),
        ("5xx burst (CRM 2 × 502)", ["crm.status_burst"]),
        ("dropped connections (ESP 2 batches)", ["esp.drop"]),
        ("client timeout after the write was applied (ESP)", ["esp.slow"]),
        ("per-record rejections (ESP refuses 5 new members)", ["esp.record_errors"]),
    ]
    outcome = check_contacts(
        world,
        Outcome(case="", group="contacts night A (grouped transient faults)"),
        before=before,
        expected=expected,
        requests=requests,
        refused_keys=refused,
    )
    outcome.runs = 2
    ok = first.state == "success" and second.state == "success"
    outcome.outcome = (
        f"night {first.state} ({report_first.get('rejected', '?')} rejected, "
        f"{report_first.get('retries', '?')} retries), rerun {second.state} "
        f"(resent {((second.report or {}).get('created', 0) + (second.report or {}).get('updated', 0))})"
    )
    outcome.passed = ok and not outcome.problems()
    for case, switches in rows:
        row = Outcome(**{**outcome.__dict__, "case": case, "details": {**outcome.details}})
        row.details["fault_applied"] = {s: applied.get(s, 0) for s in switches}
        row.inputs = ", ".join(f"{s}: {applied.get(s, 0)} hit" for s in switches)
        recorder.record(row, clock)
    assert ok, (first.state, first.failed_tasks, first.errors[-5:], second.state, second.failed_tasks)
    assert all(applied.get(s, 0) > 0 for _, sw in rows for s in sw), applied
    assert report_first["rejected"] == len(refused)
    assert not outcome.problems(), (outcome.problems(), outcome.examples)
    assert outcome.resent_after_timeout <= 200  # at most the one batch whose answer was lost


def test_crm_down_past_the_retry_budget_fails_with_a_message_then_the_rerun_completes(
    world, restore_connections, recorder, clock, nights
):
    connections = restore_connections
    before = members(world)
    expected = world_expected(world, before)
    os.environ["MAILSYNC_TASK_RETRIES"] = "0"  # one try: the budget is what this case is about
    _with_options(connections, "crm_default", retry_budget=2, max_attempts=3)
    world.set_faults("crm", status_burst={"count": 100000, "status": 503})
    down = nights(DAG, NIGHT1, full_refresh=True, **QUICK)
    world.clear_faults()
    esp_writes_while_down = [r for r in world.requests("esp") if r["method"] != "GET"]
    set_connection("crm_default", connections["crm_default"])
    rerun = nights(DAG, NIGHT1, full_refresh=True, **QUICK)
    says_what_to_do = [m for m in down.errors if "rerun the task later" in m]
    outcome = check_contacts(
        world,
        Outcome(case="CRM API down past the retry budget", group="contacts, 2 runs"),
        before=before,
        expected=expected,
        requests=world.requests(),
    )
    outcome.runs = 2
    outcome.inputs = "CRM 503 on every call; retry budget 2 s, 2 tries"
    outcome.outcome = (
        f"night {down.state} at {','.join(t for t in down.failed_tasks if 'lock' not in t)[:60]}"
        f" ({'says: rerun the task later' if says_what_to_do else 'NO actionable message'}); "
        f"rerun {rerun.state}"
    )
    ok = down.state == "failed" and says_what_to_do and not esp_writes_while_down and rerun.state == "success"
    outcome.passed = bool(ok) and not outcome.problems()
    recorder.record(outcome, clock)
    assert down.state == "failed" and "extract_contacts" in down.failed_tasks
    assert says_what_to_do, down.errors[-5:]
    assert not esp_writes_while_down
    assert rerun.state == "success"
    assert not outcome.problems(), (outcome.problems(), outcome.examples)


def test_esp_down_mid_load_past_one_try_resumes_on_the_task_retry(
    world, restore_connections, recorder, clock, nights
):
    """The outage starts after a few acknowledged batches and outlasts the first try's budget."""
    connections = restore_connections
    before = members(world)
    expected = world_expected(world, before)
    _with_options(
        connections, "esp_default", batch_size=50, max_connections=1, retry_budget=3, max_attempts=3
    )
    world.set_faults("esp", latency_ms={"ms": 150, "method": "POST"})
    stop = threading.Event()

    def outage_after_three_batches() -> None:
        while not stop.is_set():
            posts = [r for r in world.requests("esp") if r["method"] == "POST" and r["status"] == 200]
            if len(posts) >= 3:
                world.set_faults("esp", status_burst={"count": 3, "status": 503, "method": "POST"})
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=outage_after_three_batches, daemon=True)
    watcher.start()
    night = nights(DAG, NIGHT1, full_refresh=True, partitions=1, **QUICK)
    stop.set()
    watcher.join()
    faults = world.faults()
    world.clear_faults()
    outcome = check_contacts(
        world,
        Outcome(
            case="ESP API down mid-load past one try's retry budget", group="contacts, 1 run + task retry"
        ),
        before=before,
        expected=expected,
        requests=world.requests(),
    )
    burst = faults.get("esp", {}).get("status_burst", {})
    outcome.runs = 1
    outcome.inputs = f"ESP 503 × {burst.get('applied', 0)} after 3 acked batches; budget 3 s, 3 attempts"
    resumed = sum(p.get("resumed_skip", 0) for p in [night.report or {}])
    outcome.outcome = f"load try 1 failed, task retry resumed; night {night.state}"
    outcome.details["report_retries"] = (night.report or {}).get("retries")
    outcome.passed = night.state == "success" and not outcome.problems()
    recorder.record(outcome, clock)
    assert burst.get("applied", 0) == 3, faults
    assert any("still failing" in m for m in night.errors), night.errors[-5:]
    assert night.state == "success", (night.failed_tasks, night.errors[-5:])
    assert not outcome.problems(), (outcome.problems(), outcome.examples, resumed)


def test_crm_write_back_rejections_reach_the_crm_by_the_next_day(world, recorder, clock, nights):
    """The CRM refuses some contacts' engagement updates on day 1; day 2 runs clean. Every
    contact must end with what its activity prescribes (a refused update is not a lost one)."""
    from datetime import UTC, datetime, timedelta

    from tests.integration.dags.expected_engagement import crm_state, events, expected_crm
    from tests.reliability.checker import check_engagement

    day1, day2 = datetime(2026, 11, 18, tzinfo=UTC), datetime(2026, 11, 19, tzinfo=UTC)
    before = crm_state(world)
    touched = sorted({e[0] for e in events(world, day1, day2)} & set(before))
    ids = {norm(c["properties"].get("email")): str(c["id"]) for c in world.crm_contacts()}
    refused = [ids[e] for e in touched[:5]]
    world.set_faults("crm", record_errors={"keys": refused})
    first = nights("esp_to_crm_engagement", day2.isoformat())
    world.clear_faults()
    second = nights("esp_to_crm_engagement", (day2 + timedelta(days=1)).isoformat())
    expected = expected_crm(world, day1, day2 + timedelta(days=1), before)
    outcome = check_engagement(
        world,
        Outcome(case="per-record rejections on the CRM write-back (engagement)", group="engagement, 2 days"),
        expected=expected,
        requests=world.requests(),
    )
    outcome.runs = 2
    outcome.inputs = f"CRM refuses {len(refused)} contacts' updates on day 1"
    outcome.outcome = (
        f"day 1 {first.state} ({(first.report or {}).get('rejected', '?')} rejected), day 2 {second.state}"
    )
    outcome.passed = first.state == "success" and second.state == "success" and not outcome.problems()
    recorder.record(outcome, clock)
    assert second.state == "success"
    assert not outcome.problems(), (outcome.problems(), outcome.examples)
