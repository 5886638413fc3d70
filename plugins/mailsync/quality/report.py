"""A self-contained HTML page of a quality gate's outcome, for analysts.

GX's own Data Docs load CSS and JS from public CDNs (unstyled offline, several MB per run);
this page (templates/quality_report.html, a Jinja template with autoescape) has no external
resource and escapes every value it shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailsync.templates import render

if TYPE_CHECKING:
    from mailsync.quality.gate import GateSummary


def render_report(s: GateSummary) -> str:
    """The report page; its quarantine link is relative (the file sits in the page's folder)."""
    quarantine = s.quarantine.rsplit("/", 1)[-1] if s.quarantine else ""
    return render("quality_report.html", s=s, quarantine=quarantine)
