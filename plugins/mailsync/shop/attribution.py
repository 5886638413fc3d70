"""Which ESP campaign an order came from, first rule that applies (the orders mapping's
description): `mc_cid` in the landing URL, `utm_campaign` matching a campaign title, the buyer's
last campaign click within the attribution window, else unattributed (counted, never dropped)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from mailsync.hooks.esp import EspHook
    from mailsync.mapping.spec import Mapping

CAMPAIGN_DAYS = 90  # campaigns sent this long before the interval end can be attributed
CLICK_DAYS = 60  # clicks read this long before the interval end (more than any window)
DEFAULT_WINDOW_DAYS = 7


def window(mapping: Mapping) -> timedelta:
    """The last-click window of the orders mapping (`attribution.window_days`)."""
    return timedelta(days=mapping.attribution.window_days if mapping.attribution else DEFAULT_WINDOW_DAYS)


def campaigns(hook: EspHook, end: datetime, *, days: int = CAMPAIGN_DAYS) -> pd.DataFrame:
    """Campaigns sent in the `days` before `end`: id, title, emails sent (attribution and rates)."""
    rows = [
        {
            "campaign_id": c["id"],
            "title": (c.get("settings") or {}).get("title") or "",
            "emails_sent": int(c.get("emails_sent") or 0),
        }
        for page in hook.iter_campaigns(
            since_send_time=(end - timedelta(days=days)).isoformat(), before_send_time=end.isoformat()
        )
        for c in page
    ]
    return pd.DataFrame(rows, columns=["campaign_id", "title", "emails_sent"])


def squash(text: pd.Series) -> pd.Series:
    """Lower-case letters and digits only: how a utm_campaign value meets a campaign title."""
    return text.fillna("").str.lower().str.replace(r"[^0-9a-z]+", "", regex=True)


def attribute(
    orders: pd.DataFrame, campaigns: pd.DataFrame, clicks: pd.DataFrame, window: timedelta
) -> pd.DataFrame:
    """Add campaign_id and the rule that found it. An order attributed before keeps its
    campaign; only unattributed ones are looked at again."""
    out = orders.copy()
    known = set(campaigns["campaign_id"])
    sites = out["landing_site"].fillna("") + " " + out["referring_site"].fillna("")
    by_mc_cid = sites.str.extract(r"[?&]mc_cid=([0-9A-Za-z]+)", expand=False)
    by_mc_cid = by_mc_cid.where(by_mc_cid.isin(known))
    utm = sites.str.extract(r"[?&]utm_campaign=([^&#\s]+)", expand=False)
    slug_to_id = dict(zip(squash(campaigns["title"]), campaigns["campaign_id"], strict=True))
    by_utm = squash(utm).map(slug_to_id).where(utm.notna())
    by_click = last_click(out, clicks, window)
    found = by_mc_cid.fillna(by_utm).fillna(by_click).astype("string")
    rule = pd.Series("unattributed", index=out.index, dtype="string")
    rule[by_click.notna().to_numpy()] = "last_click"
    rule[by_utm.notna().to_numpy()] = "utm_campaign"
    rule[by_mc_cid.notna().to_numpy()] = "mc_cid"
    kept = (
        out["rule"].notna() & out["rule"].ne("unattributed")
        if "rule" in out
        else pd.Series(False, index=out.index)
    )
    out["campaign_id"] = out["campaign_id"].where(kept, found) if "campaign_id" in out else found
    out["rule"] = out["rule"].where(kept, rule) if "rule" in out else rule
    return out


def last_click(orders: pd.DataFrame, clicks: pd.DataFrame, window: timedelta) -> pd.Series:
    """The campaign of each order's buyer's last click at or before the order, within `window`."""
    if orders.empty or clicks.empty:
        return pd.Series(pd.NA, index=orders.index, dtype="string")
    left = orders[["email", "created_at"]].reset_index().sort_values("created_at")
    right = clicks.rename(columns={"clicked_at": "created_at"}).sort_values("created_at")
    right["created_at"] = right["created_at"].astype(left["created_at"].dtype)
    right["email"] = right["email"].astype(left["email"].dtype)
    hit = pd.merge_asof(
        left,
        right,
        on="created_at",
        by="email",
        direction="backward",
        tolerance=pd.Timedelta(window),
        allow_exact_matches=True,
    )
    return hit.set_index("index")["campaign_id"].reindex(orders.index).astype("string")
