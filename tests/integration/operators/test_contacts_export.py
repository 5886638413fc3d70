"""Full CRM extracts through HubSpot's exports API (mailsync.contacts.extract) against the sandbox:
the same staged rows as a listing (so a change of path sends nobody), the path chosen by the
connection's extra (`full_extract: auto` exports a CRM over `export_over` contacts; `list` is
the fallback), a failed or stuck export failing the task by name with nothing
staged, a short export refused, and the calls an export costs with HubSpot's limiter on."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from mailsync.contacts.areas import contacts_snapshot
from mailsync.contacts.extract import IncompleteExtract
from mailsync.hooks.base import JobFailed, JobTimeout
from mailsync.hooks.crm import CrmHook
from mailsync.operators.contacts import (
    ExtractCrmContactsOperator,
)
from mailsync.operators.run import Run
from tests.connections import variant
from tests.integration.dags import dagrun
from tests.integration.operators.context import contacts_night, operator_context

DAG = STATE = "crm_to_esp_contacts"
NIGHT1 = (datetime(2026, 11, 19, 2, tzinfo=UTC), datetime(2026, 11, 20, 2, tzinfo=UTC))
NIGHT2 = (datetime(2026, 11, 20, 2, tzinfo=UTC), datetime(2026, 11, 21, 2, tzinfo=UTC))
PARAMS = {"partitions": 1, "max_removal_share": 0.1, "allow_mass_removal": False, "full_refresh": True}
FAST = {"export_poll_s": 0.02, "export_timeout_s": 10}  # JSON numbers: they must not become headers


@pytest.fixture
def crm(vendors, connections, tmp_path):
    """Connection ids of the sandbox's CRM: by export (fast polls) and by listing; the ESP's."""
    dagrun.isolate(tmp_path)
    return {
        "export": variant(connections, "crm_default", "crm_export", extra={**FAST, "full_extract": "export"}),
        "list": variant(connections, "crm_default", "crm_list", extra={"full_extract": "list"}),
    }


def _context(night: tuple[datetime, datetime], run_id: str, **params) -> dict:
    return operator_context(DAG, run_id, *night, **{**PARAMS, **params})


def _extract(conn_id: str, context: dict) -> dict:
    return ExtractCrmContactsOperator(task_id="extract_contacts", crm_conn_id=conn_id).execute(context)


def _staged(context: dict) -> pd.DataFrame:
    staged = list((Run.from_context(context).area / "extract" / "contacts").iter_parquet())
    return pd.concat(staged, ignore_index=True) if staged else pd.DataFrame()


def _night(conn_id: str, context: dict) -> tuple[dict, list[dict], list[dict]]:
    """Every step of a night in the DAG's order: (extract summary, diffs, loads)."""
    done = contacts_night(context, state=STATE, crm_conn_id=conn_id)
    return done["extract_contacts"], done["diff"], done["load"]


def test_a_full_refresh_by_export_after_one_by_listing_changes_no_member(crm, vendors):
    listed = [r for page in CrmHook().iter_contacts(["date_of_birth", "city"]) for r in page]
    assert any("" in (r["date_of_birth"], r["city"]) for r in listed)  # the list API tells "" from null

    vendors.clear_requests()
    first = _context(NIGHT1, "manual__list")
    by_list, _, loads = _night(crm["list"], first)
    assert by_list["mode"] == "full" and by_list["full_extract"] == "list"
    assert sum(load["sent"] for load in loads) > 900
    list_calls = by_list["api_calls"]
    assert list_calls >= by_list["contacts"] / 100  # a call per 100 contacts

    vendors.clear_requests()
    second = _context(NIGHT2, "manual__export")
    by_export, diffs, loads = _night(crm["export"], second)
    assert by_export["full_extract"] == "export" and by_export["contacts"] == by_list["contacts"]
    assert by_export["api_calls"] <= 8 < list_calls  # 2 counts, start, status reads, archived page
    assert [r for r in vendors.requests("crm") if r["path"] == "/crm/v3/objects/contacts"] != []  # archived
    # the same staged rows, columns and dtypes: a CSV's empty cell and the list's "" both null
    pd.testing.assert_frame_equal(_staged(second), _staged(first))
    assert sum(d["changed"] + d["new"] + d["to_remove"] for d in diffs) == 0
    assert sum(load["sent"] for load in loads) == 0
    assert [r for r in vendors.requests("esp") if r["method"] != "GET"] == []  # nothing re-sent


