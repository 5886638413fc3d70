"""Retention's pieces without Airflow: folder names, the policy, matching and rewriting files, the ledger."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from mailsync.operators.retention import (
    Matcher,
    Scrubbed,
    interval_end,
    is_people_file,
    scrub_parquet,
    scrub_text,
)
from mailsync.settings import retention
from mailsync.state import Erasure, ErasureLedger, pseudonym

FS = LocalFileSystem()
GONE = Erasure(
    pseudonym("email", "Gone@Example.com "),
    pseudonym("customer_id", "c0001234"),
    pseudonym("crm_id", "77"),
    "request",
    datetime(2026, 11, 1, tzinfo=UTC),
    None,
)


def test_folder_names_give_the_interval_end_and_people_files_are_known():
    assert interval_end("20261119T020000__20261120T020000") == datetime(2026, 11, 20, 2, tzinfo=UTC)
    assert interval_end("not-a-run") is None and interval_end("20261119T020000") is None
    assert all(
        map(is_people_file, ["quarantine.csv", "rejected.csv", "rejected_orders.csv", "unparsed.parquet"])
    )
    assert not any(map(is_people_file, ["report.html", "part-00000.parquet", "revenue_by_campaign_day.csv"]))
    assert is_people_file("/extract/loyalty_bad_lines/lines.parquet") and not is_people_file(
        "/snapshots/lines.parquet"
    )


def test_the_policy_is_checked(tmp_path, monkeypatch):
    policy = tmp_path / "r.yaml"
    monkeypatch.setenv("MAILSYNC_RETENTION_FILE", str(policy))
    policy.write_text("run_days: 14\nquarantine_days: 7\nerasure_days: 30\n")
    assert retention().run_days == 14
    policy.write_text("run_days: 7\nquarantine_days: 14\nerasure_days: 30\n")
    with pytest.raises(ValueError, match="quarantine_days"):
        retention()
    policy.write_text("run_days: 0\nquarantine_days: 0\nerasure_days: 30\n")
    with pytest.raises(ValueError, match="at least 1 day"):
        retention()
    policy.write_text("run_days: 3\nquarantine_days: 1\nerasure_days: 30\nrun_dayz: 1\n")
    with pytest.raises(ValueError, match="unknown keys"):
        retention()


def test_the_shipped_policy_loads():
    policy = retention()
    assert 1 <= policy.quarantine_days <= policy.run_days and policy.erasure_days >= 1


def test_parquet_rows_of_the_person_go_by_email_customer_id_or_crm_id_and_the_rest_stays(tmp_path):
    path = str(tmp_path / "x.parquet")
    table = pa.table(
        {
            "email": [" GONE@example.com", "kept@example.com", "other@example.com", None],
            "customer_id": ["C0009999", "C0000001", "c0001234", "C0000002"],
            "hs_object_id": ["1", "2", "3", "77"],
            "points": [1, 2, 3, 4],
            "note": ["points 77", "C0001234 in a note is no customer id", "", "x"],
            "text": ["", "", "", ""],
        }
    )
    pq.write_table(table, path)
    tally = Scrubbed()
    removed = scrub_parquet(path, FS, Matcher.of([GONE]), tally)
    assert removed.num_rows == 3 and tally.rows_removed == 3
    left = pq.read_table(path)
    assert left.column("email").to_pylist() == ["kept@example.com"] and left.schema == table.schema
    assert scrub_parquet(path, FS, Matcher.of([GONE]), tally) is None  # nothing left: not rewritten


def test_csv_records_go_whatever_the_delimiter_and_encoding_and_other_text_is_masked(tmp_path):
    loyalty = tmp_path / "loyalty_tiers.csv"
    loyalty.write_bytes(
        "customer_id;tier_code;name\r\nC0001234;G;Jürgen Weg\r\nC0000001;S;Ånne Bleibt\r\n".encode("cp1252")
    )
    quarantine = tmp_path / "quarantine.csv"
    quarantine.write_text('row,reason,email,firstname\n3,bad,"gone@example.com",Jürgen\n4,bad,x@y.z,"A, B"\n')
    page = tmp_path / "report.html"
    page.write_text("<td>gone@example.com</td><td>kept@example.com</td>")
    tally = Scrubbed()
    for path in (loyalty, quarantine, page):
        scrub_text(str(path), FS, Matcher.of([GONE]), tally)
    assert loyalty.read_bytes().decode("cp1252") == "customer_id;tier_code;name\r\nC0000001;S;Ånne Bleibt\r\n"
    assert quarantine.read_text() == 'row,reason,email,firstname\n4,bad,x@y.z,"A, B"\n'
    assert page.read_text() == "<td>[erased]</td><td>kept@example.com</td>"
    assert tally.files_rewritten == 3 and tally.rows_removed == 3


def test_the_ledger_keeps_hashes_only_and_reopens_an_erasure_that_comes_back(tmp_path):
    ledger = ErasureLedger(url=f"sqlite:///{tmp_path / 'state.db'}")
    assert (
        ledger.record([{"email": " Jane@Example.com", "customer_id": "c1", "crm_id": 5}], source="request")
        == 1
    )
    (first,) = ledger.all()
    assert first.subject == pseudonym("email", "jane@example.com") and first.customer_hash == pseudonym(
        "customer_id", "C1"
    )
    dump = repr(ledger.engine.raw_connection().execute("SELECT * FROM mailsync_erasure").fetchall()).lower()
    assert "jane" not in dump and "c1'" not in dump
    ledger.record([{"email": "jane@example.com"}], source="crm_full_refresh")  # a retry: same deadline
    (again,) = ledger.all()
    assert again.recorded_at == first.recorded_at and again.customer_hash == first.customer_hash
    ledger.mark_applied([first.subject])
    assert ledger.all()[0].applied_at is not None
    ledger.record([{"email": "jane@example.com"}], source="crm_full_refresh")  # back, and gone again
    (reopened,) = ledger.all()
    assert reopened.applied_at is None and reopened.recorded_at > first.recorded_at


def test_free_text_cells_are_searched_for_emails_and_raw_partner_lines_for_customer_ids(tmp_path):
    path = str(tmp_path / "lines.parquet")
    pq.write_table(
        pa.table(
            {
                "line": [3, 4, 5],
                "reason": ["ESP said: gone@example.com is invalid", "bad", "bad"],
                "text": ["x", "c0001234;G;oops;Jürgen Weg", "C0000001;S;oops;Ånne Bleibt"],
            }
        ),
        path,
    )
    scrub_parquet(path, FS, Matcher.of([GONE]), Scrubbed())
    assert pq.read_table(path).column("line").to_pylist() == [5]


def test_a_full_refresh_records_who_left_the_crm_from_snapshots_of_many_row_groups(tmp_path):
    """The contacts commit's erasure check on snapshot files as a million contacts write them
    (several row groups: columns come back chunked). A contact that moved to another bucket
    (its email changed) or was archived is not erased; one whose email another record holds
    is not either; the others are, with their customer id unless another contact holds it."""
    import pandas as pd
    from airflow.sdk import ObjectStoragePath

    from mailsync.operators.retention import record_crm_erasures
    from mailsync.staging import Area

    root = Area(ObjectStoragePath(tmp_path.as_uri()))
    current, staged, run_area = root / "current", root / "staged", root / "run"

    def snapshot(area, bucket: int, rows: list[tuple[str, str, str]]) -> None:
        columns = zip(("__key", "customer_id", "hs_object_id"), zip(*rows, strict=True), strict=True)
        table = pa.table({name: pa.array(values, pa.string()) for name, values in columns})
        target = area.file(f"bucket={bucket:02d}.parquet")
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target.path, row_group_size=2)

    stay = [(f"p{i}@x.de", f"C{i}", str(100 + i)) for i in range(6)]
    left = [("moved@x.de", "C90", "90"), ("gone@x.de", "C91", "91"), ("arch@x.de", "C92", "92")]
    snapshot(current, 0, [*stay, *left])
    snapshot(current, 1, [("shared@x.de", "C93", "93"), ("erased@x.de", "C94", "94")])
    snapshot(staged, 0, stay)
    snapshot(staged, 1, [("new@x.de", "C90", "90"), ("shared@x.de", "C95", "95"), ("held@x.de", "C91", "96")])
    archived = pd.DataFrame({"id": pd.Series(["92"], dtype="string")})
    (run_area / "extract").write_parquet("archived.parquet", archived)

    run = type("Run", (), {"area": run_area, "run_id": "manual__erasure_test"})()
    assert record_crm_erasures(run, current, staged) == 2  # gone@ (C91 still held) and erased@
    mine = {e.subject: e for e in ErasureLedger().all()}
    assert set(mine) >= {pseudonym("email", "gone@x.de"), pseudonym("email", "erased@x.de")}
    assert mine[pseudonym("email", "gone@x.de")].customer_hash is None  # C91 is held by held@
    assert mine[pseudonym("email", "erased@x.de")].customer_hash == pseudonym("customer_id", "C94")
    assert not {pseudonym("email", e) for e in ("moved@x.de", "arch@x.de", "shared@x.de")} & set(mine)
