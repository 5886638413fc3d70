"""The nightly loyalty file as partners really send it, through whole contact-sync nights.

One full sync (night 1) sets the scene; every case then drops its file for the next day and runs
night 2 (incremental: the CRM is quiet, only tiers can change). The prescription per case:

- a usable file (any dialect the issue lists: CRLF or LF, `;` or `,`, cp1252 or UTF-8 with a
  BOM, header in upper case or another order): every member's tier as the file says; a row that
  is bad keeps the customer's last good tier; a customer no longer in the file loses the tier;
- a file that cannot be used (missing, half-written, truncated, empty, drifted schema): every
  tier as it was, the night still syncs, and the run summary says why the file was refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable

import pytest

from tests.integration.dags import dagrun
from tests.reliability.checker import Outcome, check_contacts, expected_contacts, members
from tests.reliability.conftest import run_dag

DAG = "crm_to_esp_contacts"
NIGHT1, NIGHT2 = "2026-11-20T02:00:00Z", "2026-11-21T02:00:00Z"
DAY = "2026-11-20"  # night 2's file: the day its data interval starts
QUICK = {"loyalty_wait_minutes": 0}
TIERS = {"B": "Bronze", "S": "Silver", "G": "Gold", "P": "Platinum"}
LOYALTY_AREA = "loyalty engineer (issue 19: file reader, dialects, completeness, visible refusal)"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scene(sandbox, connections, airflow_db, tmp_path_factory):
    """Night 1 synced; the module's cases share its staging and state (last known tiers)."""
    sandbox.reset(seed=42, contacts=1000, days=7)
    dagrun.isolate(tmp_path_factory.mktemp("loyalty-scene"))
    first = run_dag(DAG, NIGHT1, full_refresh=True, **QUICK)
    assert first.state == "success", first.failed_tasks
    yield sandbox
    sandbox.clear_faults()


def canonical(sb) -> bytes:
    sb.write_loyalty_file(day=DAY)
    return sb.loyalty_path(DAY).read_bytes()


