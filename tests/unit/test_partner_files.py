"""The partner file reader (mailsync.files): dialects, bad lines, completeness, on small bytes."""

from __future__ import annotations

import pandas as pd
import pytest

from mailsync.files import FileRefused, read_partner_file

COLUMNS = ["customer_id", "tier_code", "points"]
LOYALTY = {"encodings": ["utf-8", "cp1252"], "delimiters": [";", ","]}  # as the loyalty mapping says
ROWS = ["C0000001;G;120;Jürgen", "C0000002;s;7;Zoë"]


def cp1252(*lines: str, end: str = "\r\n") -> bytes:
    return end.join(lines).encode("cp1252") + end.encode()


def rows(parsed) -> list[dict]:
    """Extra columns keep the header's spelling: compare them in lower case."""
    return parsed.frame.rename(columns=str.lower)[["file_line", *COLUMNS, "name"]].to_dict("records")


EXPECTED = [
    {"file_line": "2", "customer_id": "C0000001", "tier_code": "G", "points": "120", "name": "Jürgen"},
    {"file_line": "3", "customer_id": "C0000002", "tier_code": "s", "points": "7", "name": "Zoë"},
]


def test_the_partners_own_dialect():
    parsed = read_partner_file(cp1252("customer_id;tier_code;points;name", *ROWS), columns=COLUMNS, **LOYALTY)
    assert rows(parsed) == EXPECTED and parsed.bad == []
    assert (parsed.encoding, parsed.delimiter, parsed.bom, parsed.data_lines) == ("cp1252", ";", None, 2)
    assert parsed.extra_columns == ["name"] and parsed.renamed == {}


@pytest.mark.parametrize(
    "data",
    [
        # another export tool: UTF-8 with a BOM, commas, the header in upper case and another order
        b"\xef\xbb\xbf"
        + "POINTS,Customer_ID,NAME,TIER_CODE\n120,C0000001,Jürgen,G\n7,C0000002,Zoë,s\n".encode(),
        # UTF-8 without a BOM, quoted fields, LF only
        '"customer_id";"tier_code";"points";"name"\nC0000001;G;"120";Jürgen\nC0000002;s;7;"Zoë"\n'.encode(),
        # blank lines and old Mac line ends; one header name padded
        cp1252("", "customer_id ;tier_code;points;name", "", *ROWS, end="\r"),
    ],
    ids=["utf8-bom-comma-upper-reordered", "utf8-quoted-lf", "cr-and-blank-lines"],
)
def test_other_dialects_the_mapping_allows_are_read_right(data):
    parsed = read_partner_file(data, columns=COLUMNS, **LOYALTY)
    got = [{k: v for k, v in r.items() if k != "file_line"} for r in rows(parsed)]
    assert got == [{k: v for k, v in r.items() if k != "file_line"} for r in EXPECTED] and parsed.bad == []
    assert set(COLUMNS) <= set(parsed.frame.columns)  # in the mapping's spelling


def test_line_numbers_count_blank_lines_and_a_bom_strips():
    data = b"\xef\xbb\xbf" + "customer_id;tier_code;points;name\r\n\r\nC0000001;G;120;Jürgen\r\n".encode()
    parsed = read_partner_file(data, columns=COLUMNS, **LOYALTY)
    assert parsed.bom == "utf-8" and parsed.frame["file_line"].tolist() == ["3"]
    assert parsed.dialect()["bom"] == "utf-8"


def test_bad_lines_are_reported_with_line_number_and_reason():
    data = cp1252(
        "customer_id;tier_code;points;name", ROWS[0], "C0000003;G;1", ROWS[1], "C0000004;B;2;x;EXTRA"
    )
    data = data.replace(b"C0000002;s;7;Zo\xeb", b"C0000002;s;7;Zo\x81")  # a byte cp1252 cannot decode
    parsed = read_partner_file(data, columns=COLUMNS, **LOYALTY)
    assert parsed.encoding == "cp1252" and parsed.data_lines == 4
    assert [(b.line, b.reason) for b in parsed.bad] == [
        (3, "expected 4 fields, found 3"),
        (4, "not valid cp1252: byte 0x81"),
        (5, "expected 4 fields, found 5"),
    ]
    assert parsed.bad[0].text == "C0000003;G;1" and parsed.bad[1].text.startswith("C0000002;s;7;Zo")
    assert parsed.frame["file_line"].tolist() == ["2"]


