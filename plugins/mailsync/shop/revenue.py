"""The revenue report: revenue, orders, buyers and conversion rate per campaign and order day,
as a CSV for people and an HTML page (chart and table)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from mailsync.operators.run import Run

UNATTRIBUTED = "(unattributed)"


def revenue_table(orders: pd.DataFrame, campaigns: pd.DataFrame, start, end) -> pd.DataFrame:
    """Revenue, orders, buyers and conversion rate per campaign and order day in [start, end)."""
    created = orders["created_at"].dt.tz_convert("UTC")
    window = orders[((created >= start) & (created < end)).to_numpy() & orders["counted"].to_numpy()].copy()
    window["day"] = window["created_at"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%d")
    window["campaign"] = window["campaign_id"].fillna(UNATTRIBUTED)
    g = window.groupby(["day", "campaign"], sort=True)
    table = pd.DataFrame(
        {
            "orders": g["id"].count(),
            "buyers": g["email"].nunique(),
            "revenue_eur": g["net_reporting"].sum().round(2),
        }
    )
    native = window.pivot_table(
        index=["day", "campaign"], columns="currency", values="net_total", aggfunc="sum"
    )
    table = table.join(native.round(2).add_prefix("revenue_native_")).reset_index()
    info = campaigns.set_index("campaign_id")
    table["campaign_title"] = table["campaign"].map(info["title"]).fillna("")
    sent = pd.to_numeric(table["campaign"].map(info["emails_sent"]), errors="coerce")
    table["conversion_rate"] = (table["orders"] / sent).where(sent > 0).round(6)
    first = ["day", "campaign", "campaign_title", "orders", "buyers", "revenue_eur", "conversion_rate"]
    return table[first + [c for c in table.columns if c not in first]]


def revenue_report(run: Run, orders: pd.DataFrame, campaigns: pd.DataFrame, *, days: int) -> dict[str, Any]:
    """The table of the `days` before the interval end, written to the run's `report/` folder
    (`revenue_by_campaign_day.csv`, `revenue.html`: the task's Revenue report link)."""
    from mailsync.reporting import csv_for_people, render_revenue_page

    start = run.end - timedelta(days=days)
    table = revenue_table(orders, campaigns, start, run.end)
    out = run.area / "report"
    csv_path = out.write_text("revenue_by_campaign_day.csv", csv_for_people(table))
    html_path = out.write_text("revenue.html", render_revenue_page(table, start=start, end=run.end))
    return {
        "revenue_eur": float(table["revenue_eur"].sum()) if len(table) else 0.0,
        "revenue_csv": str(csv_path),
        "revenue_html": str(html_path),
    }
