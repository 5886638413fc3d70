"""The people of the generated world (one truth), and the CRM's dirty view of them.

A person has one true, valid, lower-case email and one set of true attributes; each system then
shows its own view: the CRM with the dirt real CRMs have (spaces and case in emails, invalid
addresses, duplicates, mixed date formats, country names instead of codes, ...), the ESP with
partly stale merge fields, the shop with the email sometimes in another case.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from sandbox import vocab
from sandbox.timefmt import DAY_MS
from sandbox.world import World

_FIRST_A = np.array(vocab.FIRST_ASCII, dtype=object)
_FIRST_X = np.array(vocab.FIRST_ACCENT, dtype=object)
_LAST_A = np.array(vocab.LAST_ASCII, dtype=object)
_LAST_X = np.array(vocab.LAST_ACCENT, dtype=object)
_FOLDED = {
    n: vocab.ascii_fold(n)
    for n in [*vocab.FIRST_ASCII, *vocab.FIRST_ACCENT, *vocab.LAST_ASCII, *vocab.LAST_ACCENT]
}
_COUNTRY_P = np.array([c[4] for c in vocab.COUNTRIES]) / sum(c[4] for c in vocab.COUNTRIES)
_DOB_START = np.datetime64("1940-01-01")
_DOB_DAYS = int((np.datetime64("2006-12-31") - _DOB_START).astype(int))
YEAR_MS = 365 * DAY_MS


def customer_id(world: World, index: np.ndarray) -> np.ndarray:
    """ "C" + 7 digits, unique per person: an affine bijection of the index modulo 10^7."""
    return (np.int64(7_919_371) * index.astype(np.int64) + np.int64(1_234_567) * world.seed) % 10_000_000


@dataclass
class People:
    idx: np.ndarray
    first: np.ndarray
    last: np.ndarray
    email: list[str]
    country: np.ndarray
    city: list[str]
    dob: np.ndarray
    lang: list[str]
    cid: list[str | None]
    consent: np.ndarray  # 0 "true", 1 "false", 2 null
    created_ms: np.ndarray
    modified_ms: np.ndarray

    def __len__(self) -> int:
        return len(self.idx)


def make_people(world: World, chunk: int, start: int, count: int) -> People:
    r = world.rng(chunk, "people")
    rates = world.rates
    idx = np.arange(start, start + count, dtype=np.int64)
    u = r.random(count)
    cjk = u < rates["cjk_name"]
    accented = ~cjk & (u < rates["cjk_name"] + rates["non_ascii_name"])
    which = r.random(count)  # accent on the first name, the last name, or both
    first = np.where(
        accented & (which < 0.6),
        _FIRST_X[r.integers(len(_FIRST_X), size=count)],
        _FIRST_A[r.integers(len(_FIRST_A), size=count)],
    )
    last = np.where(
        accented & (which > 0.3),
        _LAST_X[r.integers(len(_LAST_X), size=count)],
        _LAST_A[r.integers(len(_LAST_A), size=count)],
    )
    cjk_pick = r.integers(len(vocab.CJK), size=count)
    domain = r.integers(len(vocab.DOMAINS), size=count)
    emails = []
    for i in range(count):
        if cjk[i]:
            f, la, fa, lat = vocab.CJK[cjk_pick[i]]
            first[i], last[i] = f, la
        else:
            fa, lat = _FOLDED[first[i]], _FOLDED[last[i]]
        emails.append(f"{fa}.{lat}{idx[i]}@{vocab.DOMAINS[domain[i]]}")
    country = r.choice(len(vocab.COUNTRIES), size=count, p=_COUNTRY_P)
    city_pick = r.integers(0, 1 << 30, size=count)
    cities = [
        vocab.COUNTRIES[c][2][k % len(vocab.COUNTRIES[c][2])] for c, k in zip(country, city_pick, strict=True)
    ]
    langs = [vocab.COUNTRIES[c][3] for c in country]
    dob = _DOB_START + r.integers(0, _DOB_DAYS, size=count).astype("timedelta64[D]")
    cid_num = customer_id(world, idx)
    cid_missing = r.random(count) < rates["customer_id_missing"]
    cids = [None if miss else f"C{n:07d}" for n, miss in zip(cid_num, cid_missing, strict=True)]
    consent = np.searchsorted(
        np.cumsum([rates["consent_true"], rates["consent_false"]]), r.random(count), side="right"
    )
    created = world.start_ms - DAY_MS - (r.random(count) * 6 * YEAR_MS).astype(np.int64)
    in_window = r.random(count) < min(1.0, rates["crm_daily_change"] * world.days)
    modified = np.where(
        in_window,
        world.start_ms + (r.random(count) * (world.now_ms - world.start_ms)).astype(np.int64),
        created + (r.random(count) * (world.start_ms - created)).astype(np.int64),
    )
    return People(idx, first, last, emails, country, cities, dob, langs, cids, consent, created, modified)


def _messy_email(email: str, k: int) -> str:
    local, _, domain = email.partition("@")
    variants = [
        f" {email}",
        f"{email} ",
        email.upper(),
        f"{local.capitalize()}@{domain.capitalize()}",
        f"  {local.title()}@{domain} ",
        f"{local}@{domain.upper()}",
    ]
    return variants[k % len(variants)]


def _invalid_email(email: str, first: str, last: str, k: int) -> str:
    local = email.partition("@")[0]
    return vocab.INVALID_EMAIL_FORMS[k % len(vocab.INVALID_EMAIL_FORMS)].format(
        local=local, first=first, last=last
    )


def _messy_name(name: str, k: int) -> str:
    if k % 3 == 0 and not name.isascii():
        return unicodedata.normalize("NFD", name)
    return [f"{name}  ", f" {name}", name.replace(" ", "  ") + " "][k % 3]


def _dob_text(d, kind: int, k: int) -> str | None:
    """``d`` a datetime.date; ``kind`` the format drawn (see ``crm_rows``)."""
    if kind == 0:
        return None if k % 2 else ""
    if kind == 1:
        return [f"31.02.{d.year}", f"{d.year}-02-30", f"30.02.{d.year}", f"04/31/{d.year}"][k % 4]
    if kind == 2:
        return vocab.DOB_GARBAGE[k % len(vocab.DOB_GARBAGE)]
    if kind == 3:
        return f"{d.day:02d}.{d.month:02d}.{d.year}"
    if kind == 4:
        return f"{d.month:02d}/{d.day:02d}/{d.year}"
    return d.isoformat()


def _country_text(code: int, u: float, rates: dict) -> str | None:
    iso, name = vocab.COUNTRIES[code][0], vocab.COUNTRIES[code][1]
    if u < rates["country_empty"]:
        return None
    if u < rates["country_empty"] + rates["country_messy"]:
        return f"{name.lower()} "
    if u < rates["country_empty"] + rates["country_messy"] + rates["country_name"]:
        return name
    return iso


@dataclass
class CrmExtras:
    """What the CRM knows from the other systems: shop figures and earlier write-backs."""

    ltv: list[str | None]
    last_order: list[str | None]
    engagement: list[dict]


def crm_rows(world: World, chunk: int, people: People, extras: CrmExtras) -> list[tuple]:
    """The CRM rows of this chunk (primary rows and duplicates), as crm_contacts tuples."""
    r = world.rng(chunk, "crm")
    rates = world.rates
    n = len(people)
    u_email, u_name, u_dob, u_country, u_lang, u_city, u_arch = (r.random(n) for _ in range(7))
    ks = r.integers(0, 1 << 30, size=n).tolist()
    edges = np.cumsum(
        [
            rates["dob_empty"],
            rates["dob_impossible"],
            rates["dob_garbage"],
            rates["dob_german"],
            rates["dob_us"],
        ]
    )
    dob_kind = np.searchsorted(edges, u_dob, side="right").tolist()
    dobs = people.dob.astype(object)
    dup = r.random(n) < rates["duplicate"]
    archived_ms = (
        world.start_ms
        - DAY_MS * 30
        + (r.random(n) * (world.now_ms - world.start_ms + DAY_MS * 30)).astype(np.int64)
    )
    rows = []
    for i in range(n):
        k = ks[i]
        email = people.email[i]
        if u_email[i] < rates["email_invalid"]:
            shown = _invalid_email(email, people.first[i], people.last[i], k)
        elif u_email[i] < rates["email_invalid"] + rates["email_messy"]:
            shown = _messy_email(email, k)
        else:
            shown = email
        first, last = people.first[i], people.last[i]
        if u_name[i] < rates["missing_name"]:
            first, last = (None, last) if k % 5 < 3 else (first, None)
        elif u_name[i] < rates["missing_name"] + rates["name_messy"]:
            first = _messy_name(first, k)
        lang = people.lang[i]
        if u_lang[i] < 0.15:
            language = None if k % 2 else ""
        elif u_lang[i] < 0.25:
            language = f"{lang}-{vocab.COUNTRIES[people.country[i]][0]}"
        else:
            language = lang
        city = people.city[i] if u_city[i] > 0.05 else None
        consent = ("true", "false", None)[people.consent[i]]
        eng = extras.engagement[i]
        archived = u_arch[i] < rates["crm_archived"]
        contact_id = 1001 + int(people.idx[i])
        row = [
            contact_id,
            shown,
            shown.strip().lower(),
            first,
            last,
            _dob_text(dobs[i], dob_kind[i], k),
            city,
            _country_text(people.country[i], u_country[i], rates),
            language,
            people.cid[i],
            consent,
            extras.ltv[i],
            extras.last_order[i],
            eng.get("email_invalid"),
            eng.get("email_invalid_date"),
            eng.get("email_invalid_reason"),
            eng.get("marketing_opt_out_date"),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            int(people.created_ms[i]),
            int(people.modified_ms[i]),
            int(archived),
            int(archived_ms[i]) if archived else None,
        ]
        rows.append(tuple(row))
        if dup[i]:
            rows.append(_duplicate(world, row, email, k, people, i))
    return rows


def _duplicate(world: World, row: list, email: str, k: int, people: People, i: int) -> tuple:
    """The same person entered again later (a form, an import): other case/spaces, some fields differ."""
    twin = list(row)
    twin[0] = 1001 + world.contacts + int(people.idx[i])
    shown = [email.upper(), f" {email}", email.capitalize(), f"{email} "][k % 4]
    twin[1], twin[2] = shown, shown.strip().lower()
    twin[6] = vocab.COUNTRIES[people.country[i]][2][(k >> 3) % len(vocab.COUNTRIES[people.country[i]][2])]
    twin[5] = None if k % 3 == 0 else twin[5]
    twin[9] = None  # entered without the shop's customer id
    twin[10] = ["true", "false", None][(k >> 5) % 3]
    created = int(people.created_ms[i]) + DAY_MS * (1 + (k >> 7) % 300)
    twin[24] = min(created, world.start_ms - DAY_MS)
    twin[25] = max(twin[24], int(people.modified_ms[i]) + (DAY_MS if k % 2 else -DAY_MS))
    twin[25] = min(twin[25], world.now_ms - 1)
    twin[26], twin[27] = 0, None
    return tuple(twin)