def test_a_canceled_export_fails_the_task_naming_it_and_stages_nothing(crm, vendors):
    context = _context(NIGHT1, "manual__canceled")
    _extract(crm["export"], context)
    staged = Run.from_context(context).area / "extract" / "contacts"
    assert staged.names(".parquet")  # a first try's rows, which the failed retry must not leave
    vendors.set_faults("crm", jobs={"fail": True})
    with pytest.raises(JobFailed) as err:
        _extract(crm["export"], context)
    message = str(err.value)
    assert "HubSpot's exports API" in message and "CRM export 4784" in message and "CANCELED" in message
    assert "full_extract=list" in message and "snapshot stays" in message
    assert staged.names(".parquet") == []
    assert not contacts_snapshot(Run.from_context(context)).exists()


def test_an_export_that_never_completes_times_out_clearly(crm, vendors, connections):
    slow = variant(
        connections,
        "crm_default",
        "crm_stuck",
        extra={"full_extract": "export", "export_poll_s": 0.05, "export_timeout_s": 0.3},
    )
    vendors.set_faults("crm", jobs={"stall": True})
    with pytest.raises(JobTimeout) as err:
        _extract(slow, _context(NIGHT1, "manual__stuck"))
    assert "CRM export 4784" in str(err.value) and "not finished after 0.3s" in str(err.value)
    assert "last: PROCESSING" in str(err.value) and "full_extract=list" in str(err.value)


class _ShortExport(CrmHook):
    """The sandbox's export with its last contact left out (the sandbox has no fault for that)."""

    def export_contacts(self, properties, **kwargs):
        pages = list(super().export_contacts(properties, **kwargs))
        yield from [*pages[:-1], pages[-1][:-1]]


def test_an_export_short_of_the_crms_count_is_refused(crm, vendors):
    from mailsync.contacts.extract import extract
    from mailsync.mapping.spec import load_mapping

    with pytest.raises(IncompleteExtract, match=r"the CRM export ended after .* refusing a partial"):
        extract(
            Run.from_context(_context(NIGHT1, "manual__short")),
            _ShortExport(crm["export"]),
            load_mapping(DAG),
        )


def test_auto_exports_a_crm_over_export_over_and_lists_a_smaller_one(crm, vendors, connections):
    holds = len(vendors.crm_contacts())
    over = variant(connections, "crm_default", "crm_auto", extra={**FAST, "export_over": holds - 1})
    assert _extract(over, _context(NIGHT1, "manual__auto_big"))["full_extract"] == "export"
    at = variant(connections, "crm_default", "crm_auto_at", extra={"export_over": holds})
    assert _extract(at, _context(NIGHT1, "manual__auto_at"))["full_extract"] == "list"
    small = _extract("crm_default", _context(NIGHT2, "manual__auto_small"))  # default: auto, 10,000
    assert small["full_extract"] == "list" and small["contacts"] == holds


def test_an_unknown_path_is_refused_by_name(crm, connections):
    odd = variant(connections, "crm_default", "crm_odd", extra={"full_extract": "bulk"})
    with pytest.raises(ValueError, match=r"crm_odd.*full_extract='bulk', expected one of auto, export, list"):
        _extract(odd, _context(NIGHT1, "manual__odd"))


def test_with_hubspots_limiter_on_an_export_costs_a_few_calls(crm, vendors):
    vendors.set_faults("crm", rate_limit={"vendor": True, "max": 190, "interval_ms": 10_000})
    by_export = _extract(crm["export"], _context(NIGHT1, "manual__limited_export"))
    by_list = _extract(crm["list"], _context(NIGHT2, "manual__limited_list"))
    assert by_export["contacts"] == by_list["contacts"] == len(vendors.crm_contacts())
    # counts before and after, start, the status reads (done at the 2nd), one archived page
    assert by_export["api_calls"] <= 7 and by_export["retries"] == 0
    assert by_list["api_calls"] >= by_list["contacts"] // 100 + 3
    limited = [r for r in vendors.requests("crm") if r["status"] == 429]
    assert limited == []