def drop(sb, data: bytes, *, rows: int | None, marker: bool = True) -> None:
    """Put a file and (optionally) its done-marker where the partner puts them."""
    path = sb.loyalty_path(DAY)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = path.with_name(path.name + ".done")
    done.unlink(missing_ok=True)
    path.write_bytes(data)
    if marker:
        count = "" if rows is None else f"# rows: {rows}\n"
        done.write_text(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n{count}", encoding="ascii")


def rows_of(data: bytes) -> list[dict]:
    """The canonical file's rows (cp1252, `;`), the reference every dialect must read alike."""
    return list(csv.DictReader(io.StringIO(data.decode("cp1252"), newline=""), delimiter=";"))


def tiers_of(rows: list[dict]) -> dict[str, str]:
    return {
        r["customer_id"].strip().upper(): TIERS[r["tier_code"].strip().upper()]
        for r in rows
        if r["tier_code"].strip().upper() in TIERS
    }


def last_known(before: dict[str, dict]) -> dict[str, str]:
    """customer id -> tier the ESP holds now (what "last known" means for the next night)."""
    return {
        m["merge_fields"]["CLIENTID"][3:]: m["merge_fields"].get("TIER", "")
        for m in before.values()
        if m["merge_fields"].get("CLIENTID", "").startswith("CL-") and m["merge_fields"].get("TIER")
    }


def loyalty_verdict(report: dict | None) -> str:
    """What the run summary says about the file: 'accepted', or the refusal and its reason."""
    if not report:
        return "no report"
    for key in ("loyalty", "loyalty_status"):
        value = report.get(key)
        if isinstance(value, dict):
            return json.dumps(value, default=str)[:200]
        if isinstance(value, str):
            reason = report.get(f"{key}_reason")
            return f"{value}: {reason}"[:200] if reason else value[:200]
    if report.get("loyalty_file") and report.get("loyalty_rows"):
        return "accepted"
    return "(nothing said)"


def _refused(verdict: str) -> bool:
    return any(w in verdict.lower() for w in ("reject", "refus", "missing", "incomplete", "not usable"))


def utf8_bom(data: bytes) -> bytes:
    return b"\xef\xbb\xbf" + data.decode("cp1252").encode("utf-8")


def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def reordered_upper_header(data: bytes) -> bytes:
    rows = rows_of(data)
    order = ["NAME", "MEMBER_SINCE", "TIER_CODE", "CUSTOMER_ID", "POINTS"]
    lines = [";".join(order)] + [";".join(r[c.lower()] for c in order) for r in rows]
    return ("\r\n".join(lines) + "\r\n").encode("cp1252")


# case: (name, how the file is made, usable?, owner area if the current code is known to fail)
Maker = Callable[[object, bytes], None]


def _ours(transform) -> Maker:
    return lambda sb, data: drop(sb, transform(data), rows=len(rows_of(data)))


def _fault(name: str) -> Maker:
    return lambda sb, data: sb.write_loyalty_file(day=DAY, fault=name)


# `make test` runs one night per kind of outcome (the grouped dialect file, bad rows, a cut file
# with a matching marker, no file); `make soak` runs them all (marker `soak`).
FAST = {
    "other dialect: `,` + UTF-8 BOM + upper-case header",
    "malformed rows (short, extra column, bad number, undecodable bytes, bad tier, bad date)",
    "truncated after a whole row (marker for the cut file)",
    "file missing",
}
CASES = [
    ("CRLF line ends, cp1252 (as specified)", lambda sb, data: None, True),
    ("LF line ends", _ours(lf), True),
    ("UTF-8 with a BOM (other export tool)", _fault("utf8_bom"), True),
    ("UTF-8 with a BOM, written by us", _ours(utf8_bom), True),
    ("`,` delimiter", _fault("comma"), True),
    ("header in upper case", _fault("upper_header"), True),
    ("header in upper case and another column order", _ours(reordered_upper_header), True),
    ("other dialect: `,` + UTF-8 BOM + upper-case header", _fault("dialect"), True),
    (
        "malformed rows (short, extra column, bad number, undecodable bytes, bad tier, bad date)",
        _fault("malformed"),
        True,
    ),
    ("changed header (tier_code → tier, extra column)", _fault("schema_drift"), False),
    ("file missing", _fault("missing"), False),
    ("half-written (no done-marker yet)", _fault("half_written"), False),
    ("half-written (marker of the full file)", _fault("half_written_marker"), False),
    ("truncated after a whole row (marker for the cut file)", _fault("truncated"), False),
    ("truncated mid-row (old marker without row count)", _fault("truncated_mid_row"), False),
    ("empty file (0 bytes, marker says 0 rows)", lambda sb, data: drop(sb, b"", rows=0), False),
    ("header only", lambda sb, data: drop(sb, data.split(b"\r\n")[0] + b"\r\n", rows=0), False),
]


PARAMS = [pytest.param(*c, id=c[0][:40], marks=() if c[0] in FAST else pytest.mark.soak) for c in CASES]


@pytest.mark.parametrize(("case", "make", "usable"), PARAMS)
def test_loyalty_file(scene, case, make, usable, recorder, clock, capfd):
    sb = scene
    before = members(sb)
    clean = canonical(sb)
    good_rows = rows_of(clean)
    make(sb, clean)
    if usable:
        tiers = tiers_of(good_rows)
        if case.startswith("malformed"):  # a broken row keeps the customer's last good tier
            sent = sb.loyalty_path(DAY).read_bytes().split(b"\r\n")
            broken = {
                good_rows[i - 1]["customer_id"].strip().upper()
                for i, line in enumerate(clean.split(b"\r\n"))
                if 0 < i < len(sent) and line != sent[i]
            }
            known = last_known(before)
            tiers = {c: t for c, t in tiers.items() if c not in broken}
            tiers.update({c: known[c] for c in broken if c in known})
    else:
        tiers = last_known(before)
    expected = expected_contacts(sb, before, tiers)
    sb.clear_requests()
    night = run_dag(DAG, NIGHT2, capfd, **QUICK)
    verdict = loyalty_verdict(night.report)
    outcome = check_contacts(
        sb,
        Outcome(case=f"loyalty file: {case}", group="contacts night 2 after a full night 1"),
        before=before,
        expected=expected,
        requests=sb.requests(),
    )
    outcome.runs = 1
    outcome.inputs = f"{len(good_rows)} rows in the clean file; {'usable' if usable else 'unusable'}"
    tier_changes = sum(
        1
        for e, want in expected.items()
        if (before.get(e) or {}).get("merge_fields", {}).get("TIER", "") != want["merge_fields"]["TIER"]
    )
    outcome.details["tier_changes_expected"] = tier_changes
    outcome.outcome = f"night {night.state}; summary: {verdict}"
    visible = (not _refused(verdict)) if usable else _refused(verdict)
    outcome.passed = night.state == "success" and visible and not outcome.problems()
    recorder.record(outcome, clock)
    sb.write_loyalty_file(day=DAY)  # the next case starts from a clean drop
    assert night.state == "success", (night.failed_tasks, night.errors[-3:])
    assert not outcome.problems(), (outcome.problems(), outcome.examples)
    should = "nothing of a refusal" if usable else "why the file was refused"
    assert visible, f"the run summary must say {should}: {verdict}"
