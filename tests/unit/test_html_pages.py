"""The HTML pages people open escape hostile free text: a campaign title on the revenue page, a
partner file's column names in the quality report. Checked on the parsed page (no element or
attribute the page does not make itself, the text shown as it was written) and, for the revenue
page, in a real browser (no script runs, no image loads)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from mailsync.mapping.spec import load_mapping
from mailsync.quality.gate import QualityGate, QualityGateFailed
from mailsync.reporting import render_revenue_page
from mailsync.staging import Area
from tests.services import launch_chromium, require_chromium

SCRIPT = "<script>alert(1)</script>"
BREAKOUT = '"><img src=x onerror=alert(2)>'
QUOTED = "Tom & Jerry's 'sale' <b>"


class Page(HTMLParser):
    """The elements, attributes and text of an HTML page, as a browser's parser reads them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: set[str] = set()
        self.text: list[str] = []
        self.classes: list[tuple[str, str]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes |= {name for name, _ in attrs}
        self.classes += [(tag, value or "") for name, value in attrs if name == "class"]

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def shows(self, value: str) -> bool:
        return any(value in t for t in self.text)


def revenue_table(titles: list[str]) -> pd.DataFrame:
    """The shape of mailsync.shop.revenue.revenue_table's result, one row per title."""
    n = len(titles)
    return pd.DataFrame(
        {
            "day": [f"2026-11-{10 + i}" for i in range(n)],
            "campaign": [f"c{i}" for i in range(n)],
            "campaign_title": titles,
            "orders": list(range(1, n + 1)),
            "buyers": list(range(1, n + 1)),
            "revenue_eur": [100.0 * (i + 1) for i in range(n)],
            "conversion_rate": [0.0125] * n,
        }
    )


def revenue_page(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    table = revenue_table([SCRIPT, BREAKOUT, QUOTED, "Black Friday"])
    html = render_revenue_page(table, start="2026-10-21 00:00:00+00:00", end="2026-11-20 00:00:00+00:00")
    path = tmp_path / "revenue.html"
    path.write_text(html, encoding="utf-8")
    return table, path


def test_the_revenue_page_escapes_campaign_titles(tmp_path):
    table, path = revenue_page(tmp_path)
    html = path.read_text(encoding="utf-8")
    page = Page(html)
    assert "script" not in page.tags and "img" not in page.tags and "b" not in page.tags
    assert not {a for a in page.attributes if a.startswith("on")} and "src" not in page.attributes
    for title in (SCRIPT, BREAKOUT, QUOTED):
        assert page.shows(title)  # in the table, the bar's label and its tooltip
        assert title not in html  # only escaped
    assert page.classes.count(("rect", "bar")) == len(table)
    assert page.tags.count("tr") == len(table) + 1  # the header row and one per table row
    assert "link" not in page.tags and "http" not in " ".join(page.attributes)  # nothing from outside


def test_the_revenue_page_runs_no_hostile_title_in_a_real_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    require_chromium()
    table, path = revenue_page(tmp_path)
    dialogs: list[str] = []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page()
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(path.as_uri())
        assert page.locator("#revenue-chart rect.bar").count() == len(table)
        assert page.locator("#revenue-table tbody tr").count() == len(table)
        assert page.locator("script, img").count() == 0
        cells = page.locator("#revenue-table tbody td:nth-child(3)").all_inner_texts()
        browser.close()
    assert dialogs == []
    assert cells == [SCRIPT, BREAKOUT, QUOTED, "Black Friday"]


def test_the_quality_report_escapes_a_partner_files_column_names(tmp_path):
    from airflow.sdk import ObjectStoragePath

    area = Area(ObjectStoragePath(tmp_path.as_uri()) / "quality")
    raw = pd.DataFrame(
        {
            "customer_id": ["C1"],
            "points": ["1"],
            "member_since": ["01.01.2020"],
            SCRIPT: ["G"],
            BREAKOUT: ["y"],
        }
    )  # tier_code is missing: the failure names the columns that came instead
    gate = QualityGate(load_mapping("crm_to_esp_contacts"), "loyalty", area, label=QUOTED)
    with pytest.raises(QualityGateFailed, match="columns not in the mapping"):
        gate.validate(raw, row_offset=0)
    html = area.read_text("report.html")
    page = Page(html)
    assert "script" not in page.tags and "img" not in page.tags and "b" not in page.tags
    assert not {a for a in page.attributes if a.startswith("on")} and "src" not in page.attributes
    assert SCRIPT not in html and BREAKOUT not in html and QUOTED not in html
    assert page.shows(QUOTED)  # the run's label
    failure = next(t for t in page.text if "columns not in the mapping" in t)
    assert SCRIPT in failure and BREAKOUT in failure  # named as they are, shown as text
    assert ("span", "bad") in page.classes  # the verdict is the page's own markup
