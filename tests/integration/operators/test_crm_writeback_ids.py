"""Issue 22: the engagement write-back takes the CRM ids the contacts sync's snapshot knows, and
one search for the contacts modified since it, so it writes by id (one call per 100 records) with
no read by email; emails the snapshot lacks when that search would cost more, and ids the CRM no
longer has, are read by email as before. Against the sandbox, operators called
with `execute(context)` after one contacts night."""

from __future__ import annotations

import math
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from mailsync.operators.crm import (
    WriteBackCrmContactsOperator,
    contacts_snapshot_of,
    pending_emails,
    quarantined_ids,
    snapshot_ids,
)
from mailsync.operators.run import Run
from tests.connections import variant
from tests.integration.dags import dagrun
from tests.integration.dags.expected_engagement import crm_records, duplicated_emails
from tests.integration.operators.context import contacts_night, operator_context

MAPPING, STATE = "esp_to_crm_engagement", "crm_write_back_ids_test"
CONTACTS_DAG = "crm_to_esp_contacts__ids_test"  # the contacts sync whose snapshot gives the ids
START, END = datetime(2026, 11, 19, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)
NIGHT = {"partitions": 1, "max_removal_share": 0.1, "allow_mass_removal": False, "full_refresh": True}
SNAPSHOT = Path(CONTACTS_DAG, "current", "snapshots", "contacts")
QUARANTINE = Path(CONTACTS_DAG, "runs")  # the night's quarantine file is kept there
HIGH_WATER = Path(CONTACTS_DAG, "current", "high_water.txt")
BAD_BIRTHDAY = "31/31/1990"
CONTACTS = "/crm/v3/objects/contacts"
SEARCH, BATCH_READ, UPDATE = (f"{CONTACTS}/{p}" for p in ("search", "batch/read", "batch/update"))


def _key(email: str | None) -> str:
    return (email or "").strip().lower()


@pytest.fixture(scope="module")
def night(sandbox, connections, tmp_path_factory) -> Path:
    """One contacts night (extract, gate, transform, commit) on the seed-42 sandbox, with one
    record of a duplicated email quarantined (a bad birthday): the staging folder whose contacts
    snapshot and quarantine file every test copies (each test regenerates the sandbox: same ids)."""
    folder = tmp_path_factory.mktemp("contacts_night")
    dagrun.isolate(folder)
    sandbox.reset(seed=42, contacts=1000, days=7)
    crm = variant(connections, "crm_default", "crm_ids_night", extra={"full_extract": "list"})
    from mailsync.hooks.crm import CrmHook

    shared_id = _ids_of(sandbox, sorted(duplicated_emails(sandbox))[1])[0]
    inputs = [{"id": shared_id, "properties": {"date_of_birth": BAD_BIRTHDAY}}]
    CrmHook(crm).call("POST", "crm/v3/objects/contacts/batch/update", json={"inputs": inputs})
    context = operator_context(CONTACTS_DAG, "scheduled__night", START, END, **NIGHT)
    assert contacts_night(context, load=False, crm_conn_id=crm)["commit"]["committed"]
    return folder / "staging"


@pytest.fixture
def world(vendors, night, tmp_path):
    """A fresh sandbox, the test's own staging and state, with the night's contacts snapshot."""
    dagrun.isolate(tmp_path)
    shutil.copytree(night / SNAPSHOT, tmp_path / "staging" / SNAPSHOT)
    shutil.copytree(night / QUARANTINE, tmp_path / "staging" / QUARANTINE)
    shutil.copy(night / HIGH_WATER, tmp_path / "staging" / HIGH_WATER)  # the snapshot's as-of time
    return vendors


def _context() -> dict:
    return operator_context("operator_test", "manual__ids_test", START, END)


def _operator(**kwargs) -> WriteBackCrmContactsOperator:
    return WriteBackCrmContactsOperator(
        task_id="load", mapping=MAPPING, state=STATE, ids_from_dag=CONTACTS_DAG, **kwargs
    )


def _write_desired(context: dict, emails: list[str], opens: int = 7) -> None:
    """Desired CRM records where the write-back reads them (what the transform step writes)."""
    from mailsync.mapping import engine
    from mailsync.mapping.spec import load_mapping
    from mailsync.operators import sync
    from mailsync.settings import BUCKETS

    m = load_mapping(MAPPING)
    raw = pd.DataFrame({column: [None] * len(emails) for column in m.sources["totals"].inputs})
    raw["email"] = emails
    raw["opens_total"], raw["clicks_total"], raw["soft_bounces_total"], raw["campaigns_engaged"] = (
        opens,
        3,
        0,
        2,
    )
    records = engine.transform(m, engine.prepare(m, "totals", raw))
    records[sync.BUCKET] = engine.bucket_of(records[engine.KEY], BUCKETS)
    (Run.from_context(context).area / "desired").write_parquet("contacts.parquet", records)


