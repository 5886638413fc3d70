"""Time in the sandbox: one internal unit (UTC epoch milliseconds) and each vendor's own format.

The three vendors write time differently, and clients must cope with each:
Mailchimp ``2026-11-20T08:01:02+00:00``, HubSpot ``2026-11-20T03:00:00.000Z`` (and ms epochs in
search filters), Shopify the shop's local time with its offset (``2026-11-20T09:01:02+01:00``).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

SHOP_TZ = ZoneInfo("Europe/Berlin")
DAY_MS = 86_400_000
_DIGITS = re.compile(r"^-?\d+$")


def parse_instant(value: object, *, naive_tz=UTC) -> int:
    """ms epoch, ISO 8601 date-time (``Z`` or offset) or ``YYYY-MM-DD`` → UTC ms.

    A date-time without an offset is read in ``naive_tz`` (Shopify reads it in the shop's zone).
    Raises ValueError for anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    if _DIGITS.match(text):
        return int(text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=naive_tz)
    return int(moment.timestamp() * 1000)


def to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def mc_time(ms: int | None) -> str:
    """Mailchimp: seconds, ``+00:00``; empty string when unset (as Mailchimp does)."""
    if ms is None:
        return ""
    return _mc_seconds(ms // 1000)


@lru_cache(maxsize=65536)
def _mc_seconds(seconds: int) -> str:
    # cached: a batch answer renders the same few instants hundreds of times
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()


def hs_time(ms: int | None) -> str | None:
    """HubSpot: milliseconds and ``Z``."""
    if ms is None:
        return None
    return to_dt(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def shop_time(ms: int | None) -> str | None:
    """Shopify: the shop's local time with its UTC offset."""
    if ms is None:
        return None
    return to_dt(ms).astimezone(SHOP_TZ).isoformat(timespec="seconds")


def iso_day(ms: int) -> str:
    return to_dt(ms).date().isoformat()


def day_start_ms(day: str | date) -> int:
    if isinstance(day, str):
        day = date.fromisoformat(day)
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


class Clock:
    """The server's "now" for writes: the wall clock, or a frozen instant set by a test."""

    def __init__(self) -> None:
        self.frozen_ms: int | None = None

    def now_ms(self) -> int:
        if self.frozen_ms is not None:
            return self.frozen_ms
        return int(time.time() * 1000)
