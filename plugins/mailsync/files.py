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

Memory does not grow with the file (a 200 MB file must not cost several times its size): it is
read twice, a block at a time, cut after line breaks. The first pass decodes every block in every
accepted encoding, since a legacy byte may come only near the end, and counts the undecodable
lines of the encodings that fail; the second decodes in the chosen encoding (blanking the lines
that do not decode), hands each block to pyarrow's CSV reader and passes the rows on in chunks.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from mailsync.settings import CHUNK_ROWS

BLOCK_BYTES = 1 << 20  # read, decoded and parsed at a time
LONGEST_LINE = 1 << 24  # a longer line is no record (and would be held whole)


@dataclass(frozen=True)
class BadLine:
    line: int  # 1-based line number in the file (the header is line 1)
    reason: str
    text: str  # the line as far as it could be decoded (undecodable bytes shown as U+FFFD)


_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_COMMON_DELIMITERS = (",", ";", "\t", "|")


class FileRefused(ValueError):
    """The file as a whole cannot be used. `aspect` is what did not fit: delimiter, encoding,
    bom, header, completeness or line (one too long for a record); the message says it first."""

    def __init__(self, aspect: str, message: str) -> None:
        super().__init__(f"{aspect}: {message}")
        self.aspect = aspect


@dataclass(frozen=True)
class PartnerFile:
    """A parsed file: its rows as strings (columns in the mapping's spelling, extra columns as
    found, and `file_line`: the line each row came from), its bad lines and the dialect read.
    With `on_rows` the rows went there and `frame` holds only the columns."""

    frame: pd.DataFrame
    bad: list[BadLine]
    encoding: str
    delimiter: str
    bom: str | None  # the encoding whose byte-order mark was stripped
    data_lines: int  # lines after the header, bad ones included
    rows: int  # rows parsed (data_lines without the bad ones)
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


def _line_based(encoding: str) -> bool:
    """Whether line breaks and delimiters are the ASCII bytes (not so in UTF-16): only then can
    the bytes be cut at line breaks and an undecodable line be found on its own."""
    sample = '\r\n;,|\t"azAZ09'
    try:
        return sample.encode(encoding) == sample.encode("ascii")
    except UnicodeEncodeError:
        return False


def _strip_bom(head: bytes, encodings: Sequence[str], bom: str) -> tuple[int, list[str], str | None]:
    """The length of a byte-order mark at the start; it settles the encoding, which the mapping
    must accept."""
    accepted = {_codec(e) for e in encodings}
    if "utf-16" in accepted:
        accepted |= {"utf-16-le", "utf-16-be"}
    for mark, encoding in _BOMS:
        if not head.startswith(mark):
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
        return len(mark), [encoding], encoding
    return 0, list(encodings), None