def _crm_calls(world) -> list[dict]:
    return [r for r in world.requests("crm") if r["path"].startswith("/crm/v3/objects/contacts")]


def _reads(world) -> list[dict]:
    return [r for r in _crm_calls(world) if not r["path"].endswith("/batch/update")]


def _paths(calls: list[dict]) -> list[str]:
    return [r["path"] for r in calls]


def _single_record_emails(world) -> list[str]:
    """Emails of one CRM record, which the snapshot has (the record passed the night's gate)."""
    per: dict[str, int] = {}
    for record in crm_records(world).values():
        per[record["email"]] = per.get(record["email"], 0) + 1
    single = sorted(e for e, n in per.items() if n == 1)
    known = snapshot_ids(contacts_snapshot_of(CONTACTS_DAG), single)
    return [e for e in single if e in known]


def _ids_of(world, email: str) -> list[str]:
    return sorted(i for i, r in crm_records(world).items() if r["email"] == email)


def test_known_contacts_are_written_by_id_with_no_read(world):
    emails = _single_record_emails(world)[:250]
    context = _context()
    _write_desired(context, emails)
    world.clear_requests()
    done = _operator().execute(context)
    assert (done["written"], done["unknown_contacts"], done["rejected"]) == (250, 0, 0)
    assert done["sent_by_id"] == 250 and done["ids_gone_since_snapshot"] == 0
    calls = _crm_calls(world)
    assert len(calls) == 1 + math.ceil(250 / 100) == done["api_calls"]  # 3 updates ...
    assert _paths(_reads(world)) == [SEARCH]  # ... after one search for records moved since: no read by email
    after = crm_records(world)
    assert all(r["esp_opens_total"] == "7" for r in after.values() if r["email"] in emails)


def test_a_contact_created_since_the_snapshot_is_found_by_one_search_and_written_by_id(world):
    from mailsync.hooks.crm import CrmHook

    newcomer = "joined-after-the-night@example.org"  # a contact created in the CRM since the snapshot
    inputs = [{"idProperty": "email", "id": newcomer, "properties": {"email": newcomer}}]
    CrmHook().call("POST", "crm/v3/objects/contacts/batch/upsert", json={"inputs": inputs})
    known = _single_record_emails(world)[:3]
    assert snapshot_ids(contacts_snapshot_of(CONTACTS_DAG), [newcomer, *known]).keys() == set(known)
    context = _context()
    _write_desired(context, [*known, newcomer])
    world.clear_requests()
    done = _operator().execute(context)
    assert (done["written"], done["unknown_contacts"], done["sent_by_id"]) == (4, 0, 4)
    assert _paths(_reads(world)) == [SEARCH]  # modified since the snapshot: no read by email
    after = crm_records(world)
    assert [r["esp_opens_total"] for r in after.values() if r["email"] == newcomer] == ["7"]


def test_a_contact_deleted_since_the_snapshot_is_retried_by_email_not_lost(world):
    """A deleted id fails the by-id write; its email is read again: a record left is written,
    a person really gone is reported unknown; the batch's other contacts are written by id."""
    single, twice = _single_record_emails(world), sorted(duplicated_emails(world))
    gone, others = single[0], single[1:6]
    shared = twice[0]
    kept_id, deleted_id = _ids_of(world, shared)[:2]
    world.crm_gdpr_delete(_ids_of(world, gone)[0])
    world.crm_gdpr_delete(deleted_id)
    context = _context()
    _write_desired(context, [gone, shared, *others])
    done = _operator().execute(context)
    assert done["sent_by_id"] == 7 and done["ids_gone_since_snapshot"] == 2
    assert (done["written"], done["unknown_contacts"], done["rejected"]) == (6, 1, 0)
    assert "unknown_contact" in Run.from_context(context).area.read_text("load/rejected.csv")
    after = crm_records(world)
    assert after[kept_id]["esp_opens_total"] == "7" and deleted_id not in after
    assert all(after[i]["esp_opens_total"] == "7" for e in others for i in _ids_of(world, e))


