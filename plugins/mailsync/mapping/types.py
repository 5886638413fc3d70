"""Vectorised parsing of source columns into typed, normalised values.

Every function takes and returns a pandas Series and never loops in Python over rows, so a
chunk of a million rows is parsed in about a second. A value that cannot be parsed becomes
null; the caller keeps the raw value beside it so the quality gate can name the bad row.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# Practical address syntax: local@domain.tld, ASCII, no spaces, no consecutive dots.
EMAIL_REGEX = (
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)

STRING = pd.StringDtype()


def as_text(s: pd.Series) -> pd.Series:
    """Any column as nullable text; empty or blank strings count as missing."""
    if not isinstance(s.dtype, pd.StringDtype):
        s = s.astype(STRING)
    return s.mask(s.str.strip() == "")


_STEPS = {
    "strip": pc.utf8_trim_whitespace,
    "lower": pc.utf8_lower,
    "upper": pc.utf8_upper,
    "collapse_spaces": lambda a: pc.replace_substring_regex(a, r"\s+", " "),
    "nfc": lambda a: pc.utf8_normalize(a, "NFC"),
}


def normalize(s: pd.Series, steps: tuple[str, ...]) -> pd.Series:
    """Apply string steps with Arrow kernels (pandas' regex replace is ~10x slower)."""
    if not steps:
        return s
    arr = pa.array(s, type=pa.large_string(), from_pandas=True)
    for step in steps:
        arr = _STEPS[step](arr)
    out = pd.Series(pd.arrays.ArrowStringArray(arr), index=s.index)
    return out.mask(out == "")


def email(s: pd.Series) -> pd.Series:
    """Emails are matched trimmed and lower-cased (the ESP hashes the lower-cased address)."""
    return normalize(as_text(s), ("strip", "lower"))


def dates(s: pd.Series, formats: tuple[str, ...], *, utc: bool) -> pd.Series:
    """Try each format in order on the values not parsed yet; the first that fits wins."""
    text = as_text(s).str.strip()
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[us, UTC]" if utc else "datetime64[us]")
    for fmt in formats or (("ISO8601",) if utc else ("%Y-%m-%d",)):
        todo = out.isna() & text.notna()
        if not todo.any():
            break
        parsed = pd.to_datetime(text[todo], format=fmt, errors="coerce", utc=utc)
        if not utc and getattr(parsed.dt, "tz", None) is not None:
            parsed = parsed.dt.tz_localize(None)
        out.loc[todo] = parsed.astype(out.dtype)
    if not utc:
        out = out.dt.normalize()
    return out


def numbers(s: pd.Series, *, integer: bool) -> pd.Series:
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        values = s.astype("Float64")
    else:
        values = pd.to_numeric(as_text(s).str.strip(), errors="coerce").astype("Float64")
    if integer:
        whole = values.round() == values
        return values.where(whole.fillna(False)).astype("Int64")
    return values


def booleans(s: pd.Series, true_values: tuple[str, ...], false_values: tuple[str, ...]) -> pd.Series:
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.astype("boolean")
    text = as_text(s).str.strip().str.lower()
    out = pd.Series(pd.NA, index=s.index, dtype="boolean")
    out[text.isin([v.lower() for v in true_values]).fillna(False)] = True
    out[text.isin([v.lower() for v in false_values]).fillna(False)] = False
    return out
