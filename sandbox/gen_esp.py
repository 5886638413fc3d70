"""The ESP side of the world: campaigns, the audience before the window, and campaign activity.

Activity is consistent with member status: a hard bounce makes the member ``cleaned`` and an
unsubscribe makes it ``unsubscribed`` from that moment on (so it receives no later campaign), and
nothing happens at or after "now".
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from sandbox import vocab
from sandbox.esp_model import subscriber_hash, unique_email_id
from sandbox.people import People
from sandbox.store import dumps
from sandbox.timefmt import DAY_MS, iso_day, to_dt
from sandbox.world import World

HOUR_MS = 3_600_000
SUBSCRIBED, UNSUBSCRIBED, CLEANED, ARCHIVED = range(4)
STATUS_NAMES = ("subscribed", "unsubscribed", "cleaned", "archived")
_GLOBAL = 1_000_000  # chunk number used for world-wide draws (campaigns)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def make_campaigns(world: World) -> list[dict]:
    """One campaign every 2–3 days over the window, sent between 08:00 and 10:00 UTC."""
    r = world.rng(_GLOBAL, "campaigns")
    campaigns, day = [], world.start_ms + int(r.integers(0, 2)) * DAY_MS
    while True:
        send = day + 8 * HOUR_MS + int(r.integers(0, 120)) * 60_000
        if send >= world.now_ms:
            return campaigns
        k = len(campaigns)
        subject = vocab.CAMPAIGN_SUBJECTS[int(r.integers(len(vocab.CAMPAIGN_SUBJECTS)))]
        campaigns.append(
            {
                "id": hashlib.md5(f"{world.seed}:campaign:{k}".encode()).hexdigest()[:10],
                "web_id": 100_001 + k,
                "send_ms": send,
                "subject": subject,
                "title": f"{iso_day(send)} {subject}",
                "slug": f"{to_dt(send):%Y%m%d}_{_slug(subject)}",
                "sent": 0,
            }
        )
        day += (2 + int(r.integers(0, 2))) * DAY_MS


@dataclass
class Audience:
    """This chunk's members; arrays are per member, ``person`` maps a member to its person (-1: ESP only)."""

    person: np.ndarray
    email: list[str]
    hash: list[str]
    status: np.ndarray
    prev_status: list[str | None]
    signup_ms: np.ndarray
    changed_ms: np.ndarray
    merge: list[dict]
    language: list[str]
    tags: list[list[str]]
    reason: list[str | None]


def _merge_fields(people: People, i: int, r_stale: float, k: int) -> dict:
    d = people.dob[i].astype(object)
    fields = {
        "FNAME": people.first[i],
        "LNAME": people.last[i],
        "BIRTHDAY": f"{d.month:02d}/{d.day:02d}",
        "CITY": people.city[i],
        "COUNTRY": vocab.COUNTRIES[people.country[i]][0],
    }
    if people.cid[i]:
        fields["CLIENTID"] = f"CL-{people.cid[i]}"
    if r_stale < 0:
        return fields
    stale = k % 5
    if stale == 0:
        fields["LNAME"] = vocab.LAST_ASCII[k % len(vocab.LAST_ASCII)]  # changed name since last sync
    elif stale == 1:
        fields["CITY"] = vocab.COUNTRIES[people.country[i]][2][
            (k >> 4) % len(vocab.COUNTRIES[people.country[i]][2])
        ]
    elif stale == 2:
        fields.pop("BIRTHDAY")
    elif stale == 3:
        fields["FNAME"] = str(fields["FNAME"]).lower()
    else:
        fields.pop("COUNTRY")
    return fields


