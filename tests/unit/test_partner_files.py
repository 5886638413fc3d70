"""The partner file reader (mailsync.files): dialects, bad lines, completeness, on small bytes."""

from __future__ import annotations

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