@pytest.mark.parametrize(
    ("data", "options", "aspect", "words"),
    [
        (
            b"customer_id,tier_code,points\nC1,G,1\n",
            {"delimiters": [";"]},
            "delimiter",
            ["declared delimiter ';'", "','-separated"],
        ),
        (
            b"\xef\xbb\xbfcustomer_id;tier_code;points\nC1;G;1\n",
            {"encodings": ["cp1252"]},
            "bom",
            ["UTF-8 byte-order mark", "not among the accepted encodings ['cp1252']"],
        ),
        (b"\xef\xbb\xbfcustomer_id;tier_code;points\nC1;G;1\n", {"bom": "refuse"}, "bom", ["refuses"]),
        (
            b"CUSTOMER_ID;TIER_CODE;POINTS\nC1;G;1\n",
            {"header_case": "exact"},
            "header",
            ["only in case", "CUSTOMER_ID"],
        ),
        (
            b"customer_id;tier;points;region\nC1;G;1;EU\n",
            {},
            "header",
            ["missing column(s) ['tier_code']", "not in the mapping: ['tier', 'region']", "delimiter ';'"],
        ),
        (
            "customer_id;tier_code;points\nC1;G;1\nC2;Ö;1\nC3;Ä;1\n".encode("cp1252"),
            {"encodings": ["utf-8"], "max_undecodable_share": 0.2},
            "encoding",
            ["2 of 3 lines are not valid", "['utf-8']"],
        ),
        (
            b"customer_id;tier_code;points\nC1;G;1\nC2;S;",
            {"final_newline": "required"},
            "completeness",
            ["line 3"],
        ),
        (
            b"customer_id;tier_code;points\nC1;G;1\n",
            {"expected_rows": 2},
            "completeness",
            ["declares 2 rows"],
        ),
        (b"", {}, "header", ["empty"]),
        (b"customer_id;tier_code;points;Points\n", {}, "header", ["['Points', 'points']", "more than once"]),
    ],
    ids=[
        "delimiter",
        "bom-not-accepted",
        "bom-refused",
        "header-case",
        "header-drift",
        "encoding",
        "cut",
        "count",
        "empty",
        "duplicate",
    ],
)
def test_a_file_in_a_dialect_the_mapping_does_not_allow_is_refused_saying_why(data, options, aspect, words):
    with pytest.raises(FileRefused) as refused:
        read_partner_file(data, columns=COLUMNS, **{**LOYALTY, **options})
    message = str(refused.value)
    assert refused.value.aspect == aspect and message.startswith(f"{aspect}: ")
    assert all(w in message for w in words), message
    assert "\n" not in message and "C1" not in message  # one line, none of the file's data


def test_a_complete_file_passes_the_completeness_checks():
    data = cp1252("customer_id;tier_code;points;name", *ROWS)
    parsed = read_partner_file(data, columns=COLUMNS, final_newline="required", expected_rows=2, **LOYALTY)
    assert len(parsed.frame) == 2
    header_only = read_partner_file(
        b"customer_id;tier_code;points\r\n", columns=COLUMNS, expected_rows=0, **LOYALTY
    )
    assert header_only.frame.empty and header_only.data_lines == 0


# -- streaming: the file is read a block at a time (small blocks here, to cross many block edges)


@pytest.fixture
def small_blocks(monkeypatch):
    from mailsync import files

    monkeypatch.setattr(files, "BLOCK_BYTES", 64)


