"""A self-contained HTML page of a quality gate's outcome, for analysts.

GX's own Data Docs load CSS and JS from public CDNs (unstyled offline, several MB per run);
this page has no external resource and escapes every value it shows.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailsync.quality.gate import GateSummary

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em} table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left} th{background:#f3f3f3}
.ok{color:#176f2c;font-weight:600} .bad{color:#b00020;font-weight:600}
"""


def _verdict(ok: bool) -> str:
    return '<span class="ok">passed</span>' if ok else '<span class="bad">failed</span>'


def render_report(s: GateSummary) -> str:
    e = escape
    rows = [
        ("Mapping / source", f"{s.mapping} / {s.source}"),
        ("Run", s.label),
        ("Rows in", f"{s.rows_in:,}"),
        ("Rows passed on", f"{s.rows_good:,}"),
        ("Rows quarantined", f"{s.rows_quarantined:,} ({s.bad_share:.2%}; threshold {s.threshold:.2%})"),
    ]
    summary = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    summary += f"<tr><th>Outcome</th><td>{_verdict(s.passed)}</td></tr>"
    dataset = "".join(
        f"<tr><td>{e(c.name)}</td><td>{e(c.expectation)}</td><td>{e(c.column or '')}</td>"
        f"<td>{_verdict(c.success)}</td><td>{e(c.detail)}</td></tr>"
        for c in s.checks
        if c.level == "dataset"
    )
    row_level = "".join(
        f"<tr><td>{e(c.name)}</td><td>{e(c.column or '')}</td><td>{e(c.expectation)}</td>"
        f"<td>{c.unexpected:,}</td><td>{e(', '.join(map(str, c.examples)))}</td><td>{e(c.detail)}</td></tr>"
        for c in s.checks
        if c.level == "row"
    )
    failures = (
        "<h2>Why the run failed</h2><ul>" + "".join(f"<li>{e(f)}</li>" for f in s.failures) + "</ul>"
        if s.failures
        else ""
    )
    quarantine = s.quarantine.rsplit("/", 1)[-1] if s.quarantine else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Quality report {e(s.mapping)}.{e(s.source)}</title>
<style>{_STYLE}</style></head><body>
<h1>Data quality: {e(s.mapping)} / {e(s.source)}</h1>
<table>{summary}</table>
{failures}
<h2>Dataset-level checks</h2>
<table><tr><th>Check</th><th>Expectation</th><th>Column</th><th>Result</th><th>Detail</th></tr>{dataset}</table>
<h2>Row-level checks (failing rows are quarantined)</h2>
<table><tr><th>Reason</th><th>Column</th><th>Expectation</th><th>Rows</th>
<th>Example rows</th><th>Detail</th></tr>
{row_level}</table>
<p>Quarantined rows, each with its reasons: <a href="{e(quarantine)}">{e(quarantine or "none")}</a>
(same folder as this page; the <code>row</code> column is the row's position in the extract).</p>
<p>Checks run with Great Expectations; rules come from include/mappings/{e(s.mapping)}.yaml.</p>
</body></html>
"""
