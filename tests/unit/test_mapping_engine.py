"""The mapping engine on tricky data: each case gives the expected value or a clear error."""

from __future__ import annotations

import pandas as pd
import pytest

from mailsync.files import read_partner_file
from mailsync.mapping import engine
from mailsync.mapping.spec import load_mapping, parse_mapping

CONTACT_COLUMNS = [
    "email",
    "hs_object_id",
    "firstname",
    "lastname",
    "date_of_birth",
    "city",
    "country",
    "hs_language",
    "customer_id",
    "marketing_consent",
    "lifetime_value",
    "last_order_date",
    "lastmodifieddate",
]


def contacts(**columns) -> pd.DataFrame:
    """A CRM extract with every column the mapping needs; unspecified columns are empty."""
    n = len(next(iter(columns.values())))
    base = {c: [None] * n for c in CONTACT_COLUMNS}
    base["hs_object_id"] = [str(i) for i in range(1, n + 1)]
    base["lastmodifieddate"] = ["2026-11-19T10:00:00.000Z"] * n
    base["firstname"], base["lastname"] = ["Ann"] * n, ["Lee"] * n
    base.update(columns)
    return pd.DataFrame(base, dtype="string")


@pytest.fixture(scope="module")
def mapping():
    return load_mapping("crm_to_esp_contacts")


def test_mixed_date_formats_parse_to_one_date(mapping):
    raw = contacts(
        email=["a@x.de"] * 6,
        date_of_birth=["1985-03-02", "02.03.1985", "03/02/1985", "31.02.1990", "unknown", "  "],
    )
    p = engine.prepare(mapping, "contacts", raw)
    expected = [pd.Timestamp("1985-03-02")] * 3
    assert list(p["date_of_birth"][:3]) == expected
    # impossible and garbage dates are null and flagged as not parsed (the gate quarantines them) ...
    assert p["date_of_birth"][3:5].isna().all()
    assert list(p[engine.parsed_column("date_of_birth")]) == [True, True, True, False, False, True]
    # ... a blank value is simply missing
    out = engine.transform(mapping, p)
    assert list(out["merge_fields.BIRTHDAY"][:3]) == ["03/02"] * 3


def test_padded_and_mixed_case_emails_normalise_to_one_key(mapping):
    raw = contacts(email=["  Jane.Doe@Example.COM ", "jane.doe@example.com", "JANE.DOE@EXAMPLE.COM\t"])
    p = engine.prepare(mapping, "contacts", raw)
    assert set(p[engine.KEY]) == {"jane.doe@example.com"}


def test_non_ascii_names_survive_and_are_nfc_normalised(mapping):
    decomposed = "Zoe\u0308"  # e + combining diaeresis
    raw = contacts(
        email=["a@x.de", "b@x.de", "c@x.de"], firstname=[decomposed, "  Łukasz   Ćwik ", "王 小明"]
    )
    out = engine.transform(mapping, engine.prepare(mapping, "contacts", raw))
    assert list(out["merge_fields.FNAME"]) == ["Zoë", "Łukasz Ćwik", "王 小明"]
    assert out["merge_fields.FNAME"][0] == "\u005a\u006f\u00eb"  # one code point for ë


def test_legacy_encoding_file_reads_right_and_reports_bad_lines():
    text = "customer_id;tier_code;points;member_since;name\r\nC0000001;G;120;02.03.2019;Zoë Müller\r\n"
    text += "C0000002;S;15\r\nC0000003;B;3;01.01.2020;José Núñez\r\n"
    columns = ["customer_id", "tier_code", "points", "member_since", "name"]
    read = read_partner_file(
        text.encode("cp1252") + b"C\x814;P;1;01.01.2020;X\r\n",
        columns=columns,
        encodings=["cp1252"],
        delimiters=[";"],
    )
    frame, bad = read.frame, read.bad
    assert list(frame["name"]) == ["Zoë Müller", "José Núñez"]
    assert [(b.line, b.reason) for b in bad] == [
        (3, "expected 5 fields, found 3"),
        (5, "not valid cp1252: byte 0x81"),
    ]
    # the same bytes declared as UTF-8 are not guessed into shape: the lines are reported
    bad_utf8 = read_partner_file(
        text.encode("cp1252"), columns=columns, encodings=["utf-8"], delimiters=[";"]
    ).bad
    assert [(b.line, b.reason[:19]) for b in bad_utf8] == [
        (2, "not valid utf-8: by"),
        (3, "expected 5 fields, "),
        (4, "not valid utf-8: by"),
    ]


