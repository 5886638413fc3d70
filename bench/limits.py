"""The vendors' published limits and batch sizes, the sandbox switches that enforce them, the floor.

One place for every figure the benchmarks are judged by. Each limit names where it is published;
the sandbox enforces what it can (`faults()`), and `floor_seconds()` turns a path's fewest calls
into the fewest seconds those limits allow, so every result can be reported as a ratio to it.

The floor of a path is a lower bound, not a plan: each vendor's calls are counted at that vendor's
largest batch, and the vendors are assumed to work side by side (the path's floor is the slowest
vendor's), with nothing else (parsing, Airflow, the network beyond one latency per round) taking
time. A ratio of 1.0 is unreachable; the issue's goal is 1.3x for a full sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Per-call latency switched on in every vendor of the sandbox. No vendor publishes a figure: 100 ms
#: is a round trip from Europe to the vendors' US regions plus their processing of a small call.
LATENCY_MS = 100


@dataclass(frozen=True)
class Limit:
    name: str
    value: float
    unit: str
    source: str
    enforced: str  # how the sandbox enforces it in the benchmarks ("not enforced: ..." if it cannot)


HUBSPOT_USAGE = "https://developers.hubspot.com/docs/api/usage-details"
HUBSPOT_CHANGELOG = "https://developers.hubspot.com/changelog/increasing-our-api-limits"
HUBSPOT_SEARCH = "https://developers.hubspot.com/docs/api/crm/search"
HUBSPOT_CONTACTS = "https://developers.hubspot.com/docs/api/crm/contacts"
HUBSPOT_EXPORTS = "https://developers.hubspot.com/docs/api/crm/exports"
MAILCHIMP_FUNDAMENTALS = "https://mailchimp.com/developer/marketing/docs/fundamentals/"
MAILCHIMP_BATCH_SUBSCRIBE = (
    "https://mailchimp.com/developer/marketing/api/lists/batch-subscribe-or-unsubscribe/"
)
MAILCHIMP_BATCHES = "https://mailchimp.com/developer/marketing/api/batch-operations/"
MAILCHIMP_REPORTS = "https://mailchimp.com/developer/marketing/api/email-activity-reports/"
SHOPIFY_LIMITS = "https://shopify.dev/docs/api/usage/rate-limits"
SHOPIFY_PAGINATION = "https://shopify.dev/docs/api/usage/pagination-rest"

# --- rate limits -----------------------------------------------------------------------------
HUBSPOT_BURST = Limit(
    "HubSpot burst (Professional, private app)", 190, "calls per 10 s", HUBSPOT_CHANGELOG,
    "sandbox crm rate_limit vendor (190 per 10,000 ms rolling, 429 + Retry-After)",
)  # fmt: skip
HUBSPOT_DAILY = Limit(
    "HubSpot daily (Professional)", 650_000, "calls per day", HUBSPOT_CHANGELOG,
    "sandbox crm rate_limit vendor daily (650,000 calls, reset at midnight UTC, 429 policyName DAILY; "
    "CrmHook fails at once instead of retrying)",
)  # fmt: skip
HUBSPOT_SEARCH_RATE = Limit(
    "HubSpot CRM search", 5, "requests per s", HUBSPOT_SEARCH,
    "sandbox crm rate_limit vendor search_per_s (5 per rolling second on */search, 429 policyName "
    "SECONDLY); CrmHook paces its own searches to 5/s",
)  # fmt: skip
MAILCHIMP_CONCURRENCY = Limit(
    "Mailchimp simultaneous connections per API key", 10, "connections", MAILCHIMP_FUNDAMENTALS,
    "sandbox esp rate_limit vendor (an 11th open call gets 429)",
)  # fmt: skip
SHOPIFY_BUCKET = Limit(
    "Shopify REST leaky bucket (standard plan)", 40, "calls, leaking 2 per s", SHOPIFY_LIMITS,
    "sandbox shop rate_limit vendor (bucket 40, leak 2/s, 429 + Retry-After 2.0)",
)  # fmt: skip
SHOPIFY_LEAK_PER_S = 2.0
LATENCY = Limit(
    "Per-call latency, every vendor", LATENCY_MS, "ms", "assumption (no vendor publishes one)",
    "sandbox latency_ms on esp, crm and shop",
)  # fmt: skip

# --- batch sizes -----------------------------------------------------------------------------
HUBSPOT_PAGE = 100  # GET /crm/v3/objects/contacts: limit <= 100
HUBSPOT_SEARCH_PAGE = 200  # POST .../search: limit <= 200
HUBSPOT_BATCH = 100  # batch read / update / upsert: <= 100 inputs
HUBSPOT_EXPORT_CALLS = 2  # POST export/async + one status read; the file download is not an API call
MAILCHIMP_BATCH_MEMBERS = 500  # POST /lists/{id}: <= 500 members
MAILCHIMP_BATCH_OPERATIONS = 1000  # POST /batches: operations per call (see sandbox/README.md)
MAILCHIMP_BATCH_CALLS = 2  # POST /batches + one status read (the results archive is a signed link)
MAILCHIMP_PAGE = 1000  # count <= 1000 on list endpoints (members, email activity)
SHOPIFY_PAGE = 250  # GET orders.json: limit <= 250

BATCH_SIZES = {
    "HubSpot contacts page (list API)": (HUBSPOT_PAGE, HUBSPOT_CONTACTS),
    "HubSpot search page": (HUBSPOT_SEARCH_PAGE, HUBSPOT_SEARCH),
    "HubSpot batch read/update/upsert": (HUBSPOT_BATCH, HUBSPOT_CONTACTS),
    "HubSpot export (start + status read; file download not an API call)": (
        HUBSPOT_EXPORT_CALLS,
        HUBSPOT_EXPORTS,
    ),
    "Mailchimp batch subscribe members": (MAILCHIMP_BATCH_MEMBERS, MAILCHIMP_BATCH_SUBSCRIBE),
    "Mailchimp batch operations per POST /batches": (MAILCHIMP_BATCH_OPERATIONS, MAILCHIMP_BATCHES),
    "Mailchimp page (members, email activity)": (MAILCHIMP_PAGE, MAILCHIMP_REPORTS),
    "Shopify orders page": (SHOPIFY_PAGE, SHOPIFY_PAGINATION),
}
LIMITS = (HUBSPOT_BURST, HUBSPOT_DAILY, HUBSPOT_SEARCH_RATE, MAILCHIMP_CONCURRENCY, SHOPIFY_BUCKET, LATENCY)


def faults(latency_ms: int = LATENCY_MS, *, limits: bool = True) -> dict[str, dict]:
    """The sandbox switches of every vendor: the latency, and (``limits``) the vendors' limiters."""
    out: dict[str, dict] = {system: {"latency_ms": latency_ms} for system in ("esp", "crm", "shop")}
    if limits:
        out["crm"]["rate_limit"] = {
            "vendor": True,
            "max": int(HUBSPOT_BURST.value),
            "interval_ms": 10_000,
            "daily": int(HUBSPOT_DAILY.value),
            "search_per_s": int(HUBSPOT_SEARCH_RATE.value),
        }
        out["esp"]["rate_limit"] = {"vendor": True, "max_concurrent": int(MAILCHIMP_CONCURRENCY.value)}
        out["shop"]["rate_limit"] = {"vendor": True, "bucket": int(SHOPIFY_BUCKET.value), "leak_per_s": 2}
    return out


