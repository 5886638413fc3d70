"""The interval's campaign activity from the ESP: opens, clicks, bounces and unsubscribes of
every campaign sent within the look-back, staged as Parquet chunks for the quality gate."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mailsync.operators.staged import stage_pages

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mailsync.hooks.esp import EspHook
    from mailsync.operators.run import Run
    from mailsync.staging import Area

log = logging.getLogger(__name__)
EVENT_COLUMNS = ["campaign_id", "email_address", "action", "type", "timestamp", "url"]


def parse_moment(ts: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")) if ts else None
    except ValueError:
        return None


def within(run: Run, events: list[dict]) -> list[dict]:
    """Events in [start, end); unparseable timestamps are kept for the quality gate to quarantine."""
    kept = []
    for e in events:
        moment = parse_moment(e.get("timestamp"))
        if moment is None or run.start <= moment < run.end:
            kept.append(e)
    return kept


def recent_campaigns(hook: EspHook, run: Run, lookback_days: int) -> list[str]:
    """Ids of the campaigns sent from `lookback_days` before the interval to its end."""
    since = run.start - timedelta(days=lookback_days)
    pages = hook.iter_campaigns(since_send_time=since.isoformat(), before_send_time=run.end.isoformat())
    return [c["id"] for page in pages for c in page]


def events(hook: EspHook, run: Run, campaigns: list[str]) -> Iterator[list[dict]]:
    """Pages of the interval's events of each campaign (activity, then unsubscribes)."""
    for campaign in campaigns:
        for page in hook.iter_email_activity(campaign, since=run.start.isoformat()):
            yield within(run, page)
        for page in hook.iter_unsubscribes(campaign):
            yield within(run, page)


def extract(run: Run, hook: EspHook, out: Area, *, lookback_days: int) -> dict[str, Any]:
    """Stage the interval's opens, clicks, bounces and unsubscribes of every recent campaign in
    `out`; the summary counts campaigns, rows and the ESP calls."""
    started_at = datetime.now(UTC).isoformat()
    campaigns = recent_campaigns(hook, run, lookback_days)
    rows = stage_pages(events(hook, run, campaigns), out, columns=EVENT_COLUMNS)
    log.info("Extracted %d activity rows of %d campaigns", rows, len(campaigns))
    return {"started_at": started_at, "campaigns": len(campaigns), "rows": rows, **hook.stats.as_dict()}
