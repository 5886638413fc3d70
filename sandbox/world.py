"""The generated world's parameters: seed, size, time window and the rates of everything.

Every random draw comes from a numpy generator keyed by (seed, chunk, stream name), so each
system's data is reproducible on its own and a chunk never depends on the chunks before it.
The rates below are the defaults documented in sandbox/README.md; ``GenParams.options`` overrides
any of them (``--set name=value`` on the command line, keyword arguments of ``Sandbox.reset``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from sandbox.config import GenParams
from sandbox.timefmt import DAY_MS, parse_instant

RATES: dict[str, float] = {
    # CRM people and their dirt
    "email_messy": 0.05,  # mixed case and/or leading/trailing spaces
    "email_invalid": 0.01,  # invalid syntax ("jane.doe@", "a@b", ...)
    "duplicate": 0.01,  # the same person a second time (email differs in case/spaces)
    "non_ascii_name": 0.20,  # ä ö ü ß é è ñ ç ø å ł ś ...
    "cjk_name": 0.01,
    "missing_name": 0.03,  # first or last name missing
    "name_messy": 0.02,  # double/trailing spaces or NFD-decomposed accents
    "dob_empty": 0.10,
    "dob_impossible": 0.015,  # "31.02.1990"
    "dob_garbage": 0.015,  # "unknown", "n/a", ...
    "dob_german": 0.20,  # "02.03.1985"
    "dob_us": 0.10,  # "03/02/1985"
    "country_name": 0.25,  # "Germany" instead of "DE"
    "country_messy": 0.10,  # "germany " (lower case, trailing space)
    "country_empty": 0.05,
    "consent_true": 0.75,
    "consent_false": 0.20,  # the rest is null
    "customer_id_missing": 0.02,
    "ltv_negative": 0.01,
    "ltv_garbage": 0.01,
    "crm_daily_change": 0.02,  # share of contacts modified on each day of the window
    "crm_archived": 0.005,
    # ESP audience
    "esp_member": 0.60,  # of the CRM people
    "esp_only": 0.02,  # extra members unknown to the CRM (per CRM person)
    "esp_unsubscribed": 0.08,  # of members, before the window (campaigns add a few more)
    "esp_cleaned": 0.03,
    "esp_archived": 0.02,
    "esp_stale": 0.30,  # members whose merge fields lag behind the CRM
    "esp_written_back": 0.80,  # earlier bounces/unsubscribes already written back to the CRM
    "open": 0.25,  # of recipients, per campaign
    "click": 0.05,
    "soft_bounce": 0.01,
    "hard_bounce": 0.004,  # member becomes cleaned
    "unsubscribe": 0.003,  # member becomes unsubscribed
    # Shop
    "shop_customer": 0.40,
    "orders_per_week": 0.5,  # per customer
    "refund": 0.05,  # half full, half partial; refund dated after the order
    "cancel": 0.02,  # voided
    "pending": 0.01,
    "mc_cid": 0.25,  # landing_site carries mc_cid of a real campaign
    "utm_only": 0.10,  # only utm_campaign
    "guest_order": 0.02,  # orders by emails unknown to the CRM
    "updated_later": 0.10,  # orders edited days after they were placed
    "shop_email_case": 0.10,  # the shop has the email in another case than the CRM
    # Loyalty file
    "loyalty": 0.40,  # of people with a customer_id
    "tier_change": 0.01,  # per member and day
    "loyalty_unknown_id": 0.005,  # rows whose customer_id the CRM does not know
}


@dataclass
class World:
    seed: int
    contacts: int
    days: int
    now_ms: int
    rates: dict[str, float]

    @classmethod
    def from_params(cls, params: GenParams) -> World:
        unknown = set(params.options) - set(RATES)
        if unknown:
            raise ValueError(f"unknown generator option(s): {sorted(unknown)}; known: {sorted(RATES)}")
        if params.contacts < 1 or params.days < 1:
            raise ValueError("contacts and days must be at least 1")
        return cls(
            params.seed,
            params.contacts,
            params.days,
            parse_instant(params.now),
            RATES | {k: float(v) for k, v in params.options.items()},
        )

    @property
    def start_ms(self) -> int:
        """Start of the window of history: ``days`` days before "now"."""
        return self.now_ms - self.days * DAY_MS

    def rng(self, chunk: int, stream: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, chunk, zlib.crc32(stream.encode())])

    def chunks(self, size: int) -> list[tuple[int, int, int]]:
        """(chunk number, first person index, count). The data depends on the chunk size."""
        return [
            (k, start, min(size, self.contacts - start))
            for k, start in enumerate(range(0, self.contacts, size))
        ]