def make_audience(world: World, chunk: int, people: People) -> Audience:
    r = world.rng(chunk, "esp")
    rates = world.rates
    n = len(people)
    member = np.flatnonzero(r.random(n) < rates["esp_member"])
    n_only = int(r.binomial(n, rates["esp_only"]))
    m = len(member) + n_only
    u = r.random(m)
    edges = np.cumsum([rates["esp_unsubscribed"], rates["esp_cleaned"], rates["esp_archived"]])
    status = np.select(
        [u < edges[0], u < edges[1], u < edges[2]], [UNSUBSCRIBED, CLEANED, ARCHIVED], SUBSCRIBED
    )
    signup = world.start_ms - DAY_MS - (r.random(m) * 5 * 365 * DAY_MS).astype(np.int64)
    changed = signup + (r.random(m) * (world.start_ms - signup)).astype(np.int64)
    stale = r.random(m)
    ks = r.integers(0, 1 << 30, size=m)
    emails, merges, languages, persons = [], [], [], []
    for j, i in enumerate(member):
        email = people.email[i]
        emails.append(email.capitalize() if ks[j] % 33 == 0 else email)
        merges.append(_merge_fields(people, i, stale[j] - rates["esp_stale"], int(ks[j])))
        languages.append(people.lang[i] if ks[j] % 7 else "")
        persons.append(int(i))
    for j in range(len(member), m):  # people who signed up on the web site but are not in the CRM
        first = vocab.FIRST_ASCII[int(ks[j]) % len(vocab.FIRST_ASCII)]
        last = vocab.LAST_ASCII[int(ks[j] >> 8) % len(vocab.LAST_ASCII)]
        emails.append(f"{vocab.ascii_fold(first)}.{vocab.ascii_fold(last)}.x{chunk}n{j}@example.net")
        merges.append({"FNAME": first, "LNAME": last})
        languages.append("en")
        persons.append(-1)
    prev = [
        ("unsubscribed" if ks[j] % 3 == 0 else "subscribed") if status[j] == ARCHIVED else None
        for j in range(m)
    ]
    tags = [["vip"] if k % 31 == 0 else ["newsletter-2025"] if k % 19 == 0 else [] for k in ks]
    reasons = [
        vocab.UNSUBSCRIBE_REASONS[k % len(vocab.UNSUBSCRIBE_REASONS)] if s == UNSUBSCRIBED else None
        for k, s in zip(ks, status, strict=True)
    ]
    return Audience(
        np.array(persons, dtype=np.int64),
        emails,
        [subscriber_hash(e) for e in emails],
        status,
        prev,
        signup,
        changed,
        merges,
        languages,
        tags,
        reasons,
    )


