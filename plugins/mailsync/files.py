"""Reading partner files (CSV-like text) with an explicit encoding, reporting every bad line.

Files from partners come in legacy encodings (cp1252, latin-1), with BOMs, CRLF line ends and
the odd broken row. Nothing is guessed: the encoding is the one configured; a line that does
not decode or has the wrong number of fields is reported with its line number and reason,
never silently dropped.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv


@dataclass(frozen=True)
class BadLine:
    line: int  # 1-based line number in the file (the header is line 1)
    reason: str
    text: str  # the line as far as it could be decoded (undecodable bytes shown as U+FFFD)


def _decode(data: bytes, encoding: str) -> tuple[str, list[BadLine]]:
    try:
        return data.decode(encoding), []
    except UnicodeDecodeError:
        pass
    bad: list[BadLine] = []
    lines = data.split(b"\n")
    for i, raw in enumerate(lines):
        try:
            raw.decode(encoding)
        except UnicodeDecodeError as exc:
            bad.append(
                BadLine(
                    i + 1,
                    f"not valid {encoding}: byte {raw[exc.start]:#04x}",
                    raw.decode(encoding, "replace"),
                )
            )
            lines[i] = b""  # an empty line is skipped by the parser; the bad line is reported
    return b"\n".join(lines).decode(encoding), bad


def read_delimited(data: bytes, *, encoding: str, delimiter: str = ",") -> tuple[pd.DataFrame, list[BadLine]]:
    """Parse delimited text into a frame of strings (header from line 1) and its bad lines."""
    text, bad = _decode(data, encoding)
    text = text.removeprefix("\ufeff")  # a BOM is not part of the first column's name
    if not text.strip():
        return pd.DataFrame(), bad
    header = next(iter(io.StringIO(text))).rstrip("\r\n").split(delimiter)
    invalid: list[tuple[int, str, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append(
            (row.number, f"expected {row.expected_columns} fields, found {row.actual_columns}", row.text)
        )
        return "skip"

    table = pacsv.read_csv(
        io.BytesIO(text.encode("utf-8")),
        read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 24),  # single thread: rows numbered
        parse_options=pacsv.ParseOptions(
            delimiter=delimiter, invalid_row_handler=on_invalid, newlines_in_values=False
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    frame = table.to_pandas(types_mapper={pa.string(): pd.StringDtype()}.get)
    if invalid:
        lines = _line_numbers(text)
        bad.extend(BadLine(lines.get(number, number), reason, row) for number, reason, row in invalid)
    return frame, sorted(bad, key=lambda b: b.line)


def _line_numbers(text: str) -> dict[int, int]:
    """pyarrow numbers non-empty lines from 1 (the header); map those numbers to file lines."""
    mapping, number = {}, 0
    for i, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            number += 1
            mapping[number] = i
    return mapping
