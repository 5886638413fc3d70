"""The engagement operators and the shared CRM write-back in the providers' style: built with
arguments, `execute(context)` called directly, connections from AIRFLOW_CONN_* (the sandbox)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from mailsync.links import ui_url
from mailsync.operators.crm import WriteBackCrmContactsOperator, pending_emails
from mailsync.operators.engagement import ExtractEspActivityOperator
from mailsync.operators.run import Run
from tests.connections import variant
from tests.integration.dags import dagrun
from tests.integration.dags.expected_engagement import crm_state, events
from tests.integration.operators.context import links_shown, operator_context

MAPPING = "esp_to_crm_engagement"
STATE = "crm_write_back_operator_test"
START, END = datetime(2026, 11, 19, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)
UNKNOWN = "nobody-knows-me@example.org"


def _context(**params) -> dict:
    return operator_context("operator_test", "manual__operator_test", START, END, **params)


@pytest.fixture
def world(vendors, tmp_path):
    dagrun.isolate(tmp_path)
    return vendors


def _write_desired(context: dict, emails: list[str]) -> None:
    """Desired CRM records where the write-back reads them: what the step before it writes."""
    from mailsync.mapping import engine
    from mailsync.mapping.spec import load_mapping
    from mailsync.operators import sync
    from mailsync.settings import BUCKETS

    m = load_mapping(MAPPING)
    raw = pd.DataFrame({column: [None] * len(emails) for column in m.sources["totals"].inputs})
    raw["email"] = emails
    raw["opens_total"], raw["clicks_total"] = 7, 3
    raw["soft_bounces_total"], raw["campaigns_engaged"] = 0, 2
    raw["last_open_at"] = "2026-11-19T08:15:00+00:00"
    records = engine.transform(m, engine.prepare(m, "totals", raw))
    records[sync.BUCKET] = engine.bucket_of(records[engine.KEY], BUCKETS)
    (Run.from_context(context).area / "desired").write_parquet("contacts.parquet", records)


def _writes(world) -> list[dict]:
    return [r for r in world.requests("crm") if r["path"].endswith("/batch/update")]


def test_the_write_back_writes_acknowledges_and_a_second_run_writes_nothing(world, connections):
    known = sorted(crm_state(world))[:3]
    crm = variant(connections, "crm_default", "crm_brand_test")  # any connection id, not the default
    op = WriteBackCrmContactsOperator(task_id="load", mapping=MAPPING, state=STATE, crm_conn_id=crm)
    context = _context()
    _write_desired(context, [*known, UNKNOWN])
    contacts_before = len(world.crm_contacts())

    world.clear_requests()
    dry = op.execute(_context(dry_run=True))
    assert (dry["new"], dry["changed"], dry["dry_run"], dry["would_write"]) == (4, 0, True, 4)
    assert world.requests("crm") == []  # a dry run does not even call the CRM

    done = op.execute(context)
    assert (done["written"], done["unknown_contacts"], done["rejected"]) == (3, 1, 0)
    assert done["retried_next_run"] == 0 and done["write_calls"] >= 1
    after = crm_state(world)
    for email in known:
        assert after[email]["esp_opens_total"] == "7" and after[email]["esp_clicks_total"] == "3"
        assert after[email]["esp_last_open_at"].startswith("2026-11-19T08:15:00")
    assert UNKNOWN not in after and len(world.crm_contacts()) == contacts_before  # reported, not created
    assert "unknown_contact" in Run.from_context(context).area.read_text("load/rejected.csv")
    assert links_shown(op, context) == {
        "Rejected records": f"{ui_url()}/mailsync/runs/operator_test/manual__operator_test/rejected"
    }

    world.clear_requests()
    again = op.execute(_context())
    assert (again["unchanged"], again["written"], again["unknown_contacts"]) == (3, 0, 1)
    assert _writes(world) == []  # acknowledged: nothing is written twice (the unknown one is sought again)


def test_a_refused_write_is_kept_for_the_next_run(world):
    """A write the CRM refuses (not an unknown contact) is kept in the pending list that the
    next run's transform touches again; once the CRM accepts it the list is gone."""
    email = sorted(crm_state(world))[5]
    ids = [
        c["id"] for c in world.crm_contacts() if (c["properties"].get("email") or "").strip().lower() == email
    ]
    op = WriteBackCrmContactsOperator(task_id="load", mapping=MAPPING, state=STATE)
    context = _context()
    _write_desired(context, [email])
    world.set_faults("crm", record_errors={"keys": [email, *ids]})
    refused = op.execute(context)
    world.clear_faults("crm")
    current = Run.from_context(context).current
    assert (refused["written"], refused["rejected"], refused["retried_next_run"]) == (0, 1, 1)
    assert pending_emails(current) == {email}
    assert op.execute(_context())["written"] == 1  # not acknowledged: sent again, accepted
    assert pending_emails(current) == set()


def test_the_extract_reads_the_named_connection_only(world, connections, monkeypatch):
    esp = variant(connections, "esp_default", "esp_brand_test")
    broken = {**connections["esp_default"], "host": "http://127.0.0.1:1", "extra": {"retry_budget": 1}}
    monkeypatch.setenv("AIRFLOW_CONN_ESP_DEFAULT", json.dumps(broken))  # the default is not used
    context = _context(campaign_lookback_days=30)
    world.clear_requests()
    got = ExtractEspActivityOperator(task_id="extract", esp_conn_id=esp).execute(context)
    assert got["rows"] == len(events(world, START, END)) > 0
    assert got["campaigns"] == len(world.esp_campaigns())  # all sent within the 30 days
    assert got["api_calls"] == len(world.requests("esp")) >= 1
    staged = Run.from_context(context).area / "extract" / "activity"
    assert sum(len(f) for f in staged.iter_parquet()) == got["rows"]