def test_a_legacy_byte_only_in_the_last_block_is_found_and_the_encodings_tried_in_order(small_blocks):
    head = ["customer_id;tier_code;points;name"] + [f"C{i:07d};G;{i};plain" for i in range(40)]
    data = cp1252(*head, "C0000099;S;1;Zoë")  # ASCII until the last line: the head alone says utf-8
    parsed = read_partner_file(data, columns=COLUMNS, **LOYALTY)
    assert parsed.encoding == "cp1252" and parsed.bad == [] and parsed.rows == 41
    assert parsed.frame["name"].iloc[-1] == "Zoë" and parsed.frame["file_line"].iloc[-1] == "42"
    only_utf8 = read_partner_file(data, columns=COLUMNS, encodings=["utf-8"], delimiters=[";"])
    assert [(b.line, b.reason) for b in only_utf8.bad] == [(42, "not valid utf-8: byte 0xeb")]


def test_chunks_from_a_path_are_the_rows_read_from_bytes(small_blocks, tmp_path):
    lines = ["customer_id;tier_code;points;name"]
    for i in range(60):  # blank lines, short rows and undecodable bytes across block edges
        lines.append("" if i % 7 == 3 else f"C{i:07d};G" if i % 11 == 5 else f"C{i:07d};S;{i};Zoë")
    data = cp1252(*lines).replace(b"C0000020;S;20;Zo\xeb", b"C0000020;S;20;Zo\x81")
    path = tmp_path / "loyalty.csv"
    path.write_bytes(data)
    chunks = []
    streamed = read_partner_file(path, columns=COLUMNS, on_rows=chunks.append, chunk_rows=10, **LOYALTY)
    whole = read_partner_file(data, columns=COLUMNS, **LOYALTY)
    assert (
        len(chunks) > 3 and streamed.frame.empty and list(streamed.frame.columns) == list(whole.frame.columns)
    )
    assert pd.concat(chunks, ignore_index=True).equals(whole.frame)
    assert streamed.bad == whole.bad and streamed.rows == whole.rows == len(whole.frame)
    assert [b.line for b in whole.bad] == [7, 18, 22, 29, 51] and whole.data_lines == 60 - 9  # 9 blank
    assert "5" not in set(whole.frame["file_line"]) and whole.frame["file_line"].iloc[0] == "2"


def test_a_line_too_long_for_a_record_refuses_the_file(small_blocks, monkeypatch):
    from mailsync import files

    monkeypatch.setattr(files, "LONGEST_LINE", 150)
    data = cp1252("customer_id;tier_code;points", "C1;G;" + "1" * 200, "C2;G;1")
    with pytest.raises(FileRefused) as refused:
        read_partner_file(data, columns=COLUMNS, **LOYALTY)
    assert refused.value.aspect == "line" and "C1" not in str(refused.value)


def test_a_header_without_a_line_break_is_a_file_without_rows():
    parsed = read_partner_file(b"customer_id;tier_code;points", columns=COLUMNS, **LOYALTY)
    assert parsed.frame.empty and parsed.rows == parsed.data_lines == 0
    with pytest.raises(FileRefused, match="completeness: the file does not end with a line break"):
        read_partner_file(
            b"customer_id;tier_code;points", columns=COLUMNS, final_newline="required", **LOYALTY
        )


def test_memory_does_not_grow_with_the_file(tmp_path):
    """A file 4x as large needs no more memory (Python allocations, traced; about 9 MB either way):
    the old reader held the bytes, the decoded text and its lines, several times the file."""
    import tracemalloc

    def peak(rows: int) -> int:
        path = tmp_path / f"{rows}.csv"
        body = "".join(f"C{i:07d};{'BSGP'[i % 4]};{i % 999};Jürgen Mußtermann {i}\r\n" for i in range(rows))
        path.write_bytes(("customer_id;tier_code;points;name\r\n" + body).encode("cp1252"))
        ignore = lambda frame: None  # noqa: E731
        tracemalloc.start()
        try:
            parsed = read_partner_file(path, columns=COLUMNS, on_rows=ignore, chunk_rows=10_000, **LOYALTY)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert parsed.rows == rows and parsed.encoding == "cp1252"

    small, large = peak(100_000), peak(400_000)  # about 4 MB and 16 MB
    assert large < small + (1 << 19), (small, large)