def test_every_record_sharing_an_email_gets_the_values(world):
    twice = [sorted(duplicated_emails(world))[i] for i in (0, 2, 3)]
    assert all(len(_ids_of(world, e)) >= 2 for e in twice)
    known = snapshot_ids(contacts_snapshot_of(CONTACTS_DAG), twice)
    assert {e: sorted(ids) for e, ids in known.items()} == {e: _ids_of(world, e) for e in twice}
    context = _context()
    _write_desired(context, twice, opens=11)
    world.clear_requests()
    done = _operator().execute(context)
    assert (done["written"], done["unknown_contacts"], done["sent_by_id"]) == (3, 0, 3)
    assert _paths(_crm_calls(world)) == [SEARCH, UPDATE]  # every record in one update
    after = crm_records(world)
    assert all(after[i]["esp_opens_total"] == "11" for e in twice for i in _ids_of(world, e))


def test_an_email_with_a_quarantined_record_gets_every_records_values_by_id(world):
    """The snapshot lacks a record its gate quarantined (a bad birthday); the night's kept
    quarantine file has that record's id, so both records of the email are written by id, with
    no read by email."""
    shared = sorted(duplicated_emails(world))[1]
    ids = _ids_of(world, shared)
    in_snapshot = snapshot_ids(contacts_snapshot_of(CONTACTS_DAG), [shared])[shared]
    assert len(in_snapshot) == len(ids) - 1  # the quarantined record is not in the snapshot
    others = _single_record_emails(world)
    assert quarantined_ids(CONTACTS_DAG, [shared, *others]) == {shared: set(ids) - set(in_snapshot)}
    context = _context()
    _write_desired(context, [shared], opens=13)
    world.clear_requests()
    done = _operator().execute(context)
    assert (done["written"], done["sent_by_id"]) == (1, 1)
    assert _paths(_crm_calls(world)) == [SEARCH, UPDATE]
    after = crm_records(world)
    assert all(after[i]["esp_opens_total"] == "13" for i in ids)


def test_a_quarantined_row_without_a_usable_id_sends_its_email_by_email(world, tmp_path):
    """A row may be quarantined for its id (a control character, a blank): then which records
    the email has is not known from the files, and HubSpot's read by email says."""
    shared = sorted(duplicated_emails(world))[1]
    ids = _ids_of(world, shared)
    [kept] = (tmp_path / "staging" / QUARANTINE).rglob("contacts/quarantine.csv")
    rows = pd.read_csv(kept, dtype="string")
    rows.loc[rows["email"].str.strip().str.lower() == shared, "hs_object_id"] = "12x"
    rows.to_csv(kept, index=False)
    assert quarantined_ids(CONTACTS_DAG, [shared]) == {shared: None}
    context = _context()
    _write_desired(context, [shared], opens=17)
    world.clear_requests()
    done = _operator().execute(context)
    assert (done["written"], done["sent_by_id"]) == (1, 0)
    assert _reads(world)  # looked up by email: the search finds every record
    after = crm_records(world)
    assert all(after[i]["esp_opens_total"] == "17" for i in ids)


def test_an_email_whose_every_record_was_quarantined_is_written_by_id(world, tmp_path):
    """Its ids are in no snapshot, only in the kept quarantine file (one in 25 of the sandbox's
    records is quarantined: bad birthdays, amounts)."""
    [kept] = (tmp_path / "staging" / QUARANTINE).rglob("contacts/quarantine.csv")
    emails = pd.read_csv(kept, dtype="string")["email"].dropna().str.strip().str.lower()
    known = snapshot_ids(contacts_snapshot_of(CONTACTS_DAG), emails)
    only_quarantined = sorted(e for e in set(emails) - set(known) if len(_ids_of(world, e)) == 1)[:3]
    assert only_quarantined
    context = _context()
    _write_desired(context, only_quarantined, opens=19)
    world.clear_requests()
    done = _operator().execute(context)
    assert (done["written"], done["sent_by_id"]) == (len(only_quarantined),) * 2
    assert _paths(_reads(world)) == [SEARCH]
    after = crm_records(world)
    assert all(after[_ids_of(world, e)[0]]["esp_opens_total"] == "19" for e in only_quarantined)


def test_a_record_quarantined_twice_counts_under_the_email_of_its_latest_row(world, tmp_path):
    """Quarantine files are kept for days; a record whose email changed between two quarantined
    versions is no longer the old email's record: the old email's values must not reach it."""
    shared = sorted(duplicated_emails(world))[1]
    [kept] = (tmp_path / "staging" / QUARANTINE).rglob("contacts/quarantine.csv")
    rows = pd.read_csv(kept, dtype="string")
    mine = rows[rows["email"].str.strip().str.lower() == shared].assign(email="moved@example.com")
    later = tmp_path / "staging" / QUARANTINE / "20261120T000000__20261121T000000" / "quality" / "contacts"
    later.mkdir(parents=True)
    mine.to_csv(later / "quarantine.csv", index=False)
    [moved_id] = set(mine["hs_object_id"])
    assert quarantined_ids(CONTACTS_DAG, [shared, "moved@example.com"]) == {"moved@example.com": {moved_id}}


