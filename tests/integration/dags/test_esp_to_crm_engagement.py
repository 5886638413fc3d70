"""esp_to_crm_engagement: the CRM ends up the same however the days are run."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from mailsync.hooks.base import VendorUnavailable
from mailsync.operators.crm import WriteBackCrmContactsOperator
from mailsync.operators.engagement import EngagementTotalsOperator, ExtractEspActivityOperator
from mailsync.operators.steps import QualityGateOperator
from tests.integration.dags import dagrun
from tests.integration.dags.expected_engagement import (
    crm_records,
    crm_state,
    duplicated_emails,
    expected_crm,
    expected_records,
)

DAG = "esp_to_crm_engagement"
WEEK = [datetime(2026, 11, 13, tzinfo=UTC) + timedelta(days=i) for i in range(7)]  # interval starts
pytestmark = pytest.mark.slow


@pytest.fixture
def world(vendors, airflow_db, tmp_path):
    dagrun.isolate(tmp_path)
    return vendors


class _TaskInstance:
    """What the operators use of a task instance outside a run: the link XComs they push."""

    def xcom_push(self, key: str, value: object) -> None:
        pass


def run_day(start: datetime) -> dict:
    """One interval through the DAG's operators (the default brand's arguments), in its order."""
    context = {
        "ti": _TaskInstance(),
        "dag": SimpleNamespace(dag_id=DAG),
        "run_id": f"direct__{start:%Y%m%d}",
        "data_interval_start": start,
        "data_interval_end": start + timedelta(days=1),
        "params": {"campaign_lookback_days": 30},
    }
    extracted = ExtractEspActivityOperator(task_id="extract", esp_conn_id="esp_default").execute(context)
    QualityGateOperator(task_id="validate", mapping=DAG, source="activity").execute(context)
    EngagementTotalsOperator(task_id="transform", mapping=DAG).execute(context)
    load = WriteBackCrmContactsOperator(task_id="load", mapping=DAG, state=DAG, crm_conn_id="crm_default")
    return {**extracted, **load.execute(context)}


def test_a_week_of_daily_runs_equals_a_direct_computation(world):
    before, before_records = crm_state(world), crm_records(world)
    for start in WEEK:  # the DAG's own runs: logical date = interval end for a manual run
        run = dagrun.run(DAG, (start + timedelta(days=1)).isoformat())
        assert run.state == "success" and run.data_interval_start == start
    expected = expected_crm(world, WEEK[0], WEEK[-1] + timedelta(days=1), before)
    after = crm_state(world)
    assert after == expected
    touched = sum(1 for e in expected if expected[e] != before[e])
    assert touched > 100  # the week really changed contacts
    # every CRM record of a touched email, the generator's duplicates of a person included
    expected_all = expected_records(world, WEEK[0], WEEK[-1] + timedelta(days=1), before_records)
    assert crm_records(world) == expected_all
    twice = duplicated_emails(world)
    assert any(r["email"] in twice and r != before_records[i] for i, r in expected_all.items())
    report = dagrun.report(run)
    assert report["unknown_contacts"] >= 1 and report["crm_write_calls"] >= 1


def test_reverse_order_and_every_day_twice_give_the_same_crm(world):
    before = crm_state(world)
    expected = expected_crm(world, WEEK[0], WEEK[-1] + timedelta(days=1), before)
    for start in reversed(WEEK):
        run_day(start)
    assert crm_state(world) == expected
    world.clear_requests()
    for start in WEEK:  # every day again, in order: nothing may change
        run_day(start)
    assert crm_state(world) == expected  # re-sent opt-outs of their own day change nothing


def test_a_day_failed_by_an_esp_outage_then_rerun_gives_the_same_crm(world, connections):
    before = crm_state(world)
    expected = expected_crm(world, WEEK[0], WEEK[-1] + timedelta(days=1), before)
    outage_day = WEEK[3]
    for start in WEEK:
        if start == outage_day:
            impatient = {**connections["esp_default"]}
            impatient["extra"] = {**impatient["extra"], "retry_budget": 1}
            normal = os.environ["AIRFLOW_CONN_ESP_DEFAULT"]
            os.environ["AIRFLOW_CONN_ESP_DEFAULT"] = json.dumps(impatient)
            world.set_faults("esp", status_burst={"count": 1000, "status": 503})
            with pytest.raises(VendorUnavailable):
                run_day(start)
            world.clear_faults("esp")
            os.environ["AIRFLOW_CONN_ESP_DEFAULT"] = normal
            continue
        run_day(start)
    assert crm_state(world) != expected  # the failed day is missing ...
    run_day(outage_day)  # ... until on-call reruns it
    assert crm_state(world) == expected


def test_hard_bounce_and_unsubscribe_are_written_back_and_never_undone(world):
    contacts = [c for c in world.crm_contacts() if (c["properties"].get("email") or "").strip()]
    bouncer, leaver = (c["properties"]["email"].strip().lower() for c in contacts[10:12])
    campaign = world.esp_campaigns()[-1]["id"]
    world.add_esp_activity(bouncer, "bounce", "2026-11-18T10:00:00Z", campaign_id=campaign, type="hard")
    world.add_esp_activity(leaver, "unsubscribe", "2026-11-18T11:00:00Z", campaign_id=campaign)
    world.add_esp_activity(leaver, "open", "2026-11-19T09:30:00Z", campaign_id=campaign)
    run_day(datetime(2026, 11, 19, tzinfo=UTC))  # the newer day first
    last_open = crm_state(world)[leaver]["esp_last_open_at"]
    assert last_open >= "2026-11-19T09:30:00.000Z"
    run_day(datetime(2026, 11, 18, tzinfo=UTC))  # then backfill the older one
    state = crm_state(world)
    assert state[bouncer]["email_invalid"] == "true"
    assert state[bouncer]["email_invalid_date"] == "2026-11-18"
    assert state[bouncer]["email_invalid_reason"] == f"hard bounce (campaign {campaign})"
    assert state[leaver]["marketing_consent"] == "false"
    assert state[leaver]["marketing_opt_out_date"] == "2026-11-18"
    assert state[leaver]["marketing_opt_out_campaign"] == campaign
    assert state[leaver]["esp_last_open_at"] == last_open  # the backfill kept the newer open
    run_day(datetime(2026, 11, 19, tzinfo=UTC))  # rerunning the newer day changes nothing
    assert crm_state(world)[leaver] == state[leaver]


def test_a_later_open_does_not_opt_out_again_who_consented_since(world):
    """An opt-out is written by the interval that holds the unsubscribe, never re-asserted later."""
    contact = next(c for c in world.crm_contacts() if (c["properties"].get("email") or "").strip())
    email = contact["properties"]["email"].strip().lower()
    campaign = world.esp_campaigns()[-1]["id"]
    world.add_esp_activity(email, "unsubscribe", "2026-11-17T11:00:00Z", campaign_id=campaign)
    run_day(datetime(2026, 11, 17, tzinfo=UTC))
    assert crm_state(world)[email]["marketing_consent"] == "false"
    from mailsync.hooks.crm import CrmHook

    list(
        CrmHook().update_contacts([{"email": email, "properties": {"marketing_consent": "true"}}])
    )  # re-consent
    world.add_esp_activity(email, "open", "2026-11-19T09:00:00Z", campaign_id=campaign)
    run_day(datetime(2026, 11, 19, tzinfo=UTC))
    after = crm_state(world)[email]
    assert after["marketing_consent"] == "true" and after["esp_last_open_at"] >= "2026-11-19T09:00:00.000Z"


def test_each_brand_gets_its_own_dag_reaching_only_its_own_connections_and_state():
    from airflow.dag_processing.dagbag import DagBag

    from mailsync.brands import brands_for

    bag = DagBag(dag_folder=str(dagrun.PROJECT / "dags" / f"{DAG}.py"))
    assert not bag.import_errors and len(bag.dags) == len(brands_for(DAG))
    for brand in brands_for(DAG):
        dag = bag.dags[brand.dag_id(DAG)]
        load, (outlet,) = dag.get_task("load"), dag.get_task("report").outlets
        assert dag.get_task("extract").esp_conn_id == brand.conn_id("esp", DAG)
        assert (load.crm_conn_id, load.state) == (brand.conn_id("crm", DAG), brand.state(DAG))
        assert outlet.name == brand.dag_id("crm_contact_engagement")
    default = bag.dags[DAG]  # the single-brand deployment's ids, unchanged
    assert default.get_task("extract").esp_conn_id == "esp_default"
    assert (default.get_task("load").crm_conn_id, default.get_task("load").state) == ("crm_default", DAG)
    assert default.get_task("report").outlets[0].uri == "mailsync://crm/contacts/engagement"
