"""The incremental night's merge of tonight's contact versions into a bucket's snapshot
(contacts.snapshot._merge): the newest version of each contact wins, whichever bucket holds it,
and a contact archived at or after its newest version leaves; instants compare in UTC whatever
unit the columns carry (the snapshot file holds microseconds, a parse nanoseconds)."""

from __future__ import annotations

import pandas as pd

from mailsync.contacts.snapshot import _merge


def versions(rows: list[tuple[str, str, str]], unit: str = "us") -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["hs_object_id", "lastmodifieddate", "email"])
    frame["lastmodifieddate"] = pd.to_datetime(frame["lastmodifieddate"], utc=True).astype(
        f"datetime64[{unit}, UTC]"
    )
    return frame.astype({"hs_object_id": "string", "email": "string"})


def archived(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["id", "archived_at"], dtype="string")


def test_the_newest_version_wins_and_archived_contacts_leave():
    current = versions(
        [
            ("1", "2026-11-01T10:00:00Z", "old@x.de"),  # changed tonight
            ("2", "2026-11-20T10:00:00Z", "kept@x.de"),  # an older version arrives (backfill)
            ("3", "2026-11-01T10:00:00Z", "moved@x.de"),  # tonight in another bucket
            ("4", "2026-11-01T10:00:00Z", "gone@x.de"),  # archived tonight
            ("5", "2026-11-19T10:00:00Z", "back@x.de"),  # archived, then edited again
            ("6", "2026-11-02T10:00:00Z", "same@x.de"),  # the same version again (a rerun)
        ]
    )
    delta = versions(
        [
            ("1", "2026-11-20T11:00:00+01:00", "new@x.de"),
            ("2", "2026-11-10T10:00:00Z", "older@x.de"),
            ("6", "2026-11-02T10:00:00Z", "same@x.de"),
        ],
        unit="ns",
    )
    other_buckets = versions([("3", "2026-11-20T09:00:00Z", "moved@y.de")], unit="ns")
    delta_ids = pd.concat([delta, other_buckets])[["hs_object_id", "lastmodifieddate"]]
    gone = archived([("4", "2026-11-20T12:00:00Z"), ("5", "2026-11-18T00:00:00.000Z")])
    merged = _merge(current, delta, delta_ids, gone)
    assert dict(zip(merged["hs_object_id"], merged["email"], strict=True)) == {
        "1": "new@x.de",
        "2": "kept@x.de",
        "5": "back@x.de",
        "6": "same@x.de",
    }


def test_an_archive_at_the_very_instant_of_the_version_removes_it():
    current = versions([("7", "2026-11-20T10:00:00.123456Z", "a@x.de")])
    empty = versions([], unit="ns")
    merged = _merge(
        current,
        empty,
        empty[["hs_object_id", "lastmodifieddate"]],
        archived([("7", "2026-11-20T10:00:00.123456Z")]),
    )
    assert merged.empty
