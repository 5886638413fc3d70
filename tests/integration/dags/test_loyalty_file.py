"""The loyalty partner file through crm_to_esp_contacts: bad lines, other dialects, cut files.

A loyalty file that cannot be used never costs the night (the contacts sync goes on with the
last known tiers, the refusal is in the run summary and a WARNING); a quarantined row keeps
that customer's last good tier (the mapping's `on_invalid: keep_last`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

DAG = "crm_to_esp_contacts"
NIGHT1, NIGHT2, NIGHT3 = "2026-11-20T02:00:00Z", "2026-11-21T02:00:00Z", "2026-11-22T02:00:00Z"
DAY1, DAY2, DAY3 = "2026-11-19", "2026-11-20", "2026-11-21"  # the file each night reads
QUICK = {"loyalty_wait_minutes": 0}


def _marker(sb, day: str) -> str:
    return sb.loyalty_path(day).with_name("loyalty_tiers.csv.done").read_text()


def test_sandbox_writes_cut_files_and_other_dialects(fresh_sandbox):
    sb = fresh_sandbox
    clean = sb.write_loyalty_file(DAY2)
    full = sb.loyalty_path(DAY2).read_bytes()
    assert _marker(sb, DAY2) == f"{clean['sha256']}  loyalty_tiers.csv\n# rows: {clean['rows']}\n"
    assert full.count(b"\r\n") == clean["rows"] + 1
    sb.write_loyalty_file(DAY2, fault="truncated")
    cut = sb.loyalty_path(DAY2).read_bytes()
    assert full.startswith(cut) and cut.endswith(b"\r\n") and cut.count(b"\r\n") < 0.6 * clean["rows"]
    assert (
        _marker(sb, DAY2)
        == f"{hashlib.sha256(cut).hexdigest()}  loyalty_tiers.csv\n# rows: {clean['rows']}\n"
    )
    sb.write_loyalty_file(DAY2, fault="truncated_mid_row")
    cut = sb.loyalty_path(DAY2).read_bytes()
    assert full.startswith(cut) and not cut.endswith(b"\n")
    assert _marker(sb, DAY2) == f"{hashlib.sha256(cut).hexdigest()}  loyalty_tiers.csv\n"
    sb.write_loyalty_file(DAY2, fault="dialect")
    other = sb.loyalty_path(DAY2).read_bytes()
    assert other.startswith(b"\xef\xbb\xbfCUSTOMER_ID,TIER_CODE,POINTS,MEMBER_SINCE,NAME\r\n")
    assert other[3:].decode("utf-8").replace(",", ";").lower() == full.decode("cp1252").lower()
    assert _marker(sb, DAY2).split()[0] == hashlib.sha256(other).hexdigest()


@pytest.fixture
def world(vendors, airflow_db, tmp_path):
    from tests.integration.dags import dagrun

    dagrun.isolate(tmp_path)
    return vendors


def _tiers_in_esp(sb) -> dict[str, str]:
    """CLIENTID -> TIER of every member the sync wrote (its client id set)."""
    return {
        m["merge_fields"]["CLIENTID"]: m["merge_fields"].get("TIER", "")
        for m in sb.esp_members()
        if (m["merge_fields"].get("CLIENTID") or "").startswith("CL-C")
    }


def _expected_tiers(sb, tiers: dict[str, str]) -> dict[str, str]:
    """What the mapping prescribes for every member with a client id, from a cid -> tier table."""
    from mailsync.settings import INCLUDE_DIR
    from tests.integration.dags.expected_contacts import countries, expected_members

    members = expected_members(sb.crm_contacts(), {}, tiers, countries(INCLUDE_DIR))
    return {
        m["merge_fields"]["CLIENTID"]: m["merge_fields"]["TIER"]
        for m in members.values()
        if m["merge_fields"]["CLIENTID"].startswith("CL-C")
    }


def _assert_tiers(sb, tiers: dict[str, str]) -> None:
    """Every member the sync wrote has the tier the mapping prescribes (others are left alone)."""
    expected, got = _expected_tiers(sb, tiers), _tiers_in_esp(sb)
    wrong = {k: (want, got.get(k)) for k, want in expected.items() if got.get(k) != want}
    assert not wrong and sum(t != "" for t in expected.values()) > 100, (
        f"{len(wrong)} differ: {list(wrong.items())[:3]}"
    )


def _rows(raw: bytes) -> list[str]:
    return raw.decode("cp1252", "replace").split("\r\n")[1:-1]


def _extract_loyalty(run, sensed: dict) -> dict:
    """The extract_loyalty step on the default connection and mapping."""
    from mailsync.contacts.loyalty import extract_loyalty
    from mailsync.hooks.sftp import LoyaltySftpHook
    from mailsync.mapping.spec import load_mapping

    return extract_loyalty(run, sensed, LoyaltySftpHook(), load_mapping("crm_to_esp_contacts"))


def test_a_file_in_another_dialect_is_read_as_the_partners_own(world):
    """UTF-8 with a BOM, `,`, the header in upper case: the mapping allows it, same rows."""
    import pendulum

    from mailsync.operators.run import Run

    run = Run(DAG, "manual__dialect", pendulum.parse(f"{DAY2}T02:00:00Z"), pendulum.parse(NIGHT2), {})
    staged = run.area / "extract" / "loyalty"
    world.write_loyalty_file(DAY2)
    own = _extract_loyalty(run, {"day": DAY2, "found": True})
    expected = staged.read_parquet("part-00000.parquet")
    world.write_loyalty_file(DAY2, fault="dialect")
    other = _extract_loyalty(run, {"day": DAY2, "found": True})
    got = staged.read_parquet("part-00000.parquet").rename(columns={"NAME": "name"})
    assert got.equals(expected)
    assert own["status"] == other["status"] == "loaded" and other["rows"] == own["rows"] > 300
    assert other["dialect"] == {
        "encoding": "utf-8",
        "delimiter": ",",
        "bom": "utf-8",
        "renamed": {n.upper(): n for n in ("customer_id", "tier_code", "points", "member_since")},
        "extra_columns": ["NAME"],
    }


def test_bad_lines_are_quarantined_and_keep_the_customers_last_tier(world):
    import csv

    from tests.integration.dags import dagrun
    from tests.integration.dags.expected_contacts import loyalty_tiers

    tiers1 = loyalty_tiers(world.loyalty_path(DAY1).read_bytes())
    assert dagrun.run(DAG, NIGHT1, full_refresh=True, **QUICK).state == "success"
    _assert_tiers(world, tiers1)

    world.write_loyalty_file(DAY2)
    clean2 = world.loyalty_path(DAY2).read_bytes()
    world.write_loyalty_file(DAY2, fault="malformed")  # every 40th row broken (a third unparseable)
    broken = world.loyalty_path(DAY2).read_bytes()
    changed = [
        (number, line.split(";")[0])
        for number, (line, other) in enumerate(zip(_rows(clean2), _rows(broken), strict=True), start=2)
        if line != other
    ]
    assert len(changed) >= 8
    second = dagrun.run(DAG, NIGHT2, **QUICK)
    assert second.state == "success"  # one malformed line no longer fails the night
    report = dagrun.report(second)
    assert report["loyalty"] == "loaded" and report["loyalty_reason"] is None
    assert report["quarantine_reasons"].keys() >= {"unparseable_line", "unknown_tier", "not_a_number"}
    # every bad line is quarantined with its line number in the file and a reason
    with Path(report["loyalty_quarantine_file"].removeprefix("file://")).open(encoding="utf-8") as f:
        quarantined = list(csv.DictReader(f))
    lines = {
        int(q["row"]) if q["reason"].startswith("unparseable_line") else int(q["file_line"])
        for q in quarantined
    }
    assert lines == {number for number, _ in changed} and all(q["reason"] for q in quarantined)
    # a quarantined row keeps that customer's last tier; everybody else gets tonight's
    bad = {cid for _, cid in changed}
    tiers2 = {cid: tier for cid, tier in loyalty_tiers(clean2).items() if cid not in bad}
    tiers2.update({cid: tiers1[cid] for cid in bad if cid in tiers1})
    _assert_tiers(world, tiers2)
    assert report["loyalty_kept_last"] == sum(cid in tiers1 for cid in bad) > 0


def test_a_cut_file_or_a_changed_header_is_refused_and_the_night_goes_on(world):
    from mailsync.hooks.crm import CrmHook
    from tests.integration.dags import dagrun

    assert dagrun.run(DAG, NIGHT1, full_refresh=True, **QUICK).state == "success"
    tiers_before = _tiers_in_esp(world)
    assert sum(t != "" for t in tiers_before.values()) > 100
    contact = next(
        c for c in world.crm_contacts() if (c["properties"].get("customer_id") or "").startswith("C")
    )
    world.set_clock("2026-11-20T05:00:00Z")
    moved = {"inputs": [{"id": contact["id"], "properties": {"city": "Neustadt an der Weinstraße"}}]}
    CrmHook().call("POST", "crm/v3/objects/contacts/batch/update", json=moved, write=True)

    world.write_loyalty_file(DAY2, fault="truncated")  # cut after a whole row; marker for the cut file
    night = dagrun.run(DAG, NIGHT2, **QUICK)
    assert night.state == "success"
    assert _tiers_in_esp(world) == tiers_before  # nobody's tier blanked
    report = dagrun.report(night)
    assert report["loyalty"] == "rejected" and report["loyalty_rows"] == 0
    assert report["loyalty_reason"].startswith("completeness: the done-marker declares")
    email = contact["properties"]["email"].strip()
    assert world.esp_member(email)["merge_fields"]["CITY"] == "Neustadt an der Weinstraße"  # the sync went on

    world.write_loyalty_file(DAY3, fault="schema_drift")  # tier_code renamed tier, a column added
    night = dagrun.run(DAG, NIGHT3, **QUICK)
    assert night.state == "success"
    report = dagrun.report(night)
    assert report["loyalty"] == "rejected"
    assert report["loyalty_reason"].startswith("header: missing column(s) ['tier_code']")
    assert _tiers_in_esp(world) == tiers_before


def test_a_refusal_is_one_warning_line_and_fails_a_run_that_requires_the_file(world, caplog):
    import logging

    import pendulum

    from mailsync.contacts.loyalty import LoyaltyFileRejected
    from mailsync.operators.run import Run

    world.write_loyalty_file(DAY2, fault="truncated_mid_row")  # an older marker: no row count
    start, end = pendulum.parse(f"{DAY2}T02:00:00Z"), pendulum.parse(NIGHT2)
    with caplog.at_level(logging.WARNING, logger="mailsync.contacts.loyalty"):
        run = Run(DAG, "manual__1", start, end, {})
        result = _extract_loyalty(run, {"day": DAY2, "found": True})
    assert not (run.area / "extract" / "loyalty").exists("part-00000.parquet")  # nothing of it staged
    assert result["status"] == "rejected" and result["rows"] == 0
    assert result["reason"].startswith("completeness: the file does not end with a line break")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"Loyalty file rejected ({DAY2}): {result['reason']}. The sync goes on with the last known tiers."
    ]
    rows = [line.split(";") for line in _rows(world.loyalty_path(DAY2).read_bytes())[:-1]]
    personal = {f for r in rows for f in (r[0], r[-1]) if len(f) >= 4}  # customer ids and names
    assert not any(p in warnings[0] for p in personal)
    with pytest.raises(LoyaltyFileRejected, match="completeness"):
        _extract_loyalty(
            Run(DAG, "manual__2", start, end, {"loyalty_required": True}), {"day": DAY2, "found": True}
        )