def apply(sb, latency_ms: int = LATENCY_MS, *, limits: bool = True) -> dict[str, dict]:
    """Switch `faults()` on in a running sandbox (after any reset: a reset clears them)."""
    switches = faults(latency_ms, limits=limits)
    for system, values in switches.items():
        sb.set_faults(system, **values)
    return switches


# --- the floor -------------------------------------------------------------------------------
def hubspot_seconds(calls: int, latency_ms: int = LATENCY_MS) -> float:
    """Fewest seconds for `calls` HubSpot calls: 190 per rolling 10 s, 650k a day, one latency."""
    if calls <= 0:
        return 0.0
    windows = math.ceil(calls / HUBSPOT_BURST.value)
    days = math.ceil(calls / HUBSPOT_DAILY.value) - 1
    return (windows - 1) * 10.0 + days * 86_400.0 + latency_ms / 1000


def hubspot_search_seconds(calls: int, latency_ms: int = LATENCY_MS) -> float:
    return 0.0 if calls <= 0 else (calls - 1) / HUBSPOT_SEARCH_RATE.value + latency_ms / 1000


def mailchimp_seconds(calls: int, latency_ms: int = LATENCY_MS) -> float:
    """Fewest seconds for `calls` Mailchimp calls: 10 open at a time, each one latency long."""
    return math.ceil(max(calls, 0) / MAILCHIMP_CONCURRENCY.value) * latency_ms / 1000


