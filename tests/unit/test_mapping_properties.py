"""Properties of the mapping engine: chunking and ordering never change the result."""

from __future__ import annotations

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailsync.mapping import engine
from mailsync.mapping.spec import load_mapping
from tests.unit.test_mapping_engine import contacts

MAPPING = load_mapping("crm_to_esp_contacts")

emails = st.sampled_from(["a@x.de", " A@x.de", "b@y.com", "bad@", "c@z.org ", None, "ü@x.de"])
names = st.one_of(st.none(), st.text(alphabet="aZöé 王\u0308-", max_size=12))
dates = st.sampled_from(["1985-03-02", "02.03.1985", "03/02/1985", "31.02.1990", "", None, "garbage"])
consents = st.sampled_from(["true", "false", "TRUE", None, "maybe"])
amounts = st.sampled_from(["12.5", "-1", "abc", None, "1e3", "0"])
stamps = st.sampled_from(["2026-11-01T00:00:00Z", "2026-11-10T12:00:00.000Z", "2026-11-10T12:00:00.000Z"])

rows = st.lists(st.tuples(emails, names, dates, consents, amounts, stamps), min_size=0, max_size=25)


def frame(data) -> pd.DataFrame:
    cols = list(zip(*data, strict=True)) if data else [[]] * 6
    return contacts(
        email=list(cols[0]),
        firstname=list(cols[1]),
        date_of_birth=list(cols[2]),
        marketing_consent=list(cols[3]),
        lifetime_value=list(cols[4]),
        lastmodifieddate=list(cols[5]),
    )


def prepared_in_chunks(raw: pd.DataFrame, size: int) -> pd.DataFrame:
    parts = [
        engine.prepare(MAPPING, "contacts", raw.iloc[i : i + size], row_offset=i)
        for i in range(0, len(raw), size)
    ]
    return pd.concat(parts, ignore_index=True) if parts else engine.prepare(MAPPING, "contacts", raw)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows, st.integers(min_value=2, max_value=15))
def test_transform_of_whole_equals_concatenated_transforms_of_chunks(data, size):
    raw = frame(data)
    whole = engine.transform(MAPPING, engine.prepare(MAPPING, "contacts", raw))
    chunks = [
        engine.transform(MAPPING, engine.prepare(MAPPING, "contacts", raw.iloc[i : i + size], row_offset=i))
        for i in range(0, len(raw), size)
    ]
    joined = pd.concat(chunks, ignore_index=True) if chunks else whole
    pd.testing.assert_frame_equal(whole, joined, check_dtype=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows, st.integers(min_value=2, max_value=15), st.integers(min_value=1, max_value=8))
def test_dedup_per_key_bucket_equals_dedup_of_the_whole(data, size, buckets):
    prepared = prepared_in_chunks(frame(data), size)
    whole, _ = engine.deduplicate(MAPPING, "contacts", prepared)
    bucket = engine.bucket_of(prepared[engine.KEY], buckets)
    parts = [engine.deduplicate(MAPPING, "contacts", prepared[bucket == b])[0] for b in range(buckets)]
    by_parts = pd.concat(parts).sort_values(engine.ROW).reset_index(drop=True)
    pd.testing.assert_frame_equal(whole, by_parts, check_dtype=False)
    keys = whole[engine.KEY].dropna()
    assert keys.is_unique


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows)
def test_transform_is_idempotent_and_deterministic(data):
    raw = frame(data)
    first = engine.transform(MAPPING, engine.prepare(MAPPING, "contacts", raw))
    second = engine.transform(MAPPING, engine.prepare(MAPPING, "contacts", raw.copy()))
    pd.testing.assert_frame_equal(first, second)
