"""The mapping engine: source rows in, destination records out, driven only by the YAML.

Three steps, each vectorised with pandas:

- `prepare`: type and normalise every declared input of one source (row by row, so a chunked
  dataset gives the same rows as the whole one); the key is computed here.
- `deduplicate`: pick one record per key by the mapping's stated rule. It needs every row of a
  key at once, so callers run it per key bucket (`bucket_of`), never per arbitrary chunk.
- `transform`: join the secondary sources and build each destination field (rename, lookup,
  date format, template, arithmetic, defaults, length limits), plus a fingerprint of the
  record so a diff can tell changed records from unchanged ones.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import math
import re
import struct
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mailsync.mapping import types as t
from mailsync.mapping.spec import DestField, Input, Mapping, Source
from mailsync.settings import INCLUDE_DIR

KEY = "__key"
ROW = "__row"
FINGERPRINT = "__fingerprint"
_PARSED_TYPES = {"date", "datetime", "decimal", "integer", "boolean"}
_DEFAULT_RULE = {
    "date": "unparseable_date",
    "datetime": "unparseable_date",
    "decimal": "not_a_number",
    "integer": "not_a_number",
    "boolean": "not_a_boolean",
}


class SchemaError(ValueError):
    """The extract lacks columns the mapping needs (schema drift: renamed or removed column)."""


@dataclass(frozen=True)
class RowRule:
    """One row-level check derived from an input's declaration; failing rows are quarantined."""

    rule: str  # the reason an analyst reads, e.g. "invalid_email"
    input: str
    kind: str  # not_null | regex | parsed | clean | between | in_set | max_length
    params: dict[str, Any] = field(default_factory=dict)

    def column(self) -> str:
        """The prepared column the check runs on."""
        if self.kind == "parsed":
            return parsed_column(self.input)
        if self.kind == "clean":
            return clean_column(self.input)
        return self.input


def parsed_column(name: str) -> str:
    """Boolean column of a typed input: False where a value was given but did not parse."""
    return f"{name}__parsed"


def clean_column(name: str) -> str:
    """Boolean column of a string input with `control_chars: quarantine`: False where the value
    holds a control character."""
    return f"{name}__clean"


# Control characters (C0, DEL, C1), as an RE2 class for Arrow's regex kernels (found in the
# UTF-8 bytes by `types.control_bytes`); LINE are the ones a `multiline` input keeps.
_CONTROLS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
_LINE = r"\r\n|[\t\n\r]"
_ANSI = r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]"  # terminal escape sequences (colours, cursor moves)


def has_controls(s: pd.Series, *, multiline: bool = False) -> pd.Series:
    """True where a text value holds a control character (tab/newline allowed if multiline),
    decided on the UTF-8 bytes (one numpy pass, no regex)."""
    arr = t.arrow_text(s)
    hit = t.rows_with(arr, lambda b: t.control_bytes(b, multiline=multiline))
    valid = pc.is_valid(arr).to_numpy(zero_copy_only=False)
    return pd.Series(hit & valid, index=s.index)


def _strip_kernel(arr: pa.Array, multiline: bool) -> pa.Array:
    arr = pc.replace_substring_regex(arr, _ANSI, "")
    if not multiline:
        arr = pc.replace_substring_regex(arr, _LINE, " ")
    return pc.replace_substring_regex(arr, _CONTROLS, "")


def strip_controls(s: pd.Series, *, multiline: bool = False) -> pd.Series:
    """Text without control characters: terminal escape sequences are removed whole, tab, CR
    and LF become a space (kept if multiline), the others are removed; a value left blank
    becomes null. The regexes run only on the rows holding a control character (every
    pattern starts with one), the others are unchanged."""
    arr = t.arrow_text(s)
    rows = t.rows_with(arr, t.control_bytes)
    arr = t.where_rows(arr, rows, lambda a: _strip_kernel(a, multiline))
    return t.text_series(t.blank_to_null(arr), s.index)


