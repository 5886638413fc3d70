"""Key buckets and record prints are persisted (sync state, the contacts snapshot's bucket files):
they must be the same in every process, for every dtype that holds equal values, and in every
library version. Golden values catch any change of either hash."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from mailsync.mapping import engine

KEYS = ["jane@example.com", "", "ÄÖÜ@straße.de", "a" * 40, "CL-00012345"]


def records() -> pd.DataFrame:
    """Three destination records with the dtypes the engine gives fields, and missing values."""
    return pd.DataFrame(
        {
            "email_address": pd.Series(
                ["jane@example.com", "bob@example.com", "zoë@example.com"], dtype="string"
            ),
            "merge_fields.FNAME": pd.Series(["Jane", "", None], dtype="string"),
            "merge_fields.LTV": pd.Series([1234.5, 0.0, None], dtype="Float64"),
            "merge_fields.ORDERS": pd.Series([3, None, 0], dtype="Int64"),
            "vip": pd.Series([True, False, None], dtype="boolean"),
            "seen": pd.to_datetime(
                pd.Series(["2026-11-19T10:00:00Z", None, "1999-12-31T23:59:59.5Z"]),
                utc=True,
                format="ISO8601",
            ),
        }
    )


def prints(frame: pd.DataFrame) -> list[str]:
    return engine.fingerprint(frame, list(frame.columns)).tolist()


# -- golden values: a change here re-buckets every key or re-sends every record ------------------
def test_key_hash_and_buckets_are_pinned():
    keys = pd.Series(KEYS, dtype="string")
    assert engine.key_hash(keys).tolist() == [
        6079336512324027809,
        1760245841805064774,
        4842429745934217721,
        12515515532949263426,
        15606280038681287158,
    ]
    assert engine.bucket_of(keys, 32).tolist() == [1, 6, 25, 2, 22]


def test_prints_are_pinned():
    assert prints(records()) == ["v2:50f96ef94df56542", "v2:d945b4e87a73648d", "v2:c834f1322ba648dc"]


def test_the_pandas_print_kept_for_the_upgrade_is_pinned():
    """What the code before issue 20 stored (pandas 3.1.1): the diff recognises unchanged records by it."""
    frame = records()
    old = engine.legacy_pandas_fingerprint(frame, list(frame.columns)).tolist()
    assert old == ["bee495407dcafcf2", "0739b198f73ff033", "7313b515f18b716a"]


# -- no pandas hash involved ------------------------------------------------------------------------
def test_buckets_and_prints_do_not_use_pandas_hashes(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("pandas' hash is not stable across versions")

    monkeypatch.setattr(pd.util, "hash_array", refuse)
    monkeypatch.setattr(pd.util, "hash_pandas_object", refuse)
    assert engine.bucket_of(pd.Series(KEYS, dtype="string"), 32).tolist() == [1, 6, 25, 2, 22]
    assert prints(records())[0] == "v2:50f96ef94df56542"


@pytest.mark.skipif(pd.__version__ != "3.1.1", reason="the buckets stored so far were made by pandas 3.1.1")
def test_key_hash_is_bit_for_bit_what_pandas_gave_so_no_stored_bucket_moves():
    rng = np.random.default_rng(7)
    alphabet = [*"abcxyz0123456789@._-+ ", "é", "ß", "漢", "😀", "\x00"]
    keys = ["".join(rng.choice(alphabet, size=n)) for n in rng.integers(0, 70, 20_000)]
    keys += ["k" * n for n in range(0, 330)]  # every length class, up to the state's 320 characters
    series = pd.Series([*keys, None], dtype="string")
    by_pandas = pd.util.hash_array(series.fillna("").astype(object).to_numpy())  # bucket_of until issue 20
    assert (engine.key_hash(series) == by_pandas).all()
    assert (engine.bucket_of(series, 32).to_numpy() == (by_pandas % np.uint64(32)).astype("int64")).all()


# -- the same everywhere ----------------------------------------------------------------------------
PROBE = """
import json, sys
import pandas as pd
from mailsync.mapping import engine
from tests.unit.test_stable_hashes import KEYS, records
frame = records()
print(json.dumps([engine.bucket_of(pd.Series(KEYS), 32).tolist(),
                  engine.fingerprint(frame, list(frame.columns)).tolist()]))
