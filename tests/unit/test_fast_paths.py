"""The fast text, date and boolean paths of the mapping engine (issue 22) give, for any input,
what their plain definitions give: the Arrow kernel or pandas parser applied to every row.

The fast paths skip rows a byte scan says a kernel cannot change, and parse fixed-width dates
in numpy; the plain definitions below are the code they replaced, kept here as the reference.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailsync.mapping import engine, types

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONTACT_DATES = ("%Y-%m-%d", "%d.%m.%Y", "%m/%d/%Y")  # include/mappings/crm_to_esp_contacts.yaml
ANY_CONTROL = r"[\x00-\x1f\x7f-\x9f]"  # every C0, DEL and C1 character

# -- the plain definitions ----------------------------------------------------------------------


def plain_as_text(s: pd.Series) -> pd.Series:
    if not isinstance(s.dtype, pd.StringDtype):
        s = s.astype(types.STRING)
    return s.mask(s.str.strip() == "")


PLAIN_STEPS = {
    "strip": pc.utf8_trim_whitespace,
    "lower": pc.utf8_lower,
    "upper": pc.utf8_upper,
    "collapse_spaces": lambda a: pc.replace_substring_regex(a, r"\s+", " "),
    "nfc": lambda a: pc.utf8_normalize(a, "NFC"),
}


def plain_normalize(s: pd.Series, steps: tuple[str, ...]) -> pd.Series:
    arr = pa.array(s, type=pa.large_string(), from_pandas=True)
    for step in steps:
        arr = PLAIN_STEPS[step](arr)
    out = pd.Series(pd.arrays.ArrowStringArray(arr), index=s.index)
    return out.mask(out == "")


def plain_dates(s: pd.Series, formats: tuple[str, ...], *, utc: bool) -> pd.Series:
    text = plain_as_text(s).str.strip()
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[us, UTC]" if utc else "datetime64[us]")
    for fmt in formats:
        todo = out.isna() & text.notna()
        if not todo.any():
            break
        parsed = pd.to_datetime(text[todo], format=fmt, errors="coerce", utc=utc)
        if not utc and getattr(parsed.dt, "tz", None) is not None:
            parsed = parsed.dt.tz_localize(None)
        out.loc[todo] = parsed.astype(out.dtype)
    return out if utc else out.dt.normalize()


def plain_booleans(s: pd.Series, true_values: tuple[str, ...], false_values: tuple[str, ...]) -> pd.Series:
    text = plain_as_text(s).str.strip().str.lower()
    out = pd.Series(pd.NA, index=s.index, dtype="boolean")
    out[text.isin([v.lower() for v in true_values]).fillna(False)] = True
    out[text.isin([v.lower() for v in false_values]).fillna(False)] = False
    return out


def plain_numbers(s: pd.Series) -> pd.Series:
    return pd.to_numeric(plain_as_text(s).str.strip(), errors="coerce").astype("Float64")


def plain_strftime(s: pd.Series, fmt: str) -> pd.Series:
    return s.dt.strftime(fmt).astype(types.STRING)


def plain_has_controls(s: pd.Series, *, multiline: bool) -> pd.Series:
    pattern = engine._CONTROLS if multiline else ANY_CONTROL
    hit = pc.match_substring_regex(pa.array(s, type=pa.large_string(), from_pandas=True), pattern)
    return pd.Series(pc.fill_null(hit, False).to_numpy(zero_copy_only=False), index=s.index)


def plain_strip_controls(s: pd.Series, *, multiline: bool) -> pd.Series:
    arr = pc.replace_substring_regex(pa.array(s, type=pa.large_string(), from_pandas=True), engine._ANSI, "")
    if not multiline:
        arr = pc.replace_substring_regex(arr, engine._LINE, " ")
    arr = pc.replace_substring_regex(arr, engine._CONTROLS, "")
    out = pd.Series(pd.arrays.ArrowStringArray(arr), index=s.index)
    return out.mask(out.str.strip() == "")


# -- inputs: the shapes partner files and CRMs send, and their near misses ----------------------

TEXT = st.text(alphabet=" \t\n\r\x0b\x1b[0m\x07\x85\x9fAaÄäé\u0308\u00a0王Zz.-@", max_size=14)
PARTS = st.tuples(  # calendar edges (leap days, month ends, pandas' year range) and near misses
    st.one_of(st.sampled_from([1677, 1678, 1900, 2000, 2024, 2100, 2261, 2262]), st.integers(1600, 2300)),
    st.one_of(st.sampled_from([0, 1, 2, 4, 9, 12, 13]), st.integers(0, 13)),
    st.one_of(st.sampled_from([0, 1, 28, 29, 30, 31, 32]), st.integers(0, 32)),
)
SHAPES = ("{y:04d}-{m:02d}-{d:02d}", "{d:02d}.{m:02d}.{y:04d}", "{m:02d}/{d:02d}/{y:04d}", "{y}-{m}-{d}")
DATES = st.one_of(
    st.builds(lambda shape, p: shape.format(y=p[0], m=p[1], d=p[2]), st.sampled_from(SHAPES), PARTS),
    st.from_regex(r"\A ?[0-9]{1,4}[-./][0-9]{1,2}[-./][0-9]{1,4} ?\Z"),
    st.text(alphabet="0123456789-./ ", max_size=11),
)
STAMPS = st.builds(
    lambda ymd, hms, ms: f"{ymd[0]:04d}-{ymd[1]:02d}-{ymd[2]:02d}T{hms[0]:02d}:{hms[1]:02d}:{hms[2]:02d}{ms}Z",  # noqa: E501
    PARTS,
    st.tuples(st.integers(0, 24), st.integers(0, 60), st.integers(0, 60)),
    st.sampled_from(["", ".000", ".123", ".5"]),
)


NUMBERS = st.one_of(  # plain decimals up to and past 15 digits, signs, zeros, exponents, garbage
    st.from_regex(r"\A ?-?[0-9]{1,17}(\.[0-9]{0,4})? ?\Z"),
    st.sampled_from(
        ["-0", "0", "-0.0", ".5", "5.", "1e3", "+4", "inf", "nan", "1_0", "x", "18446744073709551616"]
    ),
    st.text(alphabet="0123456789.-e ", max_size=8),
)
INSTANTS = st.one_of(  # microseconds since 1970, years 1000 to 9999, and the epoch's neighbours
    st.integers(-30_610_224_000_000_000, 253_402_300_799_999_999),
    st.sampled_from([-1, 0, 1, 86_399_999_999, 951_782_400_000_000]),
)


def column(values: list) -> pd.Series:
    return pd.Series(values, dtype=types.STRING)


def same(fast: pd.Series, plain: pd.Series) -> None:
    pd.testing.assert_series_equal(fast, plain, check_dtype=True, check_exact=True)


@SETTINGS
@given(st.lists(st.one_of(st.none(), TEXT), max_size=30))
def test_text_normalisation_equals_the_kernels_on_every_row(values):
    s = column(values)
    same(types.as_text(s), plain_as_text(s))
    for steps in (("strip", "lower"), ("strip", "collapse_spaces", "nfc"), ("nfc",), ("collapse_spaces",)):
        same(types.normalize(types.as_text(s), steps), plain_normalize(plain_as_text(s), steps))


@SETTINGS
@given(st.lists(st.one_of(st.none(), TEXT), max_size=30), st.booleans())
def test_control_character_checks_and_stripping_equal_the_regexes(values, multiline):
    s = column(values)
    same(engine.has_controls(s, multiline=multiline), plain_has_controls(s, multiline=multiline))
    same(engine.strip_controls(s, multiline=multiline), plain_strip_controls(s, multiline=multiline))


@SETTINGS
@given(st.lists(st.one_of(st.none(), DATES), max_size=30))
def test_dates_over_three_formats_equal_pandas_row_by_row_formats(values):
    s = column(values)
    for formats in (CONTACT_DATES, ("%d.%m.%Y",), ("%Y-%m-%d",)):
        same(types.dates(s, formats, utc=False), plain_dates(s, formats, utc=False))


@SETTINGS
@given(st.lists(st.one_of(st.none(), STAMPS), max_size=30))
def test_utc_timestamps_equal_pandas_iso8601(values):
    s = column(values)
    try:
        want = plain_dates(s, ("ISO8601",), utc=True)
    except ValueError as err:  # pandas refuses some mixes of forms: so must the fast path
        with pytest.raises(type(err)):
            types.dates(s, ("ISO8601",), utc=True)
        return
    same(types.dates(s, ("ISO8601",), utc=True), want)


@SETTINGS
@given(st.lists(st.one_of(st.none(), st.sampled_from([" TRUE", "yes", "Ja", "no ", "0", "1", "", "x"]))))
def test_booleans_equal_the_plain_lookup(values):
    s = column(values)
    yes, no = ("true", "yes", "ja", "1"), ("false", "no", "nein", "0")
    same(types.booleans(s, yes, no), plain_booleans(s, yes, no))


@SETTINGS
@given(st.lists(st.one_of(st.none(), NUMBERS), max_size=30))
def test_decimals_equal_pandas_to_numeric_bit_for_bit(values):
    s = column(values)
    fast, plain = types.numbers(s, integer=False), plain_numbers(s)
    same(fast, plain)
    bits = [v.to_numpy(dtype="float64", na_value=0.0).view("uint64").tolist() for v in (fast, plain)]
    assert bits[0] == bits[1]  # -0.0 is not 0.0 here


@SETTINGS
@given(st.lists(st.one_of(st.none(), INSTANTS), max_size=30))
def test_date_formatting_equals_pandas_strftime(values):
    s = pd.Series(
        [pd.NaT if v is None else pd.Timestamp(v, unit="us") for v in values], dtype="datetime64[us]"
    )
    for fmt in ("%m/%d", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%SZ", "%d.%m.%Y %H:%M"):
        same(engine._strftime(s, fmt), plain_strftime(s, fmt))


@SETTINGS
@given(st.lists(st.one_of(st.none(), TEXT), max_size=30), st.lists(st.one_of(st.none(), TEXT), max_size=30))
def test_membership_of_texts_equals_pandas_isin(values, among):
    """types.is_in (the diff's removals) against pandas' isin, for Arrow- and Python-backed
    columns; a missing value is in `among` only when `among` has one too, as pandas has it."""
    for dtype in (types.STRING, pd.StringDtype("python"), object):
        s, a = pd.Series(values, dtype=dtype), pd.Series(among, dtype=dtype)
        assert types.is_in(s, a).tolist() == s.isin(a).fillna(False).astype(bool).tolist()
