"""Files for people: CSV that spreadsheets cannot abuse, and the revenue page analysts open (a
bar chart and the table, in one self-contained HTML file).

No JavaScript, no CDN: an inline SVG chart renders offline and in any browser; the page is a
Jinja template with autoescape (templates/revenue.html), so every value shown is escaped
(campaign titles are free text).
"""

from __future__ import annotations

import re
from typing import Any

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


# the bar chart's geometry, in px
BAR_HEIGHT, BAR_GAP, LABEL_WIDTH, BAR_WIDTH, VALUE_WIDTH = 22, 8, 260, 360, 120


def _chart(per_campaign: pd.Series) -> dict[str, Any]:
    """Horizontal bars, one per campaign, length proportional to revenue (at least 1 px)."""
    top = (float(per_campaign.max()) if len(per_campaign) else 0.0) or 1.0
    bars = [
        {"label": str(label), "value": float(value), "y": i * (BAR_HEIGHT + BAR_GAP),
         "width": max(1, int(BAR_WIDTH * float(value) / top))}
        for i, (label, value) in enumerate(per_campaign.items())
    ]  # fmt: skip
    return {
        "bars": bars,
        "bar_height": BAR_HEIGHT,
        "label_width": LABEL_WIDTH,
        "width": LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH,
        "height": len(bars) * (BAR_HEIGHT + BAR_GAP),
    }


def _cell(column: str, value: Any) -> dict[str, Any]:
    """One table cell: amounts with 2 decimals (the conversion rate with 4), right-aligned."""
    if isinstance(value, float):
        return {"text": format(value, ",.4f" if column == "conversion_rate" else ",.2f"), "number": True}
    return {"text": "" if pd.isna(value) else str(value), "number": False}


def render_revenue_page(table: pd.DataFrame, *, start, end) -> str:
    """The revenue page (templates/revenue.html): a bar per campaign (its title, else its id) and
    the table of revenue per campaign and day."""
    from mailsync.templates import render

    label = table["campaign_title"].where(table["campaign_title"].astype(bool), table["campaign"])
    per_campaign = (
        table.assign(label=label).groupby("label")["revenue_eur"].sum().sort_values(ascending=False)
    )
    columns = [str(c) for c in table.columns]
    rows = [[_cell(c, v) for c, v in zip(columns, row, strict=True)] for row in table.itertuples(index=False)]
    return render(
        "revenue.html",
        start=start,
        end=end,
        total=float(table["revenue_eur"].sum()) if len(table) else 0.0,
        chart=_chart(per_campaign),
        columns=columns,
        rows=rows,
    )