"""


def test_two_processes_with_different_hash_seeds_agree():
    here = [engine.bucket_of(pd.Series(KEYS), 32).tolist(), prints(records())]
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
        )
        assert json.loads(out.stdout) == here


@pytest.mark.parametrize("dtype", ["object", "str", "string[python]", "string[pyarrow]"])
def test_text_keys_hash_alike_in_every_string_dtype(dtype):
    keys = pd.Series([*KEYS, None])
    assert (
        engine.bucket_of(keys.astype(dtype), 32).tolist()
        == engine.bucket_of(keys.astype("string"), 32).tolist()
    )


def test_equal_values_in_other_dtypes_give_equal_prints():
    frame = records()
    other = pd.DataFrame(
        {
            "email_address": frame["email_address"].astype(object),
            "merge_fields.FNAME": frame["merge_fields.FNAME"].astype("string[pyarrow]"),
            "merge_fields.LTV": frame["merge_fields.LTV"].astype("float64"),  # NA becomes NaN
            "merge_fields.ORDERS": pd.Series([3.0, np.nan, 0.0]),  # whole floats are the same numbers
            "vip": pd.Series([True, False, None], dtype=object),
            "seen": frame["seen"].dt.tz_convert("Europe/Berlin").astype("datetime64[ns, Europe/Berlin]"),
        }
    )
    assert prints(other) == prints(frame)
    int64 = pd.DataFrame({"n": pd.Series([1, 2, 3], dtype="int64")})
    assert prints(int64) == prints(int64.astype("Int64")) == prints(int64.astype("int32"))
    assert prints(int64) == prints(pd.DataFrame({"n": [1, 2, 3]}, dtype=object))
    moments = pd.DataFrame(
        {"d": pd.to_datetime(pd.Series(["2026-11-19", "1960-01-01 00:00:00.25"]), format="ISO8601")}
    )
    assert prints(moments.astype("datetime64[ms]")) == prints(moments.astype("datetime64[ns]"))
    as_python = pd.DataFrame(
        {"d": [datetime.datetime(2026, 11, 19), datetime.datetime(1960, 1, 1, 0, 0, 0, 250_000)]}
    )
    assert prints(as_python.astype(object)) == prints(moments)
    assert prints(pd.DataFrame({"x": [Decimal("2.5"), Decimal("3")]}, dtype=object)) == prints(
        pd.DataFrame({"x": [2.5, 3.0]})
    )


def test_different_values_give_different_prints():
    def one(**columns) -> str:
        return prints(pd.DataFrame({k: pd.Series([v], dtype=object) for k, v in columns.items()}))[0]

    missing = one(a=None)
    assert one(a=np.nan) == one(a=pd.NA) == missing  # missing is missing, however pandas holds it
    distinct = {
        missing,
        one(a=""),
        one(a="0"),
        one(a=0),
        one(a=False),
        one(a=True),
        one(a=1),
        one(a=1.5),
        one(a="1.5"),
        one(a=datetime.date(2026, 11, 19)),
        one(a=datetime.datetime(2026, 11, 19)),
        one(a=datetime.datetime(2026, 11, 19, tzinfo=datetime.UTC)),
        one(b=""),  # a renamed field is a change
    }
    assert len(distinct) == 13
    assert one(a=-0.0) == one(a=0) and one(a=float("inf")) != one(a=float("-inf"))
    # text carries its length: no value can pass for two, wherever the separators fall
    assert one(a="x\x1fs1:y", b=None) != one(a="x", b="y")
    assert one(a="ab", b="") != one(a="a", b="b")
    # the order of the fields does not matter, their names do
    frame = records()
    assert prints(frame[list(reversed(frame.columns))]) == prints(frame)
    assert prints(frame.rename(columns={"vip": "vip2"})) != prints(frame)


def test_a_changed_field_changes_only_that_record():
    frame = records()
    changed = frame.copy()
    changed.loc[1, "merge_fields.LTV"] = 0.01
    assert [a == b for a, b in zip(prints(frame), prints(changed), strict=True)] == [True, False, True]


def test_a_value_the_print_cannot_describe_is_refused():
    with pytest.raises(TypeError, match="cannot fingerprint a value of type list"):
        prints(pd.DataFrame({"a": pd.Series([[1, 2]], dtype=object)}))