def campaign_activity(
    world: World, chunk: int, aud: Audience, campaigns: list[dict]
) -> tuple[list[tuple], list[tuple]]:
    """Send every campaign to the members subscribed at send time; returns activity and unsubscribe rows.

    Members who bounce hard or unsubscribe change status in ``aud`` (at the event's time).
    """
    r = world.rng(chunk, "activity")
    rates = world.rates
    now = world.now_ms
    change_at = np.full(len(aud.email), np.iinfo(np.int64).max, dtype=np.int64)
    change_to = aud.status.copy()
    activity, unsubscribes = [], []
    hb, sb = rates["hard_bounce"], rates["soft_bounce"]
    for camp in campaigns:
        send = camp["send_ms"]
        rec = np.flatnonzero((aud.status == SUBSCRIBED) & (aud.signup_ms < send) & (change_at > send))
        camp["sent"] += len(rec)
        n = len(rec)
        u = r.random(n)
        hard, soft = u < hb, (u >= hb) & (u < hb + sb)
        delivered = ~hard & ~soft
        opened = delivered & (r.random(n) < rates["open"] / max(1e-9, 1 - hb - sb))
        clicked = opened & (r.random(n) < rates["click"] / max(1e-9, rates["open"]))
        unsub = delivered & (r.random(n) < rates["unsubscribe"])
        bounce_ts = send + r.integers(60_000, 30 * 60_000, size=n)
        first_open = send + (r.exponential(18 * HOUR_MS, size=n)).astype(np.int64)
        n_opens = r.geometric(0.55, size=n)
        unsub_ts = send + (r.exponential(20 * HOUR_MS, size=n)).astype(np.int64)
        later = r.exponential(24 * HOUR_MS, size=(n, 3)).astype(np.int64)
        click_delay = r.integers(5_000, 30 * 60_000, size=n)
        link = r.integers(0, len(vocab.PRODUCTS), size=n)
        for j in np.flatnonzero(hard | soft | opened | unsub):
            m = rec[j]
            h, email = aud.hash[m], aud.email[m]
            ip = f"198.51.100.{int(h[:2], 16) % 254 + 1}"
            cid = camp["id"]
            if hard[j] or soft[j]:
                if bounce_ts[j] < now:
                    activity.append(
                        (cid, h, email, "bounce", "hard" if hard[j] else "soft", int(bounce_ts[j]), None, ip)
                    )
                    if hard[j] and bounce_ts[j] < change_at[m]:
                        change_at[m], change_to[m] = bounce_ts[j], CLEANED
                continue
            if opened[j]:
                ts = int(first_open[j])
                times = [ts] + [ts + int(later[j, k]) for k in range(min(3, int(n_opens[j]) - 1))]
                activity.extend((cid, h, email, "open", None, t, None, ip) for t in times if t < now)
                if clicked[j] and ts + click_delay[j] < now:
                    handle = vocab.PRODUCTS[int(link[j])][1]
                    url = f"https://shop.example.com/products/{handle}?utm_source=mailchimp&utm_campaign={camp['slug']}"
                    activity.append((cid, h, email, "click", None, ts + int(click_delay[j]), url, ip))
            if unsub[j] and unsub_ts[j] < now and unsub_ts[j] < change_at[m]:
                change_at[m], change_to[m] = unsub_ts[j], UNSUBSCRIBED
                reason = vocab.UNSUBSCRIBE_REASONS[int(h[2:4], 16) % len(vocab.UNSUBSCRIBE_REASONS)]
                unsubscribes.append((cid, h, email, int(unsub_ts[j]), reason))
                aud.reason[m] = reason
    moved = change_at < now
    aud.status = np.where(moved, change_to, aud.status)
    aud.changed_ms = np.where(moved, np.maximum(aud.changed_ms, change_at), aud.changed_ms)
    return activity, unsubscribes


def member_rows(aud: Audience) -> list[tuple]:
    """esp_members rows without rid: SQLite numbers them in insertion order."""
    rows = []
    for j, email in enumerate(aud.email):
        status = STATUS_NAMES[aud.status[j]]
        h = aud.hash[j]
        signup = int(aud.signup_ms[j])
        rows.append(
            (
                h,
                email,
                unique_email_id(h),
                status,
                aud.prev_status[j],
                dumps(aud.merge[j]),
                aud.language[j],
                dumps(aud.tags[j]),
                signup,
                signup if status != "cleaned" else None,
                int(aud.changed_ms[j]),
                "Import" if j % 4 else "Signup Form",
                aud.reason[j],
            )
        )
    return rows


def crm_engagement(world: World, aud: Audience, n_people: int) -> list[dict]:
    """Earlier runs already wrote most pre-window bounces and unsubscribes back to the CRM."""
    out: list[dict] = [{} for _ in range(n_people)]
    share = world.rates["esp_written_back"]
    for j, person in enumerate(aud.person):
        if person < 0 or aud.changed_ms[j] >= world.start_ms or int(aud.hash[j][-4:], 16) / 0x10000 >= share:
            continue
        day = iso_day(int(aud.changed_ms[j]))
        if aud.status[j] == CLEANED:
            out[person] = {
                "email_invalid": "true",
                "email_invalid_date": day,
                "email_invalid_reason": "hard_bounce",
            }
        elif aud.status[j] == UNSUBSCRIBED:
            out[person] = {"marketing_opt_out_date": day}
    return out
