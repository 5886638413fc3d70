"""Files for people: CSV that spreadsheets cannot abuse, and the revenue page analysts open (a
bar chart and the table, in one self-contained HTML file).

No JavaScript, no CDN: an inline SVG chart renders offline and in any browser, and every value
shown is escaped (campaign titles are free text).
"""

from __future__ import annotations

from html import escape

import pandas as pd

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: str) -> str:
    """A cell a spreadsheet would run as a formula (`=HYPERLINK(...)`) is defused with a quote."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def csv_for_people(frame: pd.DataFrame) -> str:
    """CSV of a frame whose text cells are defused (files analysts open in spreadsheets)."""
    safe = frame.copy()
    for column in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[column]):
            safe[column] = safe[column].map(lambda v: v if pd.isna(v) else safe_cell(str(v)))
    return safe.to_csv(index=False)


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