def _update(inputs: list[dict]) -> None:
    from mailsync.hooks.crm import CrmHook

    for start in range(0, len(inputs), 100):
        part = inputs[start : start + 100]
        CrmHook().call("POST", "crm/v3/objects/contacts/batch/update", json={"inputs": part})


def test_an_email_the_crm_lacks_costs_no_read_and_is_read_by_email_in_the_next_run(world):
    """Neither in the snapshot nor modified since it: reported unknown with no read by email, and
    kept pending; the next run reads it by email (a real check), finds it unknown again and drops
    it."""
    stranger = "never-in-the-crm@example.org"
    known = _single_record_emails(world)[:3]
    context = _context()
    _write_desired(context, [*known, stranger])
    world.clear_requests()
    done = _operator().execute(context)
    assert (done["written"], done["unknown_contacts"], done["unknown_without_read"]) == (3, 1, 1)
    assert _paths(_reads(world)) == [SEARCH]
    assert "unknown_contact" in Run.from_context(context).area.read_text("load/rejected.csv")
    current = Run.from_context(context).current
    assert pending_emails(current) == {stranger}
    following = _next_run()
    _write_desired(following, [stranger])  # the next run's transform touches the pending email
    world.clear_requests()
    again = _operator().execute(following)
    assert (again["written"], again["unknown_contacts"], again["unknown_without_read"]) == (0, 1, 0)
    assert _paths(_reads(world)) == [SEARCH, SEARCH, BATCH_READ]  # since the snapshot; by email
    assert pending_emails(current) == set()


def test_a_record_the_snapshot_lacks_for_good_is_written_in_the_next_run(world, tmp_path):
    """A record quarantined ever since it was created, whose quarantine file retention has
    removed, is in no snapshot and not modified since: the search cannot tell it from a stranger,
    so it is reported unknown once, and the next run's read by email finds and writes it."""
    [kept] = (tmp_path / "staging" / QUARANTINE).rglob("contacts/quarantine.csv")
    emails = pd.read_csv(kept, dtype="string")["email"].dropna().str.strip().str.lower()
    known = snapshot_ids(contacts_snapshot_of(CONTACTS_DAG), emails)
    [email] = sorted(e for e in set(emails) - set(known) if len(_ids_of(world, e)) == 1)[:1]
    kept.unlink()  # past include/retention.yaml's quarantine_days
    context = _context()
    _write_desired(context, [email], opens=31)
    first = _operator().execute(context)
    assert (first["written"], first["unknown_contacts"]) == (0, 1)
    following = _next_run()
    _write_desired(following, [email], opens=31)
    again = _operator().execute(following)
    assert (again["written"], again["unknown_contacts"]) == (1, 0)
    assert crm_records(world)[_ids_of(world, email)[0]]["esp_opens_total"] == "31"


def _next_run() -> dict:
    return operator_context("operator_test", "manual__ids_next", END, END + timedelta(days=1))


def test_a_record_whose_email_changed_since_the_snapshot_takes_its_new_emails_values(world):
    """Record B had email b at the snapshot and has email a now (a shares it with record A): a's
    values reach both A and B, b's values reach no record (b is unknown now), not B."""
    a, b = _single_record_emails(world)[7:9]
    [id_a], [id_b] = _ids_of(world, a), _ids_of(world, b)
    _update([{"id": id_b, "properties": {"email": a}}])
    context = _context()
    _write_desired(context, [a], opens=23)
    assert _operator().execute(context)["written"] == 1
    _write_desired(context, [b], opens=29)
    done = _operator().execute(context)
    assert (done["written"], done["unknown_contacts"]) == (0, 1)
    after = crm_records(world)
    assert (after[id_a]["esp_opens_total"], after[id_b]["esp_opens_total"]) == ("23", "23")


def test_after_a_busy_day_the_emails_the_snapshot_lacks_are_read_by_email(world):
    """More contacts modified since the snapshot than reading the missing emails would cost: the
    search stops after its first page and those emails are read by email (search, batch read)."""
    records = crm_records(world)
    busy = sorted(records)[:450]  # 3 search pages; one email's reads cost 2 calls
    _update([{"id": i, "properties": {"firstname": "Busy"}} for i in busy])
    stranger = "never-in-the-crm@example.org"
    context = _context()
    _write_desired(context, [stranger])
    world.clear_requests()
    done = _operator().execute(context)
    assert (done["unknown_contacts"], done["unknown_without_read"]) == (1, 0)
    assert _paths(_reads(world)) == [SEARCH, SEARCH, BATCH_READ]