def row_rules(source: Source) -> list[RowRule]:
    rules: list[RowRule] = []
    for name, inp in source.inputs.items():
        if inp.required or name == source.key.input:
            rules.append(RowRule(f"missing_{name}", name, "not_null"))
        if inp.type == "email":
            rules.append(RowRule("invalid_email", name, "regex", {"regex": t.EMAIL_REGEX}))
        if inp.type in _PARSED_TYPES:
            rules.append(RowRule(_DEFAULT_RULE[inp.type], name, "parsed"))
        if inp.min is not None or inp.max is not None:
            rules.append(
                RowRule(inp.rule or "out_of_range", name, "between", {"min": inp.min, "max": inp.max})
            )
        if inp.allowed is not None:
            rules.append(RowRule(inp.rule or "unknown_value", name, "in_set", {"values": list(inp.allowed)}))
        if inp.max_length is not None:
            rules.append(RowRule("too_long", name, "max_length", {"max": inp.max_length}))
        if inp.controls == "quarantine":
            rules.append(RowRule("control_characters", name, "clean"))
    return rules


def source_columns(source: Source) -> dict[str, str]:
    """Input name -> the extract column it is read from."""
    return {name: inp.source or name for name, inp in source.inputs.items()}


def missing_columns(source: Source, columns: list[str] | pd.Index) -> list[str]:
    present = set(columns)
    return [col for col in source_columns(source).values() if col not in present]


def _parse(inp: Input, raw: pd.Series) -> pd.Series:
    if inp.type == "email":
        return t.normalize(t.email(raw), inp.normalize)
    if inp.type in ("date", "datetime"):
        return t.dates(raw, inp.formats, utc=inp.type == "datetime")
    if inp.type in ("decimal", "integer"):
        return t.numbers(raw, integer=inp.type == "integer")
    if inp.type == "boolean":
        return t.booleans(raw, inp.true_values, inp.false_values)
    text = t.as_text(raw)
    if inp.controls == "strip":
        text = strip_controls(text, multiline=inp.multiline)
    return t.normalize(text, inp.normalize)


def prepare(mapping: Mapping, source_name: str, raw: pd.DataFrame, *, row_offset: int = 0) -> pd.DataFrame:
    """Typed inputs of one source, plus `__key` and `__row` (position in the whole extract)."""
    source = mapping.sources[source_name]
    missing = missing_columns(source, raw.columns)
    if missing:
        extra = sorted(set(raw.columns) - set(source_columns(source).values()))
        raise SchemaError(
            f"source {source_name!r} lacks column(s) {missing} required by mapping {mapping.name!r}"
            + (f"; columns not in the mapping: {extra} (renamed?)" if extra else "")
        )
    columns: dict[str, Any] = {ROW: np.arange(row_offset, row_offset + len(raw), dtype="int64")}
    for name, col in source_columns(source).items():
        inp = source.inputs[name]
        text = t.as_text(raw[col])
        # Every parser starts with `as_text` of a text column, and `as_text` of its own result
        # changes nothing: a text column is trimmed to text once, not once per use.
        columns[name] = _parse(inp, text if raw[col].dtype == t.STRING else raw[col])
        if inp.type in _PARSED_TYPES:
            given = text.notna().to_numpy()
            columns[parsed_column(name)] = ~(given & columns[name].isna().to_numpy())
        if inp.controls == "quarantine":
            columns[clean_column(name)] = ~has_controls(text, multiline=inp.multiline)
    out = pd.DataFrame(columns, index=raw.index)
    out[KEY] = out[source.key.input].astype(t.STRING)
    return out.reset_index(drop=True)


# -- stable hashes of keys -----------------------------------------------------------------------
# A key's bucket is persisted twice: in the sync state (`bucket`) and in the contacts snapshot,
# kept as one file per bucket across nights. pandas promises no stable `hash_array`, so the hash
# is our own code, and it is the function pandas computed for strings (SipHash-2-4 under pandas'
# fixed key, then its 64-bit finaliser): no key moves. A new function would move 31 keys in 32
# while the snapshot stays filed by the old buckets, and with more than one partition the first
# night would find a member "new" in one partition and "removed" in another (the removal guard
# stops such a run; under 100 members nothing does). Golden values in
# tests/unit/test_stable_hashes.py pin it.
_SIP_KEY = np.frombuffer(b"0123456789123456", dtype="<u8")  # pandas' default hash_key
_SIP_INIT = (0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573)


