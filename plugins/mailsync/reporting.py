"""Files for people: CSV that spreadsheets cannot abuse, and the revenue page analysts open (a
bar chart and the table, in one self-contained HTML file).

No JavaScript, no CDN: an inline SVG chart renders offline and in any browser, and every value
shown is escaped (campaign titles are free text).
"""

from __future__ import annotations

import re
from html import escape

import numpy as np
import pandas as pd

# A spreadsheet runs a cell as a formula when it starts with one of these (the full-width forms
# too, in East Asian locales). A cell is also split again by whatever delimiter the spreadsheet
# guesses, so every segment after , ; | or tab is checked, past leading spaces and quotes.
_FORMULA = "=+\\-@\uff1d\uff0b\uff0d\uff20"
_SEGMENT_START = '(^|[,;|\t])([ "]*)'
_DEFUSE_PY = re.compile(_SEGMENT_START + f"([{_FORMULA}])")
_DEFUSE_RE2 = _SEGMENT_START + r"([=+\-@\x{FF1D}\x{FF0B}\x{FF0D}\x{FF20}])"
# Never raw in a file for people: C0 and C1 controls, DEL, and the bidirectional overrides that
# make a cell display other text than it holds. C0 and DEL become their visible Unicode control
# pictures (NUL -> U+2400), the others a <U+XXXX> mark.
_VISIBLE = {c: chr(0x2400 + c) for c in range(0x20)} | {0x7F: "\u2421"}
_VISIBLE |= {c: f"<U+{c:04X}>" for c in (*range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
_UNSAFE_RE2 = r"[\x00-\x1f\x7f-\x9f\x{202A}-\x{202E}\x{2066}-\x{2069}]"


def safe_cell(value: str) -> str:
    """One cell made safe for any spreadsheet: control characters shown, not kept, and every
    segment that would start a formula (`x;=HYPERLINK(...)`) defused with a leading quote."""
    return _DEFUSE_PY.sub(r"\1\2'\3", str(value)).translate(_VISIBLE)


def defuse(values: pd.Series) -> pd.Series:
    """`safe_cell` for a whole column, with Arrow string kernels (nulls stay null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = values if isinstance(values.dtype, pd.StringDtype) else values.astype("string")
    arr = pa.array(text, type=pa.large_string(), from_pandas=True)
    arr = pc.replace_substring_regex(arr, _DEFUSE_RE2, r"\1\2'\3")
    unsafe = np.flatnonzero(pc.fill_null(pc.match_substring_regex(arr, _UNSAFE_RE2), False))
    if len(unsafe):  # rare: translate just those cells
        cells = arr.to_pylist()
        for i in unsafe:
            cells[i] = cells[i].translate(_VISIBLE)
        arr = pa.array(cells, type=pa.large_string())
    return pd.Series(pd.arrays.ArrowStringArray(arr), index=values.index)


def _inert(dtype) -> bool:
    """Columns whose CSV text cannot hold a formula or a control character."""
    return pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype)


def csv_for_people(frame: pd.DataFrame, *, header: bool = True) -> str:
    """CSV of a frame for files people open in spreadsheets (quarantine, rejected records,
    reports): every text cell and every column name goes through `defuse`, so the file is safe
    whatever delimiter the spreadsheet splits on."""
    safe = frame.copy()
    for column in safe.columns:
        if not _inert(safe[column].dtype):
            safe[column] = defuse(safe[column])
    safe.columns = defuse(pd.Series([str(c) for c in safe.columns])).tolist()
    return safe.to_csv(index=False, header=header)


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0} td,th{border:1px solid #ccc;padding:.3em .6em}
th{background:#f3f3f3;text-align:left} td.n{text-align:right} svg text{font:12px system-ui,sans-serif}
"""


def _chart(per_campaign: pd.Series) -> str:
    """Horizontal bars, one per campaign, length proportional to revenue."""
    if per_campaign.empty:
        empty = '<text x="0" y="20">No revenue in this window</text>'
        return f'<svg id="revenue-chart" width="600" height="40">{empty}</svg>'
    top = float(per_campaign.max()) or 1.0
    bar_h, gap, label_w, width = 22, 8, 260, 360
    rows = []
    for i, (label, value) in enumerate(per_campaign.items()):
        y = i * (bar_h + gap)
        w = max(1, int(width * float(value) / top))
        rows.append(
            f'<text x="0" y="{y + 15}">{escape(str(label))[:40]}</text>'
            f'<rect class="bar" x="{label_w}" y="{y}" width="{w}" height="{bar_h}" fill="#2f6db5">'
            f"<title>{escape(str(label))}: {value:,.2f} EUR</title></rect>"
            f'<text x="{label_w + w + 6}" y="{y + 15}">{value:,.2f}</text>'
        )
    height = len(per_campaign) * (bar_h + gap)
    return (
        f'<svg id="revenue-chart" role="img" aria-label="Revenue per campaign" '
        f'width="{label_w + width + 120}" height="{height}">{"".join(rows)}</svg>'
    )


def render_revenue_page(table: pd.DataFrame, *, start, end) -> str:
    label = table["campaign_title"].where(table["campaign_title"].astype(bool), table["campaign"])
    per_campaign = (
        table.assign(label=label).groupby("label")["revenue_eur"].sum().sort_values(ascending=False)
    )
    columns = list(table.columns)
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{v:,.4f}</td>'
            if isinstance(v, float) and c == "conversion_rate"
            else f'<td class="n">{v:,.2f}</td>'
            if isinstance(v, float)
            else f"<td>{escape('' if pd.isna(v) else str(v))}</td>"
            for c, v in ((c, row[c]) for c in columns)
        )
        + "</tr>"
        for _, row in table.iterrows()
    )
    total = float(table["revenue_eur"].sum()) if len(table) else 0.0
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Revenue per campaign</title><style>{_STYLE}</style></head>
<body><h1>Revenue per campaign</h1>
<p>Orders created from {escape(str(start))} to {escape(str(end))} (UTC); net of refunds, cancelled and voided
orders excluded; amounts in EUR at the day's rate. Total: <strong>{total:,.2f} EUR</strong>.</p>
{_chart(per_campaign)}
<table id="revenue-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p>conversion_rate = attributed orders / emails sent by the campaign.</p>
</body></html>
"""
