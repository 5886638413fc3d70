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


def _run(m, raw, area, chunk: int):
    gate = QualityGate(m, "contacts", area)
    goods = [gate.validate(raw.iloc[i : i + chunk], row_offset=i) for i in range(0, len(raw), chunk)]
    summary = gate.finish()
    checks = [(c.name, c.column, c.success, c.unexpected, c.examples) for c in summary.checks]
    return pd.concat(goods, ignore_index=True), read_quarantine(summary), checks


def test_gx_batches_give_the_same_quarantine_as_one_call(area, monkeypatch):
    """GX validates the rules' outcomes over several chunks at once (issue 22); how many rows go
    to each GX call changes nothing the gate decides."""
    import mailsync.quality.gate as gate_module

    m = load_mapping("crm_to_esp_contacts")
    raw = contacts(
        email=[f"p{i}@x.de" if i % 23 else "bad@" for i in range(100)],
        lifetime_value=["-1" if i % 37 == 0 else "5" for i in range(100)],
    )
    once = _run(m, raw, area, chunk=30)
    monkeypatch.setattr(gate_module, "GX_BATCH_ROWS", 25)  # a GX call before each chunk but the first
    batched = _run(m, raw, area, chunk=30)
    pd.testing.assert_frame_equal(once[0], batched[0])
    assert once[1:] == batched[1:]
    assert [r["reason"] for r in once[1]][:2] == [
        "invalid_email (email); negative_amount (lifetime_value)",
        "invalid_email (email)",
    ]


def test_a_rule_gx_disagrees_with_fails_the_run(area, monkeypatch):
    """GX's unexpected rows of every rule must be the rows quarantined for it; where they are not
    (here GX is handed an expectation that inverts the first rule), the check and the run fail."""
    import great_expectations.expectations as gxe

    m = load_mapping("crm_to_esp_contacts")
    gate = QualityGate(m, "contacts", area)
    suite = gate._row_suite()
    first = suite.expectations[0]
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeInSet(column=first.column, value_set=[False], meta=dict(first.meta))
    )
    suite.delete_expectation(first)
    gate.validate(contacts(email=[*(f"p{i}@x.de" for i in range(20)), "bad@"]), row_offset=0)
    with pytest.raises(QualityGateFailed) as err:
        gate.finish()
    assert gate.summary.failures == [
        "missing_email (email): GX found 21 unexpected rows, the rule quarantined 0"
    ]
    assert "GX found 21" in str(err.value)
