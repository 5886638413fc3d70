"""Fault switches and the vendors' real rate limiters.

Every switch is deterministic: it fires by counting matching calls or by a seeded hash of a record
key, never by wall-clock randomness, so a test that sets a switch sees the same faults every run.
(The vendors' own limiters, when switched on, are time-based by nature: that is what they model.)

Switches per system (each value may carry ``method`` and ``path`` — an fnmatch pattern — to limit
which calls it matches):

- ``latency_ms``: ``50`` or ``{"ms": 50}``: sleep before answering (asyncio, so calls overlap).
- ``rate_limit``: ``{"every": k}`` (every k-th matching call gets 429), ``{"next": n}`` (the next n
  matching calls get 429), with ``retry_after`` seconds (fractions allowed); or ``{"vendor": true}``
  for the vendor's real limiter (ESP ``max_concurrent`` 10 per key; CRM ``max`` 190 per
  ``interval_ms`` 10000, ``daily`` 650000, ``search_per_s`` 5; SHOP leaky ``bucket`` 40 leaking
  ``leak_per_s`` 2).
- ``status_burst``: ``3`` or ``{"count": 3, "status": 503}``: the next calls get a 5xx with the
  vendor's error body; nothing is written.
- ``slow``: ``{"count": 1, "seconds": 3}``: the write IS applied, then the answer is delayed (a
  client timeout after the server did the work: the realistic nasty case).
- ``drop``: ``1`` or ``{"count": 1}``: nothing is written; the connection is closed after a partial
  response (Content-Length promised, body cut short).
- ``truncate``: ``{"page": 3}`` (default 2): the k-th matching page of the CRM's contact listing
  comes back without its ``paging.next``, as if the listing had ended there (once; ``count``
  for more): a truncated full listing.
- ``record_errors``: ``{"rate": 0.1, "seed": 1}`` and/or ``{"keys": [...]}``: inside batch
  endpoints, records whose key (normalised email or id) is listed or whose seeded hash falls under
  the rate are rejected with the vendor's per-record error.
- ``jobs``: the vendors' asynchronous jobs (ESP batch operations, CRM exports), read when a job is
  created (``POST /3.0/batches``, ``POST /crm/v3/exports/export/async``), for the next ``count``
  jobs (default: every job while set): ``polls`` (status reads until done, default 2), ``stall``
  (true: never finishes), ``fail`` (true: a CRM export ends ``CANCELED`` with an error),
  ``fail_every`` (k: every k-th operation of an ESP batch is refused with a 400), ``zip_over``
  (bytes: a CRM export file larger than this is served zipped; HubSpot zips CSVs over 2 MB).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase

SYSTEMS = ("esp", "crm", "shop")
KINDS = ("latency_ms", "rate_limit", "status_burst", "slow", "drop", "truncate", "record_errors", "jobs")
_FILTER_KEYS = {"method", "path"}
_ALLOWED = {
    "latency_ms": {"ms"},
    "rate_limit": {
        "every",
        "next",
        "retry_after",
        "vendor",
        "max_concurrent",
        "max",
        "interval_ms",
        "daily",
        "search_per_s",
        "bucket",
        "leak_per_s",
    },
    "status_burst": {"count", "status"},
    "slow": {"count", "seconds"},
    "drop": {"count"},
    "truncate": {"page", "count"},
    "record_errors": {"rate", "seed", "keys"},
    "jobs": {"polls", "stall", "fail", "fail_every", "zip_over", "count"},
}
_SCALAR_KEY = {"latency_ms": "ms", "status_burst": "count", "drop": "count", "slow": "seconds"}


def unit_hash(seed: object, key: str) -> float:
    """A stable pseudo-random number in [0, 1) for (seed, key)."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def format_retry_after(seconds: float, *, decimal: bool = False) -> str:
    """Whole seconds as "2" (RFC 9110); fractions as given. Shopify always sends "2.0"."""
    if decimal:
        return f"{seconds:.1f}"
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


@dataclass
class Switch:
    kind: str
    config: dict
    remaining: int | None = None
    matched: int = 0
    applied: int = 0

    def matches(self, method: str, path: str) -> bool:
        methods = self.config.get("method")
        if methods:
            wanted = [methods] if isinstance(methods, str) else methods
            if method.upper() not in {m.upper() for m in wanted}:
                return False
        pattern = self.config.get("path")
        return not pattern or fnmatchcase(path, pattern)

    def take(self) -> bool:
        """Consume one of the next-N budget; False when spent."""
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True

    def state(self) -> dict:
        out = dict(self.config, matched=self.matched, applied=self.applied)
        if self.remaining is not None:
            out["remaining"] = self.remaining
        return out