def test_duplicates_keep_the_latest_and_ties_keep_extract_order(mapping):
    raw = contacts(
        email=["dup@x.de", " DUP@x.de", "dup@x.de ", "solo@x.de"],
        firstname=["old", "newest", "newest-tie", "solo"],
        lastmodifieddate=[
            "2026-11-01T00:00:00Z",
            "2026-11-10T00:00:00Z",
            "2026-11-10T00:00:00Z",
            "2026-11-05T00:00:00Z",
        ],
    )
    kept, dropped = engine.deduplicate(mapping, "contacts", engine.prepare(mapping, "contacts", raw))
    assert list(kept["firstname"]) == ["newest", "solo"]
    assert sorted(dropped["firstname"]) == ["newest-tie", "old"]


def test_missing_column_is_a_schema_error_naming_it_and_the_stranger(mapping):
    raw = contacts(email=["a@x.de"]).rename(columns={"marketing_consent": "consent"})
    with pytest.raises(engine.SchemaError) as err:
        engine.prepare(mapping, "contacts", raw)
    assert "lacks column(s) ['marketing_consent']" in str(err.value)
    assert "columns not in the mapping: ['consent'] (renamed?)" in str(err.value)


def test_consent_maps_to_status_and_never_to_subscribed_for_existing(mapping):
    raw = contacts(email=["y@x.de", "n@x.de", "u@x.de"], marketing_consent=["true", "FALSE", None])
    out = engine.transform(mapping, engine.prepare(mapping, "contacts", raw))
    assert list(out["status_if_new"]) == ["subscribed", "unsubscribed", "unsubscribed"]
    # `status` applies to existing members: only ever "unsubscribed" (narrowing), else omitted
    assert out["status"].isna().tolist() == [True, False, True]
    assert out["status"][1] == "unsubscribed"


def test_lookups_templates_rounding_and_join(mapping):
    raw = contacts(
        email=["a@x.de", "b@x.de", "c@x.de"],
        country=["germany ", "FR", "Atlantis"],
        hs_language=["de-DE", "en", None],
        customer_id=["c0000001", "C0000002", None],
        lifetime_value=["10.256", "7", None],
    )
    loyalty = engine.prepare(
        mapping,
        "loyalty",
        pd.DataFrame(
            {"customer_id": ["C0000001"], "tier_code": ["g"], "points": ["5"], "member_since": ["01.02.2020"]}
        ),
    )
    out = engine.transform(mapping, engine.prepare(mapping, "contacts", raw), {"loyalty": loyalty})
    assert list(out["merge_fields.COUNTRY"].fillna("")) == ["DE", "FR", ""]
    assert list(out["language"].fillna("")) == ["de", "en", ""]
    assert list(out["merge_fields.CLIENTID"].fillna("")) == ["CL-C0000001", "CL-C0000002", ""]
    assert list(out["merge_fields.TIER"].fillna("")) == ["Gold", "", ""]
    assert out["merge_fields.LTV"].tolist()[:2] == [10.26, 7.0]
    assert out["merge_fields.LTV"].isna().tolist() == [False, False, True]


def test_computed_fields_defaults_and_length_limits():
    m = parse_mapping(
        """
name: orders
sources:
  lines:
    system: shop
    object: line_items
    key: {input: id}
    inputs:
      id: {}
      quantity: {type: integer}
      price: {type: decimal}
      title: {}
destination: {system: esp, object: orders, key: id}
fields:
  id: {from: id}
  total: {expr: "quantity * price", round: 2, type: number}
  title: {from: title, max_length: 5, default: "n/a", case: upper}
"""
    )
    raw = pd.DataFrame(
        {"id": ["1", "2"], "quantity": ["3", "2"], "price": ["9.99", "0.5"], "title": ["shirt-long", None]}
    )
    out = engine.transform(m, engine.prepare(m, "lines", raw))
    assert out["total"].tolist() == [29.97, 1.0]
    assert out["title"].tolist() == ["SHIRT", "n/a"]


def test_fingerprint_changes_only_when_a_field_changes(mapping):
    raw = contacts(email=["a@x.de", "b@x.de"], firstname=["Ann", "Bob"])
    first = engine.transform(mapping, engine.prepare(mapping, "contacts", raw))
    again = engine.transform(mapping, engine.prepare(mapping, "contacts", raw))
    assert first[engine.FINGERPRINT].tolist() == again[engine.FINGERPRINT].tolist()
    raw.loc[1, "firstname"] = "Bobby"
    raw.loc[0, "lastmodifieddate"] = "2026-11-20T00:00:00Z"  # not a destination field: no change
    changed = engine.transform(mapping, engine.prepare(mapping, "contacts", raw))
    assert (first[engine.FINGERPRINT] == changed[engine.FINGERPRINT]).tolist() == [True, False]


def test_bucket_of_is_stable_and_spreads_keys():
    keys = pd.Series([f"user{i}@x.de" for i in range(10_000)])
    buckets = engine.bucket_of(keys, 16)
    assert buckets.equals(engine.bucket_of(keys.copy(), 16))
    assert buckets.between(0, 15).all()
    assert buckets.value_counts().min() > 500
