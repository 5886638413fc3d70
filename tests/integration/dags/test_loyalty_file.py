"""The loyalty partner file through crm_to_esp_contacts: bad lines, other dialects, cut files.

A loyalty file that cannot be used never costs the night (the contacts sync goes on with the
last known tiers, the refusal is in the run summary and a WARNING); a quarantined row keeps
that customer's last good tier (the mapping's `on_invalid: keep_last`).
"""

from __future__ import annotations

import hashlib

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