def make_switch(kind: str, value: object) -> Switch:
    if kind not in KINDS:
        raise ValueError(f"unknown fault switch {kind!r}; known: {', '.join(KINDS)}")
    if kind == "record_errors" and isinstance(value, list):
        value = {"keys": value}
    if not isinstance(value, dict):
        if kind not in _SCALAR_KEY or isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{kind} needs an object, got {value!r}")
        value = {_SCALAR_KEY[kind]: value}
    unknown = set(value) - _ALLOWED[kind] - _FILTER_KEYS
    if unknown:
        raise ValueError(f"{kind}: unknown option(s) {sorted(unknown)}")
    config = dict(value)
    remaining = None
    if kind == "rate_limit":
        if sum(k in config for k in ("every", "next", "vendor")) != 1:
            raise ValueError("rate_limit needs exactly one of every, next, vendor")
        remaining = int(config["next"]) if "next" in config else None
    elif kind in ("status_burst", "drop", "slow"):
        config.setdefault("count", 1)
        remaining = int(config["count"])
        if kind == "status_burst":
            config.setdefault("status", 503)
            if int(config["status"]) not in (500, 502, 503, 504):
                raise ValueError("status_burst status must be 500, 502, 503 or 504")
        if kind == "slow":
            config.setdefault("seconds", 5)
    elif kind == "truncate":
        config.setdefault("page", 2)
        config.setdefault("count", 1)
        remaining = int(config["count"])
    elif kind == "jobs":
        for name in ("polls", "fail_every", "zip_over", "count"):
            if name in config and (isinstance(config[name], bool) or not isinstance(config[name], int)):
                raise ValueError(f"jobs: {name} must be an integer")
        if config.get("polls", 1) < 1:
            raise ValueError("jobs: polls must be at least 1")
        remaining = int(config["count"]) if "count" in config else None
    elif kind == "record_errors":
        config["keys"] = [str(k).strip().lower() for k in config.get("keys", [])]
        config.setdefault("rate", 0.0)
        config.setdefault("seed", 0)
    return Switch(kind, config, remaining)


class RecordSelector:
    """Which batch records a ``record_errors`` switch rejects; counts what it rejected."""

    def __init__(self, switch: Switch) -> None:
        self.switch = switch
        self.keys = set(switch.config["keys"])
        self.rate = float(switch.config["rate"])
        self.seed = switch.config["seed"]
        self.rejected = 0

    def __call__(self, key: str) -> bool:
        key = str(key).strip().lower()
        hit = key in self.keys or (self.rate > 0 and unit_hash(self.seed, key) < self.rate)
        if hit:
            self.switch.applied += 1
            self.rejected += 1
        return hit


@dataclass
class Decision:
    """What the faults say about one call, in the order the pipeline applies them."""

    latency_s: float = 0.0
    reject_status: int | None = None  # 429 or 5xx: answer with the vendor's error, write nothing
    retry_after: str | None = None
    slow_s: float = 0.0
    drop: bool = False
    truncate: bool = False  # a listing page without its next cursor
    records: RecordSelector | None = None
    labels: list[str] = field(default_factory=list)

    def label(self) -> str | None:
        if self.records is not None and self.records.rejected:
            self.labels.append(f"record_errors={self.records.rejected}")
        return ",".join(self.labels) or None


class HubSpotWindow:
    """HubSpot's limits per app, always counted: the rolling burst (``max`` 190 calls per
    ``interval_ms`` 10 s), the daily limit (``daily`` 650,000, reset at midnight: UTC here, the
    account's time zone at HubSpot) and the search endpoints' own ``search_per_s`` (5 per second,
    counted in the burst too). Enforced only with the vendor switch on."""

    def __init__(self) -> None:
        self.calls: deque[float] = deque()
        self.searches: deque[float] = deque()
        self.daily = 0
        self.day = datetime.now(UTC).date()

    def hit(self, cfg: dict | None, *, search: bool = False) -> tuple[dict[str, str], tuple | None]:
        """(rate headers, None or the refusal: HubSpot's policy name and the seconds to wait)."""
        limit = int((cfg or {}).get("max", 190))
        interval = int((cfg or {}).get("interval_ms", 10_000))
        daily = int((cfg or {}).get("daily", 650_000))
        per_second = int((cfg or {}).get("search_per_s", 5))
        now, wall = time.monotonic(), datetime.now(UTC)
        if wall.date() != self.day:
            self.day, self.daily = wall.date(), 0
        while self.calls and now - self.calls[0] >= interval / 1000:
            self.calls.popleft()
        while self.searches and now - self.searches[0] >= 1.0:
            self.searches.popleft()
        refused = None
        if cfg is not None and self.daily >= daily:
            midnight = datetime.combine(wall.date() + timedelta(days=1), datetime.min.time(), UTC)
            refused = ("DAILY", (midnight - wall).total_seconds())
        elif cfg is not None and len(self.calls) >= limit:
            refused = ("TEN_SECONDLY_ROLLING", max(0.001, interval / 1000 - (now - self.calls[0])))
        elif cfg is not None and search and len(self.searches) >= per_second:
            refused = ("SECONDLY", max(0.001, 1.0 - (now - self.searches[0])))
        else:
            self.calls.append(now)
            self.daily += 1
            if search:
                self.searches.append(now)
        headers = {
            "X-HubSpot-RateLimit-Daily": str(daily),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, daily - self.daily)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(interval),
            "X-HubSpot-RateLimit-Max": str(limit),
            "X-HubSpot-RateLimit-Remaining": str(max(0, limit - len(self.calls))),
        }
        return headers, refused


