"""The daily store and each contact's values derived from it.

Each interval's activity is aggregated per contact into one file of the store (in the DAG's
state area, `daily/interval=<label>.parquet`), replaced when the interval runs again. A touched
contact's values are derived from **all** stored days: sums of counts, the latest open and
click, the earliest bounce and unsubscribe; so days may run in any order, or twice, with the
same result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from mailsync.mapping import engine

if TYPE_CHECKING:
    from mailsync.mapping.spec import Mapping
    from mailsync.operators.run import Run
    from mailsync.staging import Area

STORE = "daily"  # the folder of the store in the DAG's state area
SOURCE = "totals"  # the mapping's source the derived values are read as
MOMENT = "datetime64[us, UTC]"
DAILY_SCHEMA = {
    "email": "string",
    "opens": "int64",
    "clicks": "int64",
    "soft_bounces": "int64",
    "last_open_at": MOMENT,
    "last_click_at": MOMENT,
    "hard_bounce_at": MOMENT,
    "unsubscribed_at": MOMENT,
    "campaigns": "string",
    "hard_bounce_campaign": "string",
    "unsubscribe_campaign": "string",
}
COUNTS = ("opens_total", "clicks_total", "soft_bounces_total", "campaigns_engaged")
NARROWING = {  # sent only when this interval holds the event (see derive)
    "unsubscribed_at": ("unsubscribed", "unsubscribed_at", "unsubscribe_campaign"),
    "hard_bounce_at": ("hard_bounced", "hard_bounce_at", "hard_bounce_campaign"),
}


def day_file(run: Run) -> str:
    """The name of the interval's file in the store (and in the clicks folder)."""
    return f"interval={run.label}.parquet"


def daily_aggregate(events: pd.DataFrame) -> pd.DataFrame:
    """Per contact: counts and first/last moments of one interval's events."""
    e = events.rename(columns={engine.KEY: "email"})
    is_ = {a: e["action"].eq(a).fillna(False) for a in ("open", "click", "bounce", "unsubscribe")}
    hard = is_["bounce"] & e["type"].eq("hard").fillna(False)
    soft = is_["bounce"] & ~e["type"].eq("hard").fillna(False)
    g = e.assign(
        opens=is_["open"].astype(int),
        clicks=is_["click"].astype(int),
        soft_bounces=soft.astype(int),
        open_at=e["timestamp"].where(is_["open"]),
        click_at=e["timestamp"].where(is_["click"]),
        hard_at=e["timestamp"].where(hard),
        unsub_at=e["timestamp"].where(is_["unsubscribe"]),
        engaged=e["campaign_id"].where(is_["open"] | is_["click"]),
    ).groupby("email", sort=True)
    daily = g.agg(
        opens=("opens", "sum"),
        clicks=("clicks", "sum"),
        soft_bounces=("soft_bounces", "sum"),
        last_open_at=("open_at", "max"),
        last_click_at=("click_at", "max"),
        hard_bounce_at=("hard_at", "min"),
        unsubscribed_at=("unsub_at", "min"),
    )
    daily["campaigns"] = g["engaged"].agg(lambda s: ",".join(sorted(set(s.dropna()))))
    daily["hard_bounce_campaign"] = _campaign_at(e, hard, daily["hard_bounce_at"])
    daily["unsubscribe_campaign"] = _campaign_at(e, is_["unsubscribe"], daily["unsubscribed_at"])
    return daily.reset_index().astype(DAILY_SCHEMA)  # one schema for every day file of the store


def _campaign_at(events: pd.DataFrame, mask: pd.Series, moments: pd.Series) -> pd.Series:
    """The campaign of each contact's first event of a kind (ties: smallest campaign id)."""
    hits = events[mask.to_numpy()].sort_values(["email", "timestamp", "campaign_id"])
    first = hits.drop_duplicates("email").set_index("email")["campaign_id"]
    return moments.index.to_series().map(first).where(moments.notna())


