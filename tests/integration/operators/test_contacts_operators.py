"""The contacts sync's operators in the providers' style: built with a brand's connection ids,
mapping and state, `execute(context)` called in the DAG's order against the sandbox, with
connections from AIRFLOW_CONN_*. What the DAG runs, without the scheduler."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailsync.operators.contacts import (
    ContactsQualityGateOperator,
    ExtractCrmContactsOperator,
    ExtractLoyaltyFileOperator,
)
from tests.connections import variant
from tests.integration.dags import dagrun
from tests.integration.operators.context import contacts_night, operator_context, published

DAG, STATE = "crm_to_esp_contacts__brand_x", "crm_to_esp_contacts__brand_x"
START, END = datetime(2026, 11, 19, 2, tzinfo=UTC), datetime(2026, 11, 20, 2, tzinfo=UTC)
PARAMS = {"partitions": 2, "max_removal_share": 0.1, "allow_mass_removal": False, "full_refresh": True}


def _context(run_id: str, **params) -> dict:
    return operator_context(DAG, run_id, START, END, **{**PARAMS, **params})


@pytest.fixture
def brand_x(vendors, connections, tmp_path):
    """A brand's own connection ids (the sandbox's accounts under other names)."""
    dagrun.isolate(tmp_path)
    return {
        "crm": variant(connections, "crm_default", "crm_brand_x"),
        "esp": variant(connections, "esp_default", "esp_brand_x"),
        "sftp": variant(connections, "loyalty_sftp", "loyalty_sftp_brand_x"),
    }


def _night(conns: dict, run_id: str, **params) -> list[dict]:
    """Every step of a night, in the DAG's order; returns the loads' results."""
    done = contacts_night(
        _context(run_id, **params),
        state=STATE,
        crm_conn_id=conns["crm"],
        esp_conn_id=conns["esp"],
        sftp_conn_id=conns["sftp"],
    )
    assert done["validate"]["contacts"]["rows_good"] > 900
    return done["load"]


def test_a_night_on_a_brands_connections_writes_its_state_only(brand_x, vendors):
    from mailsync.state import SyncState

    vendors.clear_requests()
    loads = _night(brand_x, "manual__1")
    sent = sum(load["sent"] for load in loads)
    assert sent > 900 and sum(load["rejected"] for load in loads) < 20
    assert SyncState(STATE).count() == sent  # the brand's own state ...
    assert SyncState("crm_to_esp_contacts").count() == 0  # ... not the default brand's
    writes = [r for r in vendors.requests("esp") if r["method"] != "GET"]
    assert writes and len(writes) < 40  # batches, not one call per member

    vendors.clear_requests()
    again = _night(brand_x, "manual__2")
    assert sum(load["sent"] for load in again) == 0  # nothing changed: nothing sent twice
    assert [r for r in vendors.requests("esp") if r["method"] != "GET"] == []


def test_the_gate_links_its_report_and_an_unknown_connection_names_itself(brand_x, vendors):
    context = _context("manual__links")
    ExtractCrmContactsOperator(task_id="extract_contacts", crm_conn_id=brand_x["crm"]).execute(context)
    ExtractLoyaltyFileOperator(
        task_id="extract_loyalty", sensed={"found": False}, sftp_conn_id=brand_x["sftp"]
    ).execute(context)
    gate = ContactsQualityGateOperator(task_id="validate")
    gate.execute(context)
    assert published(gate, context) == {"Quality report", "Quarantine"}

    with pytest.raises(Exception, match="crm_brand_missing"):
        ExtractCrmContactsOperator(task_id="extract_contacts", crm_conn_id="crm_brand_missing").execute(
            _context("manual__missing")
        )