def shopify_seconds(calls: int, latency_ms: int = LATENCY_MS) -> float:
    """Fewest seconds for `calls` Shopify calls: a bucket of 40 leaking 2 per second."""
    if calls <= 0:
        return 0.0
    return max(0, calls - SHOPIFY_BUCKET.value) / SHOPIFY_LEAK_PER_S + latency_ms / 1000


def floor(calls: dict[str, int], latency_ms: int = LATENCY_MS) -> dict:
    """A path's floor from its fewest calls per vendor limit: the slowest vendor's seconds.

    `calls` keys: ``hubspot`` (burst-limited), ``hubspot_search`` (search's per-second limit; also
    counted against the burst), ``mailchimp``, ``shopify``.
    """
    search = calls.get("hubspot_search", 0)
    seconds = {
        "hubspot": max(hubspot_seconds(calls.get("hubspot", 0) + search, latency_ms),
                       hubspot_search_seconds(search, latency_ms)),
        "mailchimp": mailchimp_seconds(calls.get("mailchimp", 0), latency_ms),
        "shopify": shopify_seconds(calls.get("shopify", 0), latency_ms),
    }  # fmt: skip
    seconds = {k: round(v, 2) for k, v in seconds.items() if calls.get(k, 0) or (k == "hubspot" and search)}
    return {
        "calls": {k: v for k, v in calls.items() if v},
        "total_calls": sum(calls.values()),
        "seconds_by_vendor": seconds,
        "seconds": max(seconds.values(), default=0.0),
        "latency_ms": latency_ms,
    }


def floor_full_sync(contacts: int, members: int | None = None, latency_ms: int = LATENCY_MS) -> dict:
    """Full contacts sync: a CRM export (2 calls), the members in batches of 500."""
    members = contacts if members is None else members
    return floor(
        {"hubspot": HUBSPOT_EXPORT_CALLS, "mailchimp": math.ceil(members / MAILCHIMP_BATCH_MEMBERS)},
        latency_ms,
    )


def floor_full_sync_list_api(contacts: int, members: int | None = None, latency_ms: int = LATENCY_MS) -> dict:
    """The same with the CRM's list API (100 per page) instead of its export."""
    members = contacts if members is None else members
    calls = {
        "hubspot": math.ceil(contacts / HUBSPOT_PAGE),
        "mailchimp": math.ceil(members / MAILCHIMP_BATCH_MEMBERS),
    }
    return floor(calls, latency_ms)


def floor_night(changed: int, latency_ms: int = LATENCY_MS) -> dict:
    """A night's changes: search pages of 200 for the changed contacts, their members in batches of 500."""
    return floor(
        {
            "hubspot_search": max(1, math.ceil(changed / HUBSPOT_SEARCH_PAGE)),
            "mailchimp": math.ceil(changed / MAILCHIMP_BATCH_MEMBERS),
        },
        latency_ms,
    )


def floor_member_load(members: int, latency_ms: int = LATENCY_MS) -> dict:
    return floor({"mailchimp": math.ceil(members / MAILCHIMP_BATCH_MEMBERS)}, latency_ms)


def floor_shop(orders: int, latency_ms: int = LATENCY_MS) -> dict:
    """Orders to the ESP: pages of 250 from Shopify, batch operations of 1,000 (post + status read)."""
    batches = math.ceil(orders / MAILCHIMP_BATCH_OPERATIONS)
    return floor(
        {"shopify": math.ceil(orders / SHOPIFY_PAGE), "mailchimp": batches * MAILCHIMP_BATCH_CALLS},
        latency_ms,
    )


def floor_engagement(activity_rows: int, touched_contacts: int, latency_ms: int = LATENCY_MS) -> dict:
    """Activity pages of 1,000 from the ESP; one CRM batch update per 100 touched contacts (ids known)."""
    return floor(
        {
            "mailchimp": math.ceil(activity_rows / MAILCHIMP_PAGE),
            "hubspot": math.ceil(touched_contacts / HUBSPOT_BATCH),
        },
        latency_ms,
    )


def ratio(measured: float, floor_value: float) -> float | None:
    return round(measured / floor_value, 2) if floor_value else None


def describe() -> dict:
    """The limits and batch sizes as stated in every result file."""
    return {
        "limits": [
            {"name": x.name, "value": x.value, "unit": x.unit, "source": x.source, "enforced": x.enforced}
            for x in LIMITS
        ],
        "batch_sizes": [{"name": k, "value": v, "source": s} for k, (v, s) in BATCH_SIZES.items()],
    }
