"""crm_to_esp_contacts end to end with dag.test() against the sandbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from mailsync.settings import INCLUDE_DIR
from tests.integration.dags import dagrun
from tests.integration.dags.expected_contacts import countries, expected_members, loyalty_tiers

DAG = "crm_to_esp_contacts"
NIGHT1, NIGHT2, NIGHT3 = "2026-11-20T02:00:00Z", "2026-11-21T02:00:00Z", "2026-11-22T02:00:00Z"
QUICK = {"loyalty_wait_minutes": 0}
TAGS = ("FNAME", "LNAME", "BIRTHDAY", "CITY", "COUNTRY", "CLIENTID", "TIER", "LTV", "LASTORDER")

pytestmark = pytest.mark.slow


@pytest.fixture
def world(vendors, airflow_db, tmp_path):
    dagrun.isolate(tmp_path)
    return vendors


def esp_writes(sandbox) -> list[dict]:
    """Requests that change members: batch upserts, archives, deletions."""
    return [
        r
        for r in sandbox.requests("esp")
        if r["method"] in ("POST", "PUT", "PATCH", "DELETE") and "/lists/" in r["path"] and r["status"] < 300
    ]


def members_by_email(sandbox) -> dict[str, dict]:
    return {m["email_address"].strip().lower(): m for m in sandbox.esp_members()}


def test_full_sync_gives_what_the_mapping_prescribes_then_a_quiet_night_writes_nothing(world):
    before = members_by_email(world)
    tiers = loyalty_tiers(world.loyalty_path("2026-11-19").read_bytes())
    expected = expected_members(world.crm_contacts(), before, tiers, countries(INCLUDE_DIR))

    first = dagrun.run(DAG, NIGHT1, full_refresh=True, **QUICK)
    assert first.state == "success"
    after = members_by_email(world)
    wrong = []
    for email, want in expected.items():
        got = after.get(email)
        got_view = got and {
            "status": got["status"],
            "merge_fields": {t: got["merge_fields"].get(t, "") for t in TAGS},
            "language": got["language"],
        }
        if got_view != want:
            wrong.append((email, want, got_view))
    assert not wrong, f"{len(wrong)} of {len(expected)} members differ, e.g. {wrong[:2]}"
    # nobody the ESP had as unsubscribed or cleaned was subscribed, and nobody was rejected for trying
    for email, member in before.items():
        if member["status"] in ("unsubscribed", "cleaned"):
            assert after[email]["status"] == member["status"]
    report = dagrun.report(first)
    assert report["rejected"] == 0 and report["created"] + report["updated"] == len(expected)
    assert sum(tiers.get(m["merge_fields"]["CLIENTID"][3:], "") != "" for m in expected.values()) > 100

    world.clear_requests()
    second = dagrun.run(DAG, NIGHT2, **QUICK)
    assert second.state == "success"
    assert esp_writes(world) == []  # no CRM change: not a single write call
    quiet = dagrun.report(second)
    assert (
        quiet["mode"] == "incremental"
        and quiet["unchanged"] == len(expected)
        and quiet["esp_write_calls"] == 0
    )


def test_a_one_percent_night_writes_only_the_changed_contacts(world):
    assert dagrun.run(DAG, NIGHT1, full_refresh=True, **QUICK).state == "success"
    changed_ids = {str(i) for i in world.mutate_crm(fraction=0.01, seed=7, at="2026-11-20T03:00:00Z")}
    changed_emails = {
        c["properties"]["email"].strip().lower() for c in world.crm_contacts() if str(c["id"]) in changed_ids
    }
    world.clear_requests()
    night = dagrun.run(DAG, NIGHT2, **QUICK)
    assert night.state == "success"
    written = Counter(k for r in esp_writes(world) for k in r["record_keys"])
    assert set(written) <= changed_emails and len(written) >= 0.8 * len(changed_emails)
    assert max(written.values()) == 1
    report = dagrun.report(night)
    # the 15-minute overlap for HubSpot's index lag may bring a few more, merged without effect
    assert report["extracted"] >= len(changed_ids) and report["esp_write_calls"] <= report["partitions"]
    assert report["changed"] == len(written)


def test_result_does_not_depend_on_the_number_of_partitions(world):
    assert dagrun.run(DAG, NIGHT1, full_refresh=True, partitions=1, **QUICK).state == "success"
    one = members_by_email(world)
    world.reset(seed=42, contacts=1000, days=7)
    dagrun.isolate(Path(os.environ["MAILSYNC_STAGING_URL"].removeprefix("file://")).parent / "again")
    assert dagrun.run(DAG, NIGHT1, full_refresh=True, partitions=5, **QUICK).state == "success"
    five = members_by_email(world)
    strip = ("last_changed", "timestamp_opt", "timestamp_signup", "web_id")
    assert {e: {k: v for k, v in m.items() if k not in strip} for e, m in one.items()} == {
        e: {k: v for k, v in m.items() if k not in strip} for e, m in five.items()
    }


def test_deleted_and_erased_contacts_are_archived(world):
    assert dagrun.run(DAG, NIGHT1, full_refresh=True, **QUICK).state == "success"
    members = members_by_email(world)
    live = [c for c in world.crm_contacts() if members.get((c["properties"]["email"] or "").strip().lower())]
    by_email = Counter((c["properties"]["email"] or "").strip().lower() for c in world.crm_contacts())
    unique = [c for c in live if by_email[c["properties"]["email"].strip().lower()] == 1]
    archived, erased = unique[0], unique[1]
    world.set_clock("2026-11-20T05:00:00Z")
    world.crm_archive(archived["id"])
    world.crm_gdpr_delete(erased["id"])
    assert dagrun.run(DAG, NIGHT2, **QUICK).state == "success"  # the archive shows in the night's listing
    assert world.esp_member(archived["properties"]["email"].strip())["status"] == "archived"
    assert world.esp_member(erased["properties"]["email"].strip())["status"] != "archived"
    full = dagrun.run(DAG, NIGHT3, full_refresh=True, **QUICK)  # an erasure shows on a full pull
    assert full.state == "success"
    assert world.esp_member(erased["properties"]["email"].strip())["status"] == "archived"
    assert dagrun.report(full)["archived"] == 1


def test_a_full_refresh_never_archives_a_contact_whose_row_was_quarantined(world):
    from mailsync.hooks.crm import CrmHook

    assert dagrun.run(DAG, NIGHT1, full_refresh=True, **QUICK).state == "success"
    member = next(m for m in members_by_email(world).values() if m["status"] == "subscribed")
    contact = next(
        c
        for c in world.crm_contacts()
        if (c["properties"]["email"] or "").strip().lower() == member["email_address"].lower()
    )
    world.set_clock("2026-11-20T05:00:00Z")
    bad_birthday = {"inputs": [{"id": contact["id"], "properties": {"date_of_birth": "31.02.1990"}}]}
    CrmHook().call("POST", "crm/v3/objects/contacts/batch/update", json=bad_birthday, write=True)
    night = dagrun.run(DAG, NIGHT2, full_refresh=True, **QUICK)
    assert night.state == "success"
    report = dagrun.report(night)
    assert report["archived"] == 0 and report["quarantine_reasons"].get("unparseable_date", 0) >= 1
    assert world.esp_member(member["email_address"])["status"] == "subscribed"


def test_legacy_encoded_loyalty_file_is_read_right(world, tmp_path):
    run = dagrun.run(DAG, NIGHT1, full_refresh=True, **QUICK)
    from mailsync.staging import run_area

    staged = run_area(DAG, run.data_interval_start, run.data_interval_end) / "extract" / "loyalty"
    names = staged.read_parquet("part-00000.parquet")["name"].dropna().tolist()
    raw = world.loyalty_path("2026-11-19").read_bytes()
    assert names[:50] == [line.split(";")[4] for line in raw.decode("cp1252").splitlines()[1:51]]
    assert any(ch in "".join(names) for ch in "äöüéèñçøå")
    assert dagrun.report(run)["loyalty_rows"] == len(names)


def test_dry_run_reports_the_difference_and_writes_nothing(world):
    world.clear_requests()
    run = dagrun.run(DAG, NIGHT1, full_refresh=True, dry_run=True, **QUICK)
    assert run.state == "success" and esp_writes(world) == []
    report = dagrun.report(run)
    assert report["dry_run"] and report["would_send"] == report["new"] + report["changed"] > 500


KILL_SCRIPT = """
import sys
from mailsync.contacts.members import load
from mailsync.hooks.esp import EspHook
from mailsync.mapping.spec import load_mapping
from mailsync.operators.run import Run
import pendulum, json
start, end, params = pendulum.parse(sys.argv[1]), pendulum.parse(sys.argv[2]), json.loads(sys.argv[3])
run = Run("crm_to_esp_contacts", "kill-test", start, end, params)
m = load_mapping("crm_to_esp_contacts")
print(load(run, EspHook(), m, "crm_to_esp_contacts", json.loads(sys.argv[4]), partitions=1))
"""


def test_a_load_killed_midway_resumes_without_loss_or_duplicates(world, tmp_path, connections):
    """Kill -9 the load while batches are in flight; the rerun sends only what was not acknowledged."""
    run = dagrun.run(DAG, NIGHT1, full_refresh=True, dry_run=True, partitions=1, **QUICK)  # stage the diff
    from mailsync.state import SyncState

    diffed = {"partition": 0, "buckets": list(range(32))}
    args = [run.data_interval_start.isoformat(), run.data_interval_end.isoformat(), "{}", json.dumps(diffed)]
    world.set_faults("esp", latency_ms={"ms": 300, "method": "POST"})
    slow_esp = json.loads(json.dumps(connections["esp_default"]))
    slow_esp["extra"].update(batch_size=50, max_connections=2)  # ~19 batches, 2 in flight
    env = {
        **os.environ,
        "PYTHONPATH": f"{dagrun.PROJECT / 'plugins'}:{dagrun.PROJECT}",
        "AIRFLOW_CONN_ESP_DEFAULT": json.dumps(slow_esp),
    }
    worker = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, *args], env=env, start_new_session=True)
    state = SyncState(DAG)  # the default brand's state is named as its DAG
    deadline = time.monotonic() + 60
    while state.count() < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(worker.pid, signal.SIGKILL)  # the worker dies with batches in flight
    worker.wait()
    acked_before = state.count()
    assert 150 <= acked_before < 900
    world.clear_faults("esp")
    from mailsync.contacts.members import load
    from mailsync.hooks.esp import EspHook
    from mailsync.mapping.spec import load_mapping
    from mailsync.operators.run import Run

    resumed = load(
        Run(DAG, "resume", run.data_interval_start, run.data_interval_end, {}),
        EspHook(),
        load_mapping(DAG),
        DAG,
        diffed,
        partitions=1,
    )
    assert resumed["resumed_skip"] == acked_before
    written = Counter(k for r in esp_writes(world) for k in r["record_keys"])
    from mailsync.staging import run_area

    staged = run_area(DAG, run.data_interval_start, run.data_interval_end) / "diff" / "partition=000"
    desired = sum(len(f) for f in (staged / "upserts").iter_parquet())
    assert len(written) == desired == state.count()  # nothing lost
    twice = [k for k, n in written.items() if n > 1]
    assert len(twice) <= 100  # only the batches in flight when the worker died were sent again


def _snapshot_files() -> dict[str, bytes]:
    from mailsync.staging import state_area

    snapshot = state_area(DAG) / "snapshots" / "contacts"
    return {name: snapshot.file(name).read_bytes() for name in snapshot.names()}


def test_a_run_stopped_by_the_removal_guard_leaves_the_snapshot_as_it_was(world):
    from mailsync.hooks.crm import CrmHook

    assert dagrun.run(DAG, NIGHT1, full_refresh=True, **QUICK).state == "success"
    before, members_before = _snapshot_files(), members_by_email(world)
    world.set_clock("2026-11-20T05:00:00Z")
    gone = [{"id": str(c["id"])} for c in world.crm_contacts()[:200]]  # 20 % > max_removal_share
    for start in range(0, len(gone), 100):
        CrmHook().call(
            "POST",
            "crm/v3/objects/contacts/batch/archive",
            json={"inputs": gone[start : start + 100]},
            write=True,
        )
    assert dagrun.run(DAG, NIGHT2, **QUICK).state == "failed"  # check_removals: MassRemovalRefused
    assert _snapshot_files() == before  # nothing of the stopped run was committed
    assert members_by_email(world) == members_before
    allowed = dagrun.run(DAG, NIGHT2, allow_mass_removal=True, **QUICK)  # on-call confirms
    assert allowed.state == "success" and dagrun.report(allowed)["archived"] >= 150
    assert _snapshot_files() != before


def test_a_truncated_full_listing_fails_and_the_next_night_archives_nobody(world):
    assert dagrun.run(DAG, NIGHT1, full_refresh=True, **QUICK).state == "success"
    before, members_before = _snapshot_files(), members_by_email(world)
    # every try of the night gets a listing that stops after 3 of its 10 pages
    world.set_faults(
        "crm", truncate={"page": 3, "count": 100, "method": "GET", "path": "/crm/v3/objects/contacts"}
    )
    assert dagrun.run(DAG, NIGHT2, full_refresh=True, **QUICK).state == "failed"
    assert _snapshot_files() == before
    assert members_by_email(world) == members_before  # nobody archived
    world.clear_faults("crm")
    night = dagrun.run(DAG, NIGHT3, **QUICK)
    assert night.state == "success"
    assert dagrun.report(night)["archived"] == 0
    archived = [e for e, m in members_by_email(world).items() if m["status"] == "archived"]
    assert archived == [e for e, m in members_before.items() if m["status"] == "archived"]
