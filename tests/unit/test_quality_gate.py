"""The GX quality gate: bad rows quarantined with reasons, dataset checks fail the run."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd
import pytest

from mailsync.mapping.spec import load_mapping, parse_mapping
from mailsync.quality.gate import QualityGate, QualityGateFailed
from mailsync.staging import Area
from tests.unit.test_mapping_engine import contacts


@pytest.fixture
def area(tmp_path):
    from airflow.sdk import ObjectStoragePath

    return Area(ObjectStoragePath(tmp_path.as_uri()) / "quality")


def read_quarantine(summary) -> list[dict]:
    text = Path(summary.quarantine.removeprefix("file://")).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def test_bad_rows_are_quarantined_with_reasons_and_good_rows_go_on(area):
    m = load_mapping("crm_to_esp_contacts")
    good_emails = [f"p{i}@x.de" for i in range(60)]
    raw = contacts(
        email=[*good_emails, "bad@", None],
        date_of_birth=[None] * 60 + ["31.02.1990", "1990-01-01"],
        lifetime_value=["10"] * 60 + ["-5", "1"],
    )
    gate = QualityGate(m, "contacts", area, label="t")
    good = gate.validate(raw.iloc[:30], row_offset=0)
    good2 = gate.validate(raw.iloc[30:], row_offset=30)
    summary = gate.finish()
    assert len(good) + len(good2) == 60
    assert summary.rows_in == 62 and summary.rows_quarantined == 2 and summary.passed
    rows = read_quarantine(summary)
    assert [r["row"] for r in rows] == ["60", "61"]
    assert (
        rows[0]["reason"]
        == "invalid_email (email); unparseable_date (date_of_birth); negative_amount (lifetime_value)"
    )
    assert rows[1]["reason"] == "missing_email (email)"
    assert rows[0]["date_of_birth"] == "31.02.1990"  # the value as it came, for fixing at the source
    assert summary.to_xcom()["quarantine_reasons"]["negative_amount"] == 1
    html = Path(summary.report.removeprefix("file://")).read_text(encoding="utf-8")
    assert "invalid_email" in html and "quarantine.csv" in html


def test_too_many_bad_rows_fail_after_writing_the_report(area):
    m = load_mapping("crm_to_esp_contacts")
    raw = contacts(email=["ok@x.de", "a@", "b@", "c@"])
    gate = QualityGate(m, "contacts", area)
    gate.validate(raw, row_offset=0)
    with pytest.raises(QualityGateFailed, match=r"3 of 4 rows quarantined \(75.00%\) > 10.00%"):
        gate.finish()
    assert area.exists("report.html") and area.exists("quarantine.csv")
    assert len(read_quarantine(gate.summary)) == 3


def test_schema_drift_fails_naming_missing_and_new_columns(area):
    m = load_mapping("crm_to_esp_contacts")
    raw = pd.DataFrame(
        {
            "customer_id": ["C1"],
            "tier": ["G"],
            "points": ["1"],
            "member_since": ["01.01.2020"],
            "region": ["x"],
        }
    )
    gate = QualityGate(m, "loyalty", area)
    with pytest.raises(QualityGateFailed) as err:
        gate.validate(raw, row_offset=0)
    assert "required_columns: missing ['tier_code']; columns not in the mapping: ['region', 'tier']" in str(
        err.value
    )
    assert "expect_table_columns_to_match_set" in area.read_text("report.html")


def test_duplicate_share_and_null_share_are_dataset_checks(area):
    m = parse_mapping(
        """
name: t
sources:
  s:
    system: crm
    object: c
    key: {input: email}
    duplicates: {keep: first, max_share: 0.2}
    inputs: {email: {type: email}, name: {}}
    checks: {max_null_share: {name: 0.5}, bad_row_threshold: 1}
destination: {system: esp, object: m, key: e}
fields: {e: {from: email}}
"""
    )
    raw = pd.DataFrame({"email": ["a@x.de", "a@x.de", "a@x.de", "b@x.de"], "name": ["A", None, None, None]})
    gate = QualityGate(m, "s", area)
    gate.validate(raw, row_offset=0)
    with pytest.raises(QualityGateFailed) as err:
        gate.finish()
    failures = gate.summary.failures
    assert [f.split(":")[0] for f in failures] == ["duplicate_keys", "null_share_name"]
    assert failures[1] == "null_share_name: 3 of 4 unexpected (75.00%)"
    assert "duplicate_keys" in str(err.value)


def test_quarantine_file_defuses_formulas_and_report_escapes_html(area):
    m = load_mapping("crm_to_esp_contacts")
    raw = contacts(
        email=['=HYPERLINK("http://evil")', *[f"p{i}@x.de" for i in range(40)]],
        firstname=["<script>alert(1)</script>", *["A"] * 40],
    )
    gate = QualityGate(m, "contacts", area)
    gate.validate(raw, row_offset=0)
    summary = gate.finish()
    row = read_quarantine(summary)[0]
    assert row["email"].startswith("'=")
    assert "<script>" not in area.read_text("report.html")


def test_empty_incremental_extract_passes_when_the_mapping_allows_it(area):
    m = load_mapping("crm_to_esp_contacts")
    gate = QualityGate(m, "contacts", area)
    gate.validate(contacts(email=[]), row_offset=0)
    summary = gate.finish()
    assert summary.passed and summary.rows_in == 0
