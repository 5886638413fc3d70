"""The upgrade from pandas' hashes (issue 20) sends nothing that did not change: a state written by
the code before it (buckets by `pd.util.hash_array`, prints by `pd.util.hash_pandas_object`) is
diffed against unchanged records with zero to send, and its prints are rewritten in place."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mailsync.mapping import engine
from mailsync.mapping.spec import load_mapping
from mailsync.operators import sync
from mailsync.settings import BUCKETS
from mailsync.state import SyncState
from tests.unit.test_mapping_engine import contacts

INTEGRATION = "crm_to_esp_contacts"


@pytest.fixture(scope="module")
def mapping():
    return load_mapping(INTEGRATION)


def desired_members(mapping, n: int = 200, **changes) -> pd.DataFrame:
    """Tonight's desired members, as the contacts transform gives them (with their bucket)."""
    raw = contacts(
        email=[f"user{i}@example.com" for i in range(n)],
        firstname=[f"Ann{i}" for i in range(n)],
        city=["Köln", "", None, "Wien"] * (n // 4),
        lifetime_value=["12.5", "0", None, "1e3"] * (n // 4),
        marketing_consent=["true", "false", None, "true"] * (n // 4),
        date_of_birth=["1985-03-02", None, "1990-12-31", None] * (n // 4),
    )
    for column, (row, value) in changes.items():
        raw.loc[row, column] = value
    members = engine.transform(mapping, engine.prepare(mapping, "contacts", raw))
    members[sync.BUCKET] = engine.bucket_of(members[engine.KEY], BUCKETS)
    return members


def state_before_issue_20(tmp_path, mapping, members: pd.DataFrame, suffix: str = "") -> SyncState:
    """The state the code before issue 20 left, made with its own functions."""
    state = SyncState(INTEGRATION, url=f"sqlite:///{tmp_path / 'state.db'}")
    prints = engine.legacy_pandas_fingerprint(members, list(mapping.fields)) + suffix
    buckets = pd.util.hash_array(members[engine.KEY].fillna("").astype(object).to_numpy()) % np.uint64(
        BUCKETS
    )
    state.acknowledge(
        [
            {"key": k, "bucket": int(b), "fingerprint": p, "status": "subscribed"}
            for k, b, p in zip(members[engine.KEY], buckets, prints, strict=True)
        ],
        run_id="scheduled__2026-11-19",
    )
    return state


def stored(state: SyncState) -> pd.Series:
    return state.load().set_index("key")["fingerprint"].sort_index()


def test_unchanged_records_send_nothing_and_their_prints_are_rewritten(tmp_path, mapping):
    members = desired_members(mapping)
    state = state_before_issue_20(tmp_path, mapping, members)
    assert not stored(state).str.startswith(engine.PRINT_PREFIX).any()
    # loaded by tonight's buckets, as the diff tasks do: every key is where the old code put it
    acked = state.load(sorted(set(members[sync.BUCKET])))
    assert len(acked) == len(members)
    upserts, removals, counts = sync.diff(members, acked, state)
    assert (len(upserts), len(removals)) == (0, 0)
    assert counts | {"reprinted": 0} == {
        "desired": 200,
        "new": 0,
        "changed": 0,
        "unchanged": 200,
        "to_remove": 0,
        "reprinted": 0,
    }
    assert counts["reprinted"] == 200
    after = stored(state)
    assert after.str.startswith(engine.PRINT_PREFIX).all()
    assert after.to_dict() == dict(zip(members[engine.KEY], members[engine.FINGERPRINT], strict=True))
    assert set(state.load()["status"]) == {"subscribed"}  # only the print changed
    # the next night is a plain one: the old path is idle
    _, _, again = sync.diff(members, state.load(), state)
    assert (again["unchanged"], again["reprinted"]) == (200, 0)


def test_a_changed_record_is_still_sent_and_keeps_its_old_print_until_acknowledged(tmp_path, mapping):
    state = state_before_issue_20(tmp_path, mapping, desired_members(mapping))
    tonight = desired_members(mapping, firstname=(7, "Annabel"), lifetime_value=(9, "12.51"))
    upserts, _, counts = sync.diff(tonight, state.load(), state)
    assert sorted(upserts[engine.KEY]) == ["user7@example.com", "user9@example.com"]
    assert set(upserts[sync.CHANGE]) == {"changed"}
    assert (counts["changed"], counts["unchanged"], counts["reprinted"]) == (2, 198, 198)
    after = stored(state)
    assert not after.str.startswith(engine.PRINT_PREFIX)[["user7@example.com", "user9@example.com"]].any()
    # and a load sends them (its resume check sees a print that is not theirs)
    meta = sync.ack_meta(upserts)
    sync.acknowledge(
        state, [{"key": k, "status": "subscribed"} for k in upserts[engine.KEY]], meta, "tonight"
    )
    assert stored(state).str.startswith(engine.PRINT_PREFIX).all()


def test_a_new_record_is_new(tmp_path, mapping):
    members = desired_members(mapping)
    state = state_before_issue_20(tmp_path, mapping, members.iloc[:150])
    upserts, _, counts = sync.diff(members, state.load(), state)
    assert (counts["new"], counts["reprinted"], len(upserts)) == (50, 150, 50)


def test_a_print_a_caller_extended_is_recognised_with_its_suffix(tmp_path, mapping):
    """Shop orders append their lines' digest to the engine's print, before and after."""
    members = desired_members(mapping, n=40)
    state = state_before_issue_20(tmp_path, mapping, members, suffix="0a1b2c3d")
    orders = members.assign(**{engine.FINGERPRINT: members[engine.FINGERPRINT] + "0a1b2c3d"})
    upserts, _, counts = sync.diff(orders, state.load(), state)
    assert (len(upserts), counts["reprinted"]) == (0, 40)
    assert stored(state).str.endswith("0a1b2c3d").all()
    changed_lines = members.assign(**{engine.FINGERPRINT: members[engine.FINGERPRINT] + "ffffffff"})
    state = state_before_issue_20(tmp_path / "again", mapping, members, suffix="0a1b2c3d")
    upserts, _, counts = sync.diff(changed_lines, state.load(), state)
    assert (len(upserts), counts["reprinted"]) == (40, 0)


def test_prints_of_their_own_are_compared_as_they_are(tmp_path, monkeypatch):
    """Products and segment tags never had an engine print: no second algorithm for them, and
    no pandas print of their columns either (a product's `id` and `doc` come before its key)."""
    (tmp_path / "s").mkdir()
    state = SyncState("shop_products", url=f"sqlite:///{tmp_path / 's' / 'state.db'}")
    state.acknowledge(
        [
            {"key": "p1", "bucket": 0, "fingerprint": "00aa11bb22cc33dd"},
            {"key": "p3", "bucket": 0, "fingerprint": "77"},
        ],
        "r",
    )
    products = pd.DataFrame(
        {
            "id": ["p1", "p2", "p3"],
            "doc": ["{}", "{}", '{"title": "new"}'],
            engine.KEY: ["p1", "p2", "p3"],
            engine.FINGERPRINT: ["00aa11bb22cc33dd", "99", "78"],
            sync.BUCKET: 0,
        }
    ).astype({engine.KEY: "string", engine.FINGERPRINT: "string"})
    hashed = []
    monkeypatch.setattr(sync, "legacy_pandas_fingerprint", lambda r, f: hashed.append(len(r)))
    upserts, _, counts = sync.diff(products, state.load([0]), state)
    assert upserts[engine.KEY].tolist() == ["p2", "p3"] and counts["reprinted"] == 0
    assert hashed == []


def test_a_print_acknowledged_meanwhile_is_not_overwritten(tmp_path, mapping):
    members = desired_members(mapping, n=8)
    state = state_before_issue_20(tmp_path, mapping, members)
    acked = state.load()
    key = members[engine.KEY][0]
    state.acknowledge([{"key": key, "bucket": 1, "fingerprint": "v2:0000000000000000"}], "another try")
    sync.diff(members, acked, state)  # the frame read before that acknowledgement
    after = stored(state)
    assert after[key] == "v2:0000000000000000"
    assert (after.drop(key) == members.set_index(engine.KEY)[engine.FINGERPRINT].drop(key)).all()


def test_a_state_frame_not_read_from_the_database_is_diffed_without_writing(mapping):
    members = desired_members(mapping, n=8)
    frame = pd.DataFrame(
        {
            "key": members[engine.KEY],
            "fingerprint": engine.legacy_pandas_fingerprint(members, list(mapping.fields)),
            "status": "subscribed",
            "bucket": members[sync.BUCKET],
        }
    )
    upserts, _, counts = sync.diff(members, frame, None)
    assert (len(upserts), counts["reprinted"]) == (0, 8)


def test_the_transform_computes_no_pandas_print(mapping):
    """The pandas print is the diff's, for the records whose stored print is one (issue 22: a
    second hash of every record was 11 % of transform + validate, for prints long rewritten)."""
    members = desired_members(mapping, n=8)
    assert engine.record_fields(members) == list(mapping.fields)
    assert set(members.columns) - set(mapping.fields) == {
        engine.KEY,
        engine.ROW,
        engine.FINGERPRINT,
        sync.BUCKET,
    }


def test_a_diff_against_current_prints_computes_no_pandas_print(tmp_path, mapping, monkeypatch):
    members = desired_members(mapping, n=40)
    state = SyncState(INTEGRATION, url=f"sqlite:///{tmp_path / 'state.db'}")
    meta = sync.ack_meta(members)
    sync.acknowledge(state, [{"key": k, "status": "subscribed"} for k in members[engine.KEY]], meta, "r")
    hashed = []
    real = sync.legacy_pandas_fingerprint
    monkeypatch.setattr(sync, "legacy_pandas_fingerprint", lambda r, f: hashed.append(len(r)) or real(r, f))
    tonight = desired_members(mapping, n=40, firstname=(3, "Annabel"))
    upserts, _, counts = sync.diff(tonight, state.load(), state)
    assert (upserts[engine.KEY].tolist(), counts["unchanged"], hashed) == (["user3@example.com"], 39, [])
    # a pandas-era print among them: that record alone is hashed by pandas
    state.acknowledge([{"key": "user5@example.com", "bucket": 0, "fingerprint": "0123456789abcdef"}], "old")
    sync.diff(tonight, state.load(), state)
    assert hashed == [1]


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(None, id="the contacts transform"),
        pytest.param(
            pd.DataFrame(
                {
                    "count": pd.Series([1, None, -3], dtype="Int64"),
                    "flag": pd.Series([True, None, False], dtype="boolean"),
                    "ratio": [0.5, np.nan, -0.0],
                    "at": pd.to_datetime(["2026-11-19T10:00:00Z", None, "1970-01-01T00:00:00Z"], utc=True),
                    "day": pd.Series(["2026-11-19", None, ""], dtype="string"),
                    engine.KEY: pd.Series(["a", "b", "c"], dtype="string"),
                    "lines": ["[]", "[1]", "[2]"],  # appended by a caller, after the key
                }
            ),
            id="every other dtype",
        ),
    ],
)
def test_records_read_back_from_parquet_keep_their_pandas_prints(tmp_path, mapping, frame):
    """The diff hashes the records it reads from the staging area, where the code before issue 20
    hashed them in the transform, before they were written: the same prints either way."""
    from airflow.sdk import ObjectStoragePath

    from mailsync.staging import Area

    records = desired_members(mapping) if frame is None else frame
    area = Area(ObjectStoragePath(tmp_path.as_uri()))
    area.write_parquet("records.parquet", records)
    back = area.read_parquet("records.parquet")
    fields = engine.record_fields(back)
    assert (
        fields
        == engine.record_fields(records)
        == (list(mapping.fields) if frame is None else ["count", "flag", "ratio", "at", "day"])
    )
    before = engine.legacy_pandas_fingerprint(records, fields)
    assert back[fields].dtypes.equals(records[fields].dtypes)
    assert engine.legacy_pandas_fingerprint(back, fields).tolist() == before.tolist()
    assert before.nunique() == len(records)