def totals(daily: pd.DataFrame) -> pd.DataFrame:
    """Combine per-day aggregates of each contact over every stored day (order-independent)."""
    g = daily.groupby("email", sort=True)
    out = g.agg(
        opens_total=("opens", "sum"),
        clicks_total=("clicks", "sum"),
        soft_bounces_total=("soft_bounces", "sum"),
        last_open_at=("last_open_at", "max"),
        last_click_at=("last_click_at", "max"),
        hard_bounce_at=("hard_bounce_at", "min"),
        unsubscribed_at=("unsubscribed_at", "min"),
    )
    out["campaigns_engaged"] = g["campaigns"].agg(
        lambda days: len({c for cs in days.dropna() for c in cs.split(",") if c})
    )
    firsts = {
        "hard_bounce_campaign": ("hard_bounce_at", "hard_bounce_campaign"),
        "unsubscribe_campaign": ("unsubscribed_at", "unsubscribe_campaign"),
    }
    for column, (moment, campaign) in firsts.items():
        earliest = daily.dropna(subset=[moment]).sort_values([moment, campaign]).drop_duplicates("email")
        out[column] = out.index.to_series().map(earliest.set_index("email")[campaign])
    out["hard_bounced"] = out["hard_bounce_at"].notna()
    out["unsubscribed"] = out["unsubscribed_at"].notna()
    return out.reset_index()


def replace_day(store: Area, name: str, day: pd.DataFrame | None) -> set[str]:
    """Put the interval's aggregate in the store in place of its previous version (none: the
    file goes); returns the contacts the previous version had (their totals change too)."""
    before = set(store.read_parquet(name, columns=["email"])["email"]) if store.exists(name) else set()
    if day is not None:
        store.write_parquet(name, day)
    elif store.exists(name):
        store.file(name).unlink()
    return before


def history(store: Area, emails: list[str]) -> pd.DataFrame | None:
    """Every stored day of these contacts (None: the store is empty)."""
    import pyarrow.dataset as ds

    if not store.names(".parquet"):
        return None
    dataset = ds.dataset(store.path.path, filesystem=store.path.fs, format="parquet")
    return dataset.to_table(filter=ds.field("email").isin(emails)).to_pandas()


def derive(
    m: Mapping, store: Area, touched: list[str], day: pd.DataFrame | None, pending: set[str]
) -> pd.DataFrame:
    """The touched contacts' values as the mapping's `totals` source (raw, before mapping).

    An opt-out or an invalid email is kept only for contacts whose `day` holds the unsubscribe
    or hard bounce (a later open of someone who re-subscribed elsewhere never opts them out
    again), or whose last write is still `pending`."""
    days = history(store, touched)
    raw = totals(days) if days is not None and len(days) else pd.DataFrame({"email": touched})
    raw = raw.set_index("email").reindex(touched).reset_index()  # a contact with no day left: totals zero
    for column in m.sources[SOURCE].inputs:
        if column not in raw:
            raw[column] = None
    for column in COUNTS:
        raw[column] = raw[column].fillna(0)
    today = day.set_index("email") if day is not None else pd.DataFrame(columns=list(NARROWING))
    for moment, columns in NARROWING.items():
        here = raw["email"].map(today[moment]).notna().to_numpy() if moment in today else False
        here = here | raw["email"].isin(pending).to_numpy()
        for column in columns:
            if column in raw:
                raw[column] = raw[column].astype(object).where(here, None)
    return raw


def update(
    run: Run, m: Mapping, events: pd.DataFrame, *, pending: set[str], desired: Area, name: str
) -> dict[str, Any]:
    """Replace this interval's day in the store; write touched contacts' CRM records to
    `desired`/`name` (mapped, keyed, bucketed).

    Touched: contacts with events in this interval, those the interval's previous version had
    (a rerun that finds fewer events must lower their totals), and the `pending` ones whose last
    write the CRM refused (they are sent again until it accepts them)."""
    from mailsync.operators import sync
    from mailsync.settings import BUCKETS

    day = daily_aggregate(events) if len(events) else None
    store = run.current / STORE
    before = replace_day(store, day_file(run), day)
    touched = sorted(before | set(day["email"] if day is not None else []) | pending)
    desired.clear()
    if not touched:
        return {"events": 0, "contacts_touched": 0}
    raw = derive(m, store, touched, day, pending)
    records = engine.transform(m, engine.prepare(m, SOURCE, raw))
    records[sync.BUCKET] = engine.bucket_of(records[engine.KEY], BUCKETS)
    desired.write_parquet(name, records)
    return {
        "events": len(events),
        "contacts_touched": len(touched),
        "days_in_store": len(store.names(".parquet")),
    }