def _blocks(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of the file cut after a line break (after \\n, or after a \\r the block
    does not end with, so a \\r\\n is never split); the last block as the file ends."""
    carry, offset = b"", f.tell()
    while data := f.read(BLOCK_BYTES):
        data = carry + data if carry else data
        cut = data.rfind(b"\n") + 1 or data.rfind(b"\r", 0, len(data) - 1) + 1
        if cut:
            yield offset, data[:cut]
            offset, carry = offset + cut, data[cut:]
        else:
            carry = data
        if len(carry) > LONGEST_LINE:
            raise FileRefused(
                "line",
                f"a line is longer than {LONGEST_LINE >> 20} MiB, which no file of records has "
                "(or the file has no line breaks); the partner must resend the file",
            )
    if carry:
        yield offset, carry


def _bad_lines(block: bytes, encoding: str) -> Iterator[tuple[int, bytes, UnicodeDecodeError | None]]:
    """(index, line with its break, error or None) of every line of a block."""
    for i, piece in enumerate(block.splitlines(keepends=True)):  # bytes split on \r\n, \n, \r only
        try:
            piece.decode(encoding)
        except UnicodeDecodeError as exc:
            yield i, piece, exc
        else:
            yield i, piece, None


def _choose_encoding(open_file, skip: int, encodings: list[str]) -> tuple[str, int, int]:
    """(encoding, its undecodable lines, an upper bound of the lines): the first encoding that
    decodes every block, else the one with the fewest bad lines (counted in a second read of
    only the blocks that failed). An encoding that is not line based cannot name bad lines: it
    is used only when it decodes everything."""
    failed: dict[str, list[tuple[int, int]]] = {e: [] for e in encodings}
    decoders = {e: codecs.getincrementaldecoder(e)() for e in encodings}
    line_based = {e: _line_based(e) for e in encodings}
    breaks = 0
    with open_file() as f:
        f.seek(skip)
        for offset, block in _blocks(f):
            breaks += block.count(b"\n") + block.count(b"\r")
            for e in encodings:
                try:
                    decoders[e].decode(block, final=line_based[e])
                except UnicodeDecodeError:
                    failed[e].append((offset, len(block)))
                    decoders[e] = codecs.getincrementaldecoder(e)()
        for e in encodings:
            try:
                decoders[e].decode(b"", final=True)
            except UnicodeDecodeError:
                failed[e].append((f.tell(), 0))
        for e in encodings:
            if not failed[e]:
                return e, 0, breaks + 1
        counts = []
        for e in encodings:
            if not line_based[e]:
                counts.append(None)
                continue
            bad = 0
            for offset, length in failed[e]:
                f.seek(offset)
                bad += sum(exc is not None for _, _, exc in _bad_lines(f.read(length), e))
            counts.append(bad)
    usable = [(n, i) for i, n in enumerate(counts) if n is not None]
    if not usable:
        raise FileRefused(
            "encoding",
            f"the file does not decode in any accepted encoding {encodings}: it is in another "
            "encoding (file.encoding)",
        )
    bad, i = min(usable)  # the first of equals
    return encodings[i], bad, breaks + 1


class _Decoded:
    """The file decoded in the chosen encoding, undecodable lines blanked, as pieces of whole
    lines with "\\n" line ends (what pyarrow takes a \\r\\n, \\n or \\r for); counts what the
    checks need on the way: line breaks, blank and bad lines, whether the last line has its break."""

    def __init__(self, f: BinaryIO, encoding: str, *, keep_bad: bool) -> None:
        self.encoding, self._keep_bad = encoding, keep_bad
        self._line_based = _line_based(encoding)
        self._decoder = codecs.getincrementaldecoder(encoding)()
        self._held = ""  # a final "\r" that may be the start of "\r\n" (encodings not line based)
        self._partial = ""  # the start of a line the next piece ends (encodings not line based)
        self._started = False
        self.breaks = 0  # line breaks decoded so far
        self.blanks = 0  # blank lines (blanked bad lines among them)
        self.bad: list[BadLine] = []  # undecodable lines (kept only with keep_bad)
        self.bad_count = 0
        self.first_bad: BadLine | None = None
        self.ends_with_break = True
        self._pieces = self._decode(f)
        self._after_header: list[tuple[int, str, list[int]]] = []

    def head(self) -> tuple[int, str | None]:
        """Decode up to the first line that is not blank (the header): (its index, its text, or
        None if there is none). The pieces after it are `rest()`."""
        text = ""
        for _, piece, _ in self._pieces:
            text += piece  # the header is in the first piece but for a header longer than a block
            rest = text.lstrip("\n")
            end = rest.find("\n")
            if end >= 0:
                at = len(text) - len(rest)
                if rest[end + 1 :]:
                    first = at + 2  # the header is line at + 1
                    self._after_header.append(
                        (first, rest[end + 1 :], self._blank_from(first, rest[end + 1 :]))
                    )
                return at, rest[:end]
        rest = text.lstrip("\n")
        return len(text) - len(rest), rest or None

    def rest(self) -> Iterator[tuple[int, str, list[int]]]:
        """(line number of its first line, text, numbers of its blank lines) of every piece."""
        yield from self._after_header
        yield from self._pieces

    def drain(self) -> None:
        for _ in self.rest():
            pass

    def data_lines(self) -> int:
        """Lines after the header, bad ones included (blanked, they count as blank)."""
        lines = self.breaks + (0 if self.ends_with_break else 1)
        return lines - 1 - self.blanks + self.bad_count

    def _decode(self, f: BinaryIO) -> Iterator[tuple[int, str, list[int]]]:
        for _, block in _blocks(f):
            try:
                text = self._decoder.decode(block, final=self._line_based)
            except UnicodeDecodeError:
                self._decoder = codecs.getincrementaldecoder(self.encoding)()
                text = self._blank_bad_lines(block)
            yield from self._take(text, final=False)
        yield from self._take(self._decoder.decode(b"", final=True), final=True)

    def _blank_bad_lines(self, block: bytes) -> str:
        first = self.breaks + len(self._held) + 1  # line based: no partial line is pending
        parts = []
        for i, piece, exc in _bad_lines(block, self.encoding):
            if exc is None:
                parts.append(piece.decode(self.encoding))
                continue
            body = piece.rstrip(b"\r\n")
            reason = f"not valid {self.encoding}: byte {piece[exc.start]:#04x}"
            self._bad(BadLine(first + i, reason, body.decode(self.encoding, "replace")))
            parts.append(piece[len(body) :].decode("ascii"))  # the line break alone: a blank line
        return "".join(parts)

    def _bad(self, line: BadLine) -> None:
        self.bad_count += 1
        self.first_bad = self.first_bad or line
        if self._keep_bad:
            self.bad.append(line)

    def _take(self, text: str, *, final: bool) -> Iterator[tuple[int, str, list[int]]]:
        text, self._held = self._held + text, ""
        if not final and text.endswith("\r"):
            text, self._held = text[:-1], "\r"
        if text and not self._started:
            text, self._started = text.removeprefix("\ufeff"), True  # a BOM-aware codec keeps none
        text = self._partial + text.replace("\r\n", "\n").replace("\r", "\n")
        cut = len(text) if final else text.rfind("\n") + 1
        piece, self._partial = text[:cut], text[cut:]
        if not piece:
            return
        first = self.breaks + 1
        blank = self._blank_from(first, piece)
        self.blanks += len(blank)
        self.breaks += piece.count("\n")
        self.ends_with_break = piece.endswith("\n")
        yield first, piece, blank

    @staticmethod
    def _blank_from(first: int, piece: str) -> list[int]:
        """Numbers of the blank lines of a piece of whole lines starting at line `first`."""
        blank = [first] if piece.startswith("\n") else []
        seen, counted = 0, 0
        at = piece.find("\n\n")
        while at >= 0:
            seen += piece.count("\n", counted, at + 1)
            counted = at + 1
            blank.append(first + seen)
            at = piece.find("\n\n", at + 1)
        return blank


def _opener(source: bytes | object) -> Callable[[], BinaryIO]:
    if isinstance(source, bytes | bytearray | memoryview):
        return lambda: io.BytesIO(source)
    return lambda: source.open("rb")


def read_partner_file(
    source: bytes | object,
    *,
    columns: Sequence[str],
    encodings: Sequence[str] = ("utf-8",),
    delimiters: Sequence[str] = (",",),
    bom: str = "strip",
    header_case: str = "insensitive",
    final_newline: str = "optional",
    expected_rows: int | None = None,
    max_undecodable_share: float = 1.0,
    on_rows: Callable[[pd.DataFrame], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> PartnerFile:
    """Parse a partner file in the declared dialect (see the module docstring).

    `source` is the file's bytes or a path (anything with `.open("rb")`: pathlib, Airflow's
    ObjectStoragePath). `columns` are the header names the mapping reads; `expected_rows` the
    data rows another source (the done-marker) says the file holds. More undecodable lines than
    `max_undecodable_share` refuse the file as being in another encoding. With `on_rows`, the
    rows are handed over in chunks of about `chunk_rows` (at least one chunk, maybe empty, so the
    columns are known) instead of being collected in `frame`. Raises FileRefused when the file
    does not fit; rows handed to `on_rows` before are then not to be used.
    """
    open_file = _opener(source)
    with open_file() as f:
        skip, encodings, bom_of = _strip_bom(f.read(4), encodings, bom)
    encoding, bad_total, most_lines = _choose_encoding(open_file, skip, encodings)
    # a file refused for its undecodable lines anyway need not keep them (they may be all lines)
    keep_bad = bad_total <= max_undecodable_share * most_lines
    frames: list[pd.DataFrame] = []
    with open_file() as f:
        f.seek(skip)
        stream = _Decoded(f, encoding, keep_bad=keep_bad)
        header_at, header = stream.head()
        if header is None:
            raise FileRefused("header", "the file is empty (no header line)")
        if stream.first_bad and stream.first_bad.line <= header_at + 1:
            raise FileRefused(
                "encoding", f"the header (line {stream.first_bad.line}) is {stream.first_bad.reason}"
            )
        refused, invalid = None, []
        try:
            names, delimiter, renamed = _match_header(header, columns, delimiters, header_case, encoding)
        except FileRefused as exc:  # said after the completeness checks, as they come first
            refused = exc
        if refused or not keep_bad:  # past the undecodable share whatever the rest: only counts matter
            stream.drain()
        else:
            invalid = _parse(stream.rest(), names, delimiter, on_rows or frames.append, chunk_rows)
    _check_complete(stream, final_newline, max_undecodable_share, expected_rows, encoding, encodings)
    if refused:
        raise refused
    bad = sorted(stream.bad + invalid, key=lambda b: b.line)
    wanted = set(columns)
    return PartnerFile(
        pd.concat(frames, ignore_index=True) if frames else _empty_frame(names),
        bad,
        encoding,
        delimiter,
        bom_of,
        stream.data_lines(),
        stream.data_lines() - len(bad),
        [n for n in names if n not in wanted],
        renamed,
    )


def _check_complete(
    stream: _Decoded,
    final_newline: str,
    max_undecodable_share: float,
    expected_rows: int | None,
    encoding: str,
    encodings: Sequence[str],
) -> None:
    if final_newline == "required" and not stream.ends_with_break:
        raise FileRefused(
            "completeness",
            f"the file does not end with a line break: its last line (line {stream.breaks + 1}) is cut "
            "off; the partner must resend the file",
        )
    data_lines, bad = stream.data_lines(), stream.bad_count
    if bad and bad > max_undecodable_share * data_lines:
        raise FileRefused(
            "encoding",
            f"{bad} of {data_lines} lines are not valid in any accepted encoding {list(encodings)} "
            f"(fewest with {encoding}): the file is in another encoding (file.encoding)",
        )
    if expected_rows is not None and data_lines != expected_rows:
        raise FileRefused(
            "completeness",
            f"the done-marker declares {expected_rows} rows but the file holds {data_lines} lines of "
            "data: it was cut off (or changed after the marker was written); the partner must resend it",
        )


def _header_names(line: str, delimiter: str) -> list[str]:
    return [name.strip() for name in next(csv.reader([line], delimiter=delimiter), [])]


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


def _parse(
    pieces: Iterator[tuple[int, str, list[int]]],
    names: list[str],
    delimiter: str,
    on_rows: Callable[[pd.DataFrame], None],
    chunk_rows: int,
) -> list[BadLine]:
    """Each piece of lines through pyarrow's reader, every column a string; the rows go to
    `on_rows` in chunks of about `chunk_rows`; returns the lines with the wrong field count.
    Blank lines are parsed too (rows of nulls, dropped here), so every line is a row and the
    row numbers are the file's line numbers. A piece at a time: pyarrow's streaming reader reads
    ahead in a thread of its own (dozens of MiB, measured)."""
    invalid: list[BadLine] = []
    first = 0

    def on_invalid(row: pacsv.InvalidRow) -> str:
        reason = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        invalid.append(BadLine(first + row.number - 1, reason, row.text))
        return "skip"

    parse = pacsv.ParseOptions(
        delimiter=delimiter,
        invalid_row_handler=on_invalid,
        newlines_in_values=False,
        ignore_empty_lines=False,
    )
    convert = pacsv.ConvertOptions(
        column_types=dict.fromkeys(names, pa.string()),
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    pending: list[pa.Table] = []
    numbers: list[np.ndarray] = []
    sent = 0
    for first, text, blank in pieces:
        data, known = text.encode("utf-8"), len(invalid)
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(  # single thread: rows numbered; one block: lines whole
                use_threads=False, block_size=len(data) + 1, column_names=names
            ),
            parse_options=parse,
            convert_options=convert,
        )
        lines = np.arange(first, first + text.count("\n") + (not text.endswith("\n")))
        rows = lines[~np.isin(lines, [b.line for b in invalid[known:]])]  # every line but the invalid
        if blank:
            keep = ~np.isin(rows, blank)
            table, rows = table.filter(pa.array(keep)), rows[keep]
        pending.append(table)
        numbers.append(rows)
        if sum(len(n) for n in numbers) >= chunk_rows:
            on_rows(_frame(pending, numbers, names))
            pending, numbers, sent = [], [], sent + 1
    if pending or not sent:
        on_rows(_frame(pending, numbers, names))
    return invalid


def _frame(tables: list[pa.Table], lines: list[np.ndarray], names: list[str]) -> pd.DataFrame:
    if not tables:
        return _empty_frame(names)
    table = pa.concat_tables(tables)
    if "file_line" not in names:
        numbers = pa.array(np.concatenate(lines), pa.int64()).cast(pa.string())
        table = table.add_column(0, "file_line", numbers)
    return table.to_pandas(types_mapper={pa.string(): pd.StringDtype()}.get)


def _empty_frame(names: list[str]) -> pd.DataFrame:
    columns = names if "file_line" in names else ["file_line", *names]
    return pd.DataFrame({c: pd.array([], dtype=pd.StringDtype()) for c in columns})