class ShopBucket:
    """Shopify's leaky bucket (40 calls, leaking 2/s per token); always counted for the header."""

    def __init__(self) -> None:
        self.level = 0.0
        self.last = time.monotonic()

    def hit(self, cfg: dict | None) -> tuple[dict[str, str], bool]:
        size = int((cfg or {}).get("bucket", 40))
        leak = float((cfg or {}).get("leak_per_s", 2))
        now = time.monotonic()
        self.level = max(0.0, self.level - (now - self.last) * leak)
        self.last = now
        over = cfg is not None and self.level + 1 > size
        if not over:
            self.level += 1
        used = min(size, math.ceil(self.level - 1e-9))
        return {"X-Shopify-Shop-Api-Call-Limit": f"{used}/{size}"}, over


class FaultBook:
    """All switches of all systems, their counters, and the vendors' limiter state."""

    def __init__(self) -> None:
        self.switches: dict[str, dict[str, Switch]] = {s: {} for s in SYSTEMS}
        self.in_flight: dict[str, int] = {}
        self.hubspot = HubSpotWindow()
        self.shop_bucket = ShopBucket()
        self.jobs: dict[str, dict] = {}  # the vendors' asynchronous jobs by system: gone at a reset

    def set(self, system: str, switches: dict) -> None:
        if system not in SYSTEMS:
            raise ValueError(f"unknown system {system!r}")
        built = {kind: make_switch(kind, value) for kind, value in switches.items() if value is not None}
        for kind, value in switches.items():
            if value is None:
                self.switches[system].pop(kind, None)
        self.switches[system].update(built)

    def clear(self, system: str | None = None) -> None:
        for name in [system] if system else SYSTEMS:
            self.switches[name] = {}

    def reset_limiters(self) -> None:
        self.hubspot = HubSpotWindow()
        self.shop_bucket = ShopBucket()
        self.jobs = {}

    def job_switch(self, system: str, method: str, path: str) -> dict:
        """The ``jobs`` switch's options for a job this call creates ({} when none applies)."""
        sw = self.switches[system].get("jobs")
        if sw is None or not sw.matches(method, path) or not sw.take():
            return {}
        sw.applied += 1
        return {k: v for k, v in sw.config.items() if k not in _FILTER_KEYS and k != "count"}

    def state(self) -> dict:
        return {
            system: {kind: sw.state() for kind, sw in switches.items()}
            for system, switches in self.switches.items()
        } | {"limiters": {"crm_daily_calls": self.hubspot.daily, "shop_bucket": self.shop_bucket.level}}

    def vendor_limit(self, system: str, method: str, path: str) -> dict | None:
        sw = self.switches[system].get("rate_limit")
        if sw is not None and sw.config.get("vendor") and sw.matches(method, path):
            return sw.config
        return None

    def decide(self, system: str, method: str, path: str) -> Decision:
        """Count this call against every matching switch and say which faults fire."""
        decision = Decision()
        active = {k: sw for k, sw in self.switches[system].items() if sw.matches(method, path)}
        for sw in active.values():
            sw.matched += 1
        if (sw := active.get("latency_ms")) is not None:
            sw.applied += 1
            decision.latency_s = float(sw.config["ms"]) / 1000
            decision.labels.append(f"latency_ms={sw.config['ms']}")
        sw = active.get("rate_limit")
        if sw is not None and not sw.config.get("vendor"):
            every = sw.config.get("every")
            fire = (sw.matched % int(every) == 0) if every else sw.take()
            if fire:
                sw.applied += 1
                decision.reject_status = 429
                default = 2.0 if system == "shop" else 1
                decision.retry_after = format_retry_after(
                    float(sw.config.get("retry_after", default)), decimal=system == "shop"
                )
                decision.labels.append("rate_limit")
                return decision
        if (sw := active.get("status_burst")) is not None and sw.take():
            sw.applied += 1
            decision.reject_status = int(sw.config["status"])
            decision.labels.append(f"status_burst={decision.reject_status}")
            return decision
        if (sw := active.get("drop")) is not None and sw.take():
            sw.applied += 1
            decision.drop = True
            decision.labels.append("drop")
            return decision
        if (sw := active.get("slow")) is not None and sw.take():
            sw.applied += 1
            decision.slow_s = float(sw.config["seconds"])
            decision.labels.append(f"slow={sw.config['seconds']}")
        if (sw := active.get("truncate")) is not None and sw.matched >= int(sw.config["page"]) and sw.take():
            sw.applied += 1
            decision.truncate = True
            decision.labels.append("truncate")
        if (sw := active.get("record_errors")) is not None:
            decision.records = RecordSelector(sw)
        return decision