def _rotl(x: np.ndarray, bits: int) -> np.ndarray:
    return (x << np.uint64(bits)) | (x >> np.uint64(64 - bits))


def _sip_rounds(v: list[np.ndarray], n: int) -> None:
    v0, v1, v2, v3 = v
    for _ in range(n):  # uint64 arrays wrap on overflow, as SipHash's additions must
        v0 += v1
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 += v3
        v3 = _rotl(v3, 16) ^ v2
        v0 += v3
        v3 = _rotl(v3, 21) ^ v0
        v2 += v1
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)
    v[:] = [v0, v1, v2, v3]


def _siphash24(windows: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """SipHash-2-4 of byte strings with the same number of blocks (length // 8 + 1), all at once;
    `windows[i]` are the 8 bytes from offset i of the (zero-padded) data."""
    blocks = int(lengths[0]) // 8 + 1
    v = [
        np.full(len(starts), np.uint64(init) ^ _SIP_KEY[i % 2], dtype=np.uint64)
        for i, init in enumerate(_SIP_INIT)
    ]
    tail = np.left_shift(np.uint64(1), (lengths % 8 * 8).astype(np.uint64)) - np.uint64(1)
    for block in range(blocks):
        word = windows[starts + 8 * block].view("<u8")[:, 0]
        if block == blocks - 1:  # the bytes left, and the length (mod 256) in the top byte
            word = (word & tail) | ((lengths.astype(np.uint64) & np.uint64(0xFF)) << np.uint64(56))
        v[3] ^= word
        _sip_rounds(v, 2)
        v[0] ^= word
    v[2] ^= np.uint64(0xFF)
    _sip_rounds(v, 4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def key_hash(keys: pd.Series) -> np.ndarray:
    """A 64-bit hash (uint64) of each key's UTF-8 text, a null key hashing as "": the same in
    every process, run and library version (see above)."""
    offsets, data = _bytes(
        pa.array(keys.astype(t.STRING).fillna(""), type=pa.large_string(), from_pandas=True)
    )
    lengths = np.diff(offsets)
    data = np.frombuffer(data, dtype=np.uint8)
    windows = np.lib.stride_tricks.sliding_window_view(np.concatenate([data, np.zeros(8, np.uint8)]), 8)
    hashed = np.empty(len(lengths), dtype=np.uint64)
    blocks = lengths // 8
    for count in np.unique(blocks):
        rows = np.flatnonzero(blocks == count)
        hashed[rows] = _siphash24(windows, offsets[rows], lengths[rows])
    hashed ^= hashed >> np.uint64(30)  # pandas' finaliser, which spreads the bits over 64
    hashed *= np.uint64(0xBF58476D1CE4E5B9)
    hashed ^= hashed >> np.uint64(27)
    hashed *= np.uint64(0x94D049BB133111EB)
    hashed ^= hashed >> np.uint64(31)
    return hashed


def _bytes(text: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, memoryview]:
    """(offsets, UTF-8 bytes) of a large_string array: value i is bytes[offsets[i]:offsets[i + 1]]."""
    text = t.one_array(text)
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset : text.offset + len(text) + 1]
    return offsets, memoryview(text.buffers()[2] or b"")


def bucket_of(keys: pd.Series, buckets: int) -> pd.Series:
    """Stable bucket per key (same in every process, run and library version), for partitioning
    by key."""
    return pd.Series((key_hash(keys) % np.uint64(buckets)).astype("int64"), index=keys.index)


def deduplicate(
    mapping: Mapping, source_name: str, prepared: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep one row per key by the stated rule; return (kept, dropped duplicates).

    Ties are broken by `__row` (extract order), so the winner never depends on chance.
    """
    rule = mapping.sources[source_name].duplicates
    if rule.keep in ("latest", "earliest"):
        by, ascending = [rule.order_by, ROW], [rule.keep == "earliest", True]
    else:
        by, ascending = [ROW], [rule.keep == "first"]
    # The order is decided on the sort columns alone and the wide frame is taken once per side
    # (sorting the whole frame moved every column three times).
    order = _sort_order(prepared, by, ascending)
    keys = prepared[KEY].take(order)
    first = (~keys.duplicated(keep="first") | keys.isna()).to_numpy()
    rows = prepared[ROW].to_numpy()
    increasing = bool((rows[1:] > rows[:-1]).all())  # as `prepare` numbers them: no sort by row needed

    def by_row(positions: np.ndarray) -> pd.DataFrame:
        if increasing:
            positions = np.sort(positions)
        else:
            positions = positions[np.argsort(rows[positions], kind="stable")]
        return prepared.take(positions).reset_index(drop=True)

    return by_row(order[first]), by_row(order[~first])


def _sort_order(frame: pd.DataFrame, by: list[str], ascending: list[bool]) -> np.ndarray:
    """The positions `frame.sort_values(by, ascending=..., na_position="last", kind="stable")`
    puts the rows in: datetime and int64 keys by one numpy lexsort (missing last, ties in frame
    order, as pandas' lexsort), other keys by pandas on the sort columns alone."""
    pairs: list[tuple[np.ndarray, np.ndarray]] = []  # (missing, value) per column
    for column, up in zip(by, ascending, strict=True):
        s = frame[column]
        if s.dtype.kind == "M":
            ticks = np.asarray(s.array.asi8)
            missing = ticks == np.iinfo(np.int64).min
        elif isinstance(s.dtype, np.dtype) and s.dtype.kind == "i":
            ticks, missing = s.to_numpy(dtype=np.int64), np.zeros(len(s), dtype=bool)
        else:
            narrow = pd.DataFrame({c: frame[c] for c in dict.fromkeys(by)}).reset_index(drop=True)
            narrow["__position"] = np.arange(len(frame))
            ordered = narrow.sort_values(by, ascending=ascending, na_position="last", kind="stable")
            return ordered["__position"].to_numpy()
        ticks = np.where(missing, 0, ticks)
        pairs.append((missing, ticks if up else -ticks))
    # np.lexsort sorts by its last key first
    return np.lexsort([k for missing, value in reversed(pairs) for k in (value, missing)])


@cache
def _lookup_file(path: str, key_column: str, value_column: str) -> dict[str, str]:
    table = pd.read_csv(INCLUDE_DIR / path, dtype=str, keep_default_na=False, encoding="utf-8")
    return dict(zip(table[key_column].str.strip(), table[value_column], strict=True))


def _lookup_table(mapping: Mapping, name: str) -> dict[str, str]:
    spec = mapping.lookups[name]
    if spec.values is not None:
        return dict(spec.values)
    return _lookup_file(spec.file, spec.key_column, spec.value_column)


def _as_lookup_keys(s: pd.Series) -> pd.Series:
    if isinstance(s.dtype, pd.BooleanDtype):
        flags = pa.array(s, type=pa.bool_(), from_pandas=True)
        words = pc.if_else(flags, pa.scalar("true", pa.large_string()), pa.scalar("false", pa.large_string()))
        return t.text_series(words, s.index)
    return s.astype(t.STRING).str.strip()


def _looked_up(keys: pd.Series, table: dict[str, str], *, keep: bool) -> pd.Series:
    """`keys.map(table)` (a key absent, or null, maps to null; with `keep` to itself) by Arrow's
    hash lookup instead of a Python dict per row."""
    arr = t.arrow_text(keys)
    names = pa.array(list(table), type=pa.large_string())
    values = pa.array(list(table.values()), type=pa.large_string())
    mapped = values.take(pc.index_in(arr, value_set=names))
    if keep:
        mapped = pc.coalesce(mapped, arr)
    return t.text_series(mapped, keys.index)


_PAIRS = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), dtype=np.uint8).reshape(100, 2)
_WIDTH = {"Y": 4, "m": 2, "d": 2, "H": 2, "M": 2, "S": 2}


def _strftime(s: pd.Series, fmt: str) -> pd.Series:
    """`s.dt.strftime(fmt)` as text; a naive column in years 1000-9999 and a format of fixed-width
    %Y %m %d %H %M %S and ASCII literals is written by numpy (the same digits), others by pandas."""
    layout = t.date_layout(fmt)
    if layout is None or getattr(s.dt, "tz", None) is not None or "%f" in fmt:
        return s.dt.strftime(fmt).astype(t.STRING)
    values = s.to_numpy(dtype="datetime64[us]")
    missing = np.isnat(values)
    micros = np.where(missing, 0, values.view(np.int64))
    days, in_day = np.divmod(micros, 86_400_000_000)
    in_day //= 1_000_000
    years, months, mdays = t.civil_from_days(days)
    if len(values) and not ((years[~missing] >= 1000) & (years[~missing] <= 9999)).all():
        return s.dt.strftime(fmt).astype(t.STRING)
    parts = {
        "Y": years,
        "m": months,
        "d": mdays,
        "H": in_day // 3600,
        "M": in_day // 60 % 60,
        "S": in_day % 60,
    }

    length = layout[-1][1]
    text = np.empty((len(values), length), dtype=np.uint8)
    for item, pos in layout[:-1]:
        if item in _WIDTH:
            number = np.where(missing, 0, parts[item])
            if item == "Y":
                text[:, pos : pos + 2] = _PAIRS[number // 100]
                text[:, pos + 2 : pos + 4] = _PAIRS[number % 100]
            else:
                text[:, pos : pos + 2] = _PAIRS[number]
        else:
            text[:, pos] = ord(item)
    offsets = np.arange(0, length * (len(values) + 1), length, dtype=np.int64)
    validity = pa.array(~missing).buffers()[1] if missing.any() else None
    arr = pa.LargeStringArray.from_buffers(
        len(values), pa.py_buffer(offsets), pa.py_buffer(text.tobytes()), validity
    )
    return t.text_series(arr, s.index)


def _format(f: DestField, s: pd.Series) -> pd.Series:
    if f.format is not None and pd.api.types.is_datetime64_any_dtype(s.dtype):
        return _strftime(s, f.format)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        tz = getattr(s.dt, "tz", None)
        return _strftime(s, "%Y-%m-%dT%H:%M:%SZ" if tz else "%Y-%m-%d")
    return s


def _build_field(mapping: Mapping, f: DestField, frame: pd.DataFrame) -> pd.Series:
    def col(ref: str) -> pd.Series:
        source, name = mapping.resolve(ref)
        return frame[name if source == mapping.primary else f"{source}.{name}"]

    if f.from_ is not None:
        s = col(f.from_)
    elif f.template is not None:
        # "CL-{customer_id}" -> ["CL-", "customer_id", ""]: literals at even, references at odd positions
        parts = re.split(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}", f.template)
        s = pd.Series(parts[0], index=frame.index, dtype=t.STRING)
        for i in range(1, len(parts), 2):
            s = s + _format(f, col(parts[i])).astype(t.STRING) + parts[i + 1]
    elif f.expr is not None:
        env = pd.DataFrame({ref.replace(".", "__"): col(ref).astype("Float64") for ref in f.references()})
        s = env.eval(f.expr.replace(".", "__"))
    else:
        s = pd.Series([f.const] * len(frame), index=frame.index)
    if f.lookup is not None:
        table = _lookup_table(mapping, f.lookup) if isinstance(f.lookup, str) else f.lookup
        s = _looked_up(_as_lookup_keys(s), table, keep=f.on_missing == "keep")
    s = _format(f, s)
    if f.round is not None:
        s = s.astype("Float64").round(f.round)
    if f.type == "string":
        s = s.astype(t.STRING)
        if f.case:
            s = getattr(s.str, f.case)()
        if f.max_length:
            s = s.str.slice(0, f.max_length)
    if f.default is not None:
        s = s.fillna(f.default)
    return _cast(f, s)


def _cast(f: DestField, s: pd.Series) -> pd.Series:
    if f.type == "number":
        return pd.to_numeric(s, errors="coerce").astype("Float64")
    if f.type == "integer":
        return pd.to_numeric(s, errors="coerce").round().astype("Int64")
    if f.type == "boolean":
        return s.astype("boolean")
    return s.astype(t.STRING)


def _joined(mapping: Mapping, primary: pd.DataFrame, secondary: dict[str, pd.DataFrame]) -> pd.DataFrame:
    frame = primary
    for name, source in list(mapping.sources.items())[1:]:
        if source.join is None:
            continue
        other = secondary.get(name)
        inputs = list(source.inputs)
        if other is None:  # source absent tonight: its fields are null, the mapping decides defaults
            nulls = pa.nulls(len(frame), pa.large_string())
            frame = frame.assign(**{f"{name}.{n}": t.text_series(nulls, frame.index) for n in inputs})
            continue
        right = other[inputs].drop_duplicates(source.key.input, keep="last")
        right = right.rename(columns={n: f"{name}.{n}" for n in inputs})
        left_on, right_on = source.join, f"{name}.{source.key.input}"
        right[right_on] = right[right_on].astype(t.STRING)
        frame = frame.assign(**{"__join": frame[left_on].astype(t.STRING)}).merge(
            right, how="left", left_on="__join", right_on=right_on, sort=False
        )
        frame = frame.drop(columns="__join")
    return frame


def transform(
    mapping: Mapping, primary: pd.DataFrame, secondary: dict[str, pd.DataFrame] | None = None
) -> pd.DataFrame:
    """Destination records (one column per field path, in the mapping's order, first) with
    `__key`, `__row` and `__fingerprint` after them.

    Row-wise: transforming a dataset equals concatenating the transforms of its chunks.
    """
    frame = _joined(mapping, primary.reset_index(drop=True), secondary or {})
    out = pd.DataFrame({name: _build_field(mapping, f, frame) for name, f in mapping.fields.items()})
    out[KEY] = frame[KEY].astype(t.STRING).set_axis(out.index)
    out[ROW] = frame[ROW].set_axis(out.index)
    out[FINGERPRINT] = fingerprint(out, list(mapping.fields))
    return out


def record_fields(records: pd.DataFrame) -> list[str]:
    """The field columns of `transform`'s records (also read back from Parquet, with columns a
    caller appended): the columns before `__key`."""
    columns = list(records.columns)
    return columns[: columns.index(KEY)] if KEY in columns else []


# -- record prints --------------------------------------------------------------------------------
# The sync state keeps each record's print: what the destination acknowledged. A print is "v2:"
# and 16 hex digits of blake2b (8 bytes) over the record's canonical text: the field names in
# sorted order joined by U+001E, then the token of each field's value in that order, all joined
# by U+001F. A token says the type of the value and the value, whatever pandas dtype holds it:
#   missing (None, NA, NaN, NaT)         ~
#   text                                 s<UTF-8 length>:<text>   ("" is "s0:", not missing)
#   whole number (int or integral float) i<decimal>               (1 is 1.0, 0 is -0.0)
#   other float (and +-inf)              f<IEEE-754 bits as an unsigned decimal>
#   boolean                              b1 / b0                  (not the number 1 / 0)
#   datetime (naive / time zone aware)   t / T<seconds>.<nanoseconds>, aware ones in UTC
#   date                                 d<ISO date>
#   decimal.Decimal                      as the float it equals exactly, else n<normalised>
# Texts carry their length, so no value can pass for another; the names make a renamed field a
# change, while reordering the mapping's fields is none.
PRINT_PREFIX = "v2:"
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def fingerprint(records: pd.DataFrame, fields: list[str]) -> pd.Series:
    """A stable print (see above) of each record's field values: equal records, equal prints,
    whatever the dtypes, in every process and library version."""
    if not len(records):
        return pd.Series([], dtype=t.STRING, index=records.index)
    names = sorted(fields)
    # The names are the same for every record: hashed once, each record's hash goes on from a
    # copy of that state with the rest of its text (blake2b of a text in two parts is the hash
    # of the whole).
    head = hashlib.blake2b("\x1e".join(names).encode(), digest_size=8)
    parts = [part for name in names for part in (_FIELD_SEPARATOR, *_token_parts(records[name]))]
    if not parts:  # no fields: every record is the same
        digests = head.digest() * len(records)
    else:
        text = pc.binary_join_element_wise(
            *parts, pa.scalar("", pa.large_string()), null_handling="replace", null_replacement=""
        )
        offsets, data = _bytes(text)
        ends, prints = offsets.tolist(), []
        for a, b in itertools.pairwise(ends):
            h = head.copy()
            h.update(data[a:b])
            prints.append(h.digest())
        digests = b"".join(prints)
    return _hex_texts(np.frombuffer(digests, dtype=np.uint8).reshape(-1, 8), records.index, PRINT_PREFIX)


_FIELD_SEPARATOR = pa.scalar("\x1f", pa.large_string())
_MISSING = pa.scalar("~", pa.large_string())


def _token_parts(s: pd.Series) -> list[pa.Array]:
    """The tokens of a column as parts to concatenate (missing: "~"): a text column as its
    "s<length>:" prefixes and its texts (a missing text, after its "~", joins as ""), so the
    texts are copied once, into the record's text."""
    if not isinstance(s.dtype, pd.StringDtype):
        return [pc.fill_null(_value_tokens(s).cast(pa.large_string()), _MISSING)]
    text = t.arrow_text(s)
    lengths = pc.fill_null(pc.binary_length(text), -1).to_numpy()
    longest = int(lengths.max(initial=-1))
    if longest > 10_000:  # a table of every length would be large: joined
        prefix = pc.fill_null(_join("s", pc.binary_length(text), ":"), _MISSING)
    else:  # looked up by length: ["~", "s0:", "s1:", ...]
        prefix = pa.array(["~", *(f"s{n}:" for n in range(longest + 1))], pa.large_string())
        prefix = prefix.take(pa.array(lengths + 1))
    return [prefix, text]


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex_texts(raw: np.ndarray, index: pd.Index, prefix: str = "") -> pd.Series:
    """prefix + lower-case hex of each row of bytes (`bytes.hex()`), built as one Arrow buffer."""
    rows, width = raw.shape
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    length = len(head) + 2 * width
    text = np.empty((rows, length), dtype=np.uint8)
    text[:, : len(head)] = head
    text[:, len(head) :: 2] = _HEX[raw >> 4]
    text[:, len(head) + 1 :: 2] = _HEX[raw & 15]
    offsets = np.arange(0, length * (rows + 1), length, dtype=np.int64)
    arr = pa.LargeStringArray.from_buffers(rows, pa.py_buffer(offsets), pa.py_buffer(text.tobytes()))
    return t.text_series(arr, index)


def _join(*parts: str | pa.Array) -> pa.Array:
    """Concatenate texts element-wise (a null part makes a null)."""
    return pc.binary_join_element_wise(
        *(
            pa.scalar(p, pa.large_string()) if isinstance(p, str) else p.cast(pa.large_string())
            for p in parts
        ),
        pa.scalar("", pa.large_string()),
    )


def _value_tokens(s: pd.Series) -> pa.Array:
    """The token of each value of a column (null where missing), vectorised for every dtype the
    engine makes; other values (an object column of dates, numbers and texts mixed) one by one."""
    dtype = s.dtype
    if pd.api.types.is_bool_dtype(dtype):
        flags = pa.array(s, type=pa.bool_(), from_pandas=True)
        return pc.if_else(flags, pa.scalar("b1", pa.large_string()), pa.scalar("b0", pa.large_string()))
    if pd.api.types.is_integer_dtype(dtype):
        return _join("i", pa.array(s, from_pandas=True))
    if pd.api.types.is_float_dtype(dtype):
        return _float_tokens(s.to_numpy(dtype="float64", na_value=np.nan))
    if pd.api.types.is_datetime64_any_dtype(dtype):
        aware = getattr(dtype, "tz", None) is not None
        values = (s.dt.tz_convert("UTC").dt.tz_localize(None) if aware else s).to_numpy()
        return _instant_tokens(values, "T" if aware else "t")
    if isinstance(dtype, pd.StringDtype) or pd.api.types.is_object_dtype(dtype):
        try:
            text = pa.array(s, type=pa.large_string(), from_pandas=True)
        except (pa.ArrowTypeError, pa.ArrowInvalid):  # not only texts
            pass
        else:
            return _join("s", pc.binary_length(text), ":", text)
    return pa.array([_python_token(v) for v in s.astype(object)], type=pa.large_string())


def _float_tokens(values: np.ndarray) -> pa.Array:
    whole = np.isfinite(values) & (np.trunc(values) == values)
    small = whole & (np.abs(values) < 2.0**63)
    as_int = _join("i", pa.array(np.where(small, values, 0).astype(np.int64)))
    as_bits = _join("f", pa.array(values.view(np.uint64)))
    tokens = pc.if_else(pa.array(small), as_int, as_bits)
    if (whole & ~small).any():  # whole numbers beyond int64 (rare): exact decimals, one by one
        tokens = pa.array([_python_token(float(v)) or "" for v in values], type=pa.large_string())
    return pc.if_else(pa.array(np.isnan(values)), pa.scalar(None, pa.large_string()), tokens)


def _instant_tokens(values: np.ndarray, tag: str) -> pa.Array:
    """datetime64 values of any unit as whole seconds and nanoseconds, so units do not matter."""
    unit, _ = np.datetime_data(values.dtype)
    per_second = _PER_SECOND[unit]
    ticks = values.view(np.int64)
    seconds, rest = np.divmod(ticks, per_second)
    tokens = _join(tag, pa.array(seconds), ".", pa.array(rest * (1_000_000_000 // per_second)))
    return pc.if_else(pa.array(np.isnat(values)), pa.scalar(None, pa.large_string()), tokens)


def _python_token(value: Any) -> str | None:
    """The token of one value (the same as the vectorised paths give for that type)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_):
        return "b1" if value else "b0"
    if isinstance(value, int | np.integer):
        return f"i{int(value)}"
    if isinstance(value, float | np.floating):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isfinite(value) and value == math.trunc(value):
            return f"i{int(value)}"
        return f"f{struct.unpack('<Q', struct.pack('<d', value))[0]}"
    if isinstance(value, Decimal):
        if value.is_nan():
            return None
        if value.is_finite() and value == value.to_integral_value():
            return f"i{int(value)}"
        exact = float(value)
        return _python_token(exact) if Decimal(exact) == value else f"n{value.normalize()}"
    if isinstance(value, str):
        return f"s{len(value.encode())}:{value}"
    if isinstance(value, datetime.datetime):
        stamp = pd.Timestamp(value)
        aware = stamp.tzinfo is not None
        if aware:
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        return _instant_tokens(np.array([stamp.to_datetime64()]), "T" if aware else "t")[0].as_py()
    if isinstance(value, datetime.date):
        return f"d{value.isoformat()}"
    raise TypeError(f"cannot fingerprint a value of type {type(value).__name__}")


def legacy_pandas_fingerprint(records: pd.DataFrame, fields: list[str]) -> pd.Series:
    """The print before "v2:" (bare 16 hex digits): pandas' `hash_pandas_object`, whose values
    pandas does not promise to keep. Only `sync.diff` needs it, to recognise an unchanged record
    under a print stored before the upgrade, and computes it for those records alone; it can go
    once no state row holds such a print (see `sync.diff`). It gives the old values only with the
    pandas that wrote them (3.1.1)."""
    if records.empty:
        return pd.Series([], dtype=t.STRING, index=records.index)
    hashed = pd.util.hash_pandas_object(records[fields], index=False).to_numpy(dtype=np.uint64)
    return _hex_texts(hashed.astype(">u8").view(np.uint8).reshape(-1, 8), records.index)
