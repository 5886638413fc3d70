"""Reading partner files (CSV-like text) in a declared dialect, reporting every bad line.

Files from partners come in legacy encodings (cp1252, latin-1), with BOMs, CRLF line ends, other
delimiters, headers in another case or order, cut off, with the odd broken row. Only what the
mapping declares is accepted (`sources.<name>.file`, see mailsync.mapping.spec.FileFormat):

- encodings, tried in order: the first that decodes the whole file is used; when none does, the
  one with the fewest undecodable lines (those lines are reported). List strict encodings
  (utf-8) before single-byte ones: cp1252 or latin-1 decode nearly any byte, so nothing after
  them is ever tried;
- a byte-order mark is stripped (or refused) and settles the encoding: a UTF-8 BOM on a file
  whose mapping does not accept UTF-8 is refused;
- the delimiter, or a list to sniff from: the one that finds the most expected columns in the
  header line (the first listed on a tie);
- header names matched case-insensitively (or exactly) and in any order, renamed to the
  mapping's spelling; a missing column refuses the file, extra columns are reported and kept;
- completeness: a row count declared elsewhere (the done-marker's) must equal the file's lines
  of data, and where the mapping asks, the file must end with a line break (a last line without
  one was cut off).

A file that does not fit is refused whole (`FileRefused`: its message names the delimiter,
encoding, BOM, header or completeness, in one line without any of the file's data). A line
that does not decode or has the wrong number of fields is reported with its line number and
reason (`BadLine`), never silently dropped.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

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


_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_NEWLINE = re.compile(r"\r\n|\n|\r")  # what pyarrow's parser takes for a line end
_COMMON_DELIMITERS = (",", ";", "\t", "|")


class FileRefused(ValueError):
    """The file as a whole cannot be used. `aspect` is what did not fit: delimiter, encoding,
    bom, header or completeness; the message says it first."""

    def __init__(self, aspect: str, message: str) -> None:
        super().__init__(f"{aspect}: {message}")
        self.aspect = aspect


@dataclass(frozen=True)
class PartnerFile:
    """A parsed file: its rows as strings (columns in the mapping's spelling, extra columns as
    found, and `file_line`: the line each row came from), its bad lines and the dialect read."""

    frame: pd.DataFrame
    bad: list[BadLine]
    encoding: str
    delimiter: str
    bom: str | None  # the encoding whose byte-order mark was stripped
    data_lines: int  # lines after the header, bad ones included
    extra_columns: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)  # header name as found -> mapping name

    def dialect(self) -> dict:
        return {
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "bom": self.bom,
            "renamed": self.renamed,
            "extra_columns": self.extra_columns,
        }


def _codec(name: str) -> str:
    """Canonical codec name; utf-8-sig counts as utf-8."""
    canonical = codecs.lookup(name).name
    return "utf-8" if canonical == "utf-8-sig" else canonical


def _strip_bom(data: bytes, encodings: Sequence[str], bom: str) -> tuple[bytes, list[str], str | None]:
    """Strip a byte-order mark; it settles the encoding, which the mapping must accept."""
    accepted = {_codec(e) for e in encodings}
    if "utf-16" in accepted:
        accepted |= {"utf-16-le", "utf-16-be"}
    for mark, encoding in _BOMS:
        if not data.startswith(mark):
            continue
        label = f"a {encoding.upper()} byte-order mark (BOM)"
        if bom == "refuse":
            raise FileRefused(
                "bom", f"the file starts with {label}, which the mapping refuses (file.bom: refuse)"
            )
        if encoding not in accepted:
            raise FileRefused(
                "bom",
                f"the file starts with {label}, so it is {encoding}, which is not among the accepted "
                f"encodings {list(encodings)} (file.encoding)",
            )
        return data[len(mark) :], [encoding], encoding
    return data, list(encodings), None


def _choose_encoding(data: bytes, encodings: Sequence[str]) -> tuple[str, str, list[BadLine]]:
    """The first encoding that decodes everything; else the one with the fewest bad lines."""
    tried = []
    for encoding in encodings:
        text, bad = _decode(data, encoding)
        if not bad:
            return text, encoding, []
        tried.append((len(bad), text, encoding, bad))
    _, text, encoding, bad = min(tried, key=lambda t: t[0])  # min keeps the first of equals
    return text, encoding, bad


def _header_names(line: str, delimiter: str) -> list[str]:
    return [name.strip() for name in next(csv.reader([line], delimiter=delimiter), [])]


def read_partner_file(
    data: bytes,
    *,
    columns: Sequence[str],
    encodings: Sequence[str] = ("utf-8",),
    delimiters: Sequence[str] = (",",),
    bom: str = "strip",
    header_case: str = "insensitive",
    final_newline: str = "optional",
    expected_rows: int | None = None,
    max_undecodable_share: float = 1.0,
) -> PartnerFile:
    """Parse a partner file in the declared dialect (see the module docstring).

    `columns` are the header names the mapping reads; `expected_rows` the data rows another
    source (the done-marker) says the file holds. More undecodable lines than
    `max_undecodable_share` refuse the file as being in another encoding. Raises FileRefused
    when the file does not fit.
    """
    data, encodings, bom_of = _strip_bom(data, encodings, bom)
    text, encoding, bad = _choose_encoding(data, encodings)
    text = text.removeprefix("\ufeff")  # a BOM-aware codec named by the mapping keeps none
    lines = _NEWLINE.split(text)
    if not any(lines):
        raise FileRefused("header", "the file is empty (no header line)")
    header_at = next(i for i, line in enumerate(lines) if line)  # pyarrow skips empty lines
    if bad and bad[0].line <= header_at + 1:
        raise FileRefused("encoding", f"the header (line {bad[0].line}) is {bad[0].reason}")
    if final_newline == "required" and not text.endswith(("\n", "\r")):
        raise FileRefused(
            "completeness",
            f"the file does not end with a line break: its last line (line {len(lines)}) is cut off; "
            "the partner must resend the file",
        )
    data_lines = sum(1 for line in lines[header_at + 1 :] if line) + len(bad)  # bad lines were blanked
    if bad and len(bad) > max_undecodable_share * data_lines:
        raise FileRefused(
            "encoding",
            f"{len(bad)} of {data_lines} lines are not valid in any accepted encoding {list(encodings)} "
            f"(fewest with {encoding}): the file is in another encoding (file.encoding)",
        )
    if expected_rows is not None and data_lines != expected_rows:
        raise FileRefused(
            "completeness",
            f"the done-marker declares {expected_rows} rows but the file holds {data_lines} lines of "
            "data: it was cut off (or changed after the marker was written); the partner must resend it",
        )
    names, delimiter, renamed = _match_header(lines[header_at], columns, delimiters, header_case, encoding)
    lines[header_at] = _header_line(names, delimiter)
    frame, invalid = _parse("\n".join(lines), names, delimiter)
    numbered = [i + 1 for i, line in enumerate(lines) if line]  # pyarrow's row numbers -> file lines
    bad.extend(
        BadLine(numbered[n - 1] if n <= len(numbered) else n, reason, row) for n, reason, row in invalid
    )
    skipped = {n for n, _, _ in invalid}
    row_lines = [line for n, line in enumerate(numbered[1:], start=2) if n not in skipped]
    if len(row_lines) == len(frame) and "file_line" not in frame.columns:
        frame.insert(0, "file_line", pd.array([str(n) for n in row_lines], dtype=pd.StringDtype()))
    wanted = set(columns)
    return PartnerFile(
        frame,
        sorted(bad, key=lambda b: b.line),
        encoding,
        delimiter,
        bom_of,
        data_lines,
        [n for n in names if n not in wanted],
        renamed,
    )


def _match_header(
    line: str, columns: Sequence[str], delimiters: Sequence[str], header_case: str, encoding: str
) -> tuple[list[str], str, dict[str, str]]:
    """Split the header with the declared delimiter that finds the most expected columns;
    return its names in the mapping's spelling, the delimiter, and what was renamed."""

    def fold(name: str, insensitive: bool = header_case == "insensitive") -> str:
        return name.casefold() if insensitive else name

    def found(delimiter: str, insensitive: bool = header_case == "insensitive") -> int:
        names = {fold(n, insensitive) for n in _header_names(line, delimiter)}
        return len(names & {fold(c, insensitive) for c in columns})

    wanted = {fold(c): c for c in columns}
    delimiter = max(delimiters, key=found)  # the first listed among equals
    names = _header_names(line, delimiter)
    missing = [c for c in columns if fold(c) not in {fold(n) for n in names}]
    if missing:
        for other in (d for d in _COMMON_DELIMITERS if d not in delimiters):
            if found(other, insensitive=True) == len(columns):
                raise FileRefused(
                    "delimiter",
                    f"the header does not split into the mapping's columns with the declared delimiter "
                    f"{_shown(delimiters)}; it is {other!r}-separated, which the mapping does not "
                    "declare (file.delimiter)",
                )
        if header_case != "insensitive" and found(delimiter, insensitive=True) == len(columns):
            raise FileRefused(
                "header",
                f"column names differ from the mapping's only in case ({', '.join(names)}) and the "
                "mapping matches them exactly (file.header_case: exact)",
            )
        extra = [n for n in names if fold(n) not in wanted]
        raise FileRefused(
            "header",
            f"missing column(s) {missing}; the header has {len(names)} column(s) {names} with "
            f"delimiter {delimiter!r} and encoding {encoding}"
            + (f"; not in the mapping: {extra} (renamed?)" if extra else ""),
        )
    folded = [fold(n) for n in names]
    twice = sorted({n for n, f in zip(names, folded, strict=True) if folded.count(f) > 1})
    if twice:
        raise FileRefused("header", f"column(s) {twice} appear more than once in the header")
    canonical = [wanted.get(f, n) for n, f in zip(names, folded, strict=True)]
    renamed = {n: c for n, c in zip(names, canonical, strict=True) if n != c}
    return canonical, delimiter, renamed


def _shown(delimiters: Sequence[str]) -> str:
    return repr(delimiters[0]) if len(delimiters) == 1 else f"(one of {', '.join(map(repr, delimiters))})"


def _header_line(names: list[str], delimiter: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="").writerow(names)
    return buffer.getvalue()


def _parse(text: str, names: list[str], delimiter: str) -> tuple[pd.DataFrame, list[tuple[int, str, str]]]:
    """pyarrow's reader, every column a string; rows with the wrong field count are collected
    as (pyarrow row number, reason, text), numbered from 1 for the header."""
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
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    return table.to_pandas(types_mapper={pa.string(): pd.StringDtype()}.get), invalid
