"""Task logic of the daily ESP -> CRM engagement write-back (DAG esp_to_crm_engagement).

Idempotent by construction: each interval's activity is aggregated per contact into the daily
store (one file per interval, replaced on rerun); a touched contact's CRM values are derived
from all stored days — sums, earliest bounce/unsubscribe, latest open/click — and written as
absolute values. Running a day twice, or backfilling days in any order, gives the same CRM.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from mailsync.hooks.crm import CrmHook
from mailsync.hooks.esp import EspHook
from mailsync.mapping import engine
from mailsync.mapping.spec import load_mapping
from mailsync.operators import sync
from mailsync.operators.run import Run
from mailsync.operators.staged import concat, stage_pages, validate_chunks
from mailsync.settings import BUCKETS
from mailsync.state import SyncState

log = logging.getLogger(__name__)
INTEGRATION = "esp_to_crm_engagement"
EVENT_COLUMNS = ["campaign_id", "email_address", "action", "type", "timestamp", "url"]
_MOMENT = "datetime64[us, UTC]"
DAILY_SCHEMA = {
    "email": "string",
    "opens": "int64",
    "clicks": "int64",
    "soft_bounces": "int64",
    "last_open_at": _MOMENT,
    "last_click_at": _MOMENT,
    "hard_bounce_at": _MOMENT,
    "unsubscribed_at": _MOMENT,
    "campaigns": "string",
    "hard_bounce_campaign": "string",
    "unsubscribe_campaign": "string",
}


def mapping():
    return load_mapping(INTEGRATION)


def _parse(ts: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")) if ts else None
    except ValueError:
        return None


def _within(run: Run, events: list[dict]) -> list[dict]:
    """Events in [start, end); unparseable timestamps are kept for the quality gate to quarantine."""
    kept = []
    for e in events:
        moment = _parse(e.get("timestamp"))
        if moment is None or run.start <= moment < run.end:
            kept.append(e)
    return kept


# -- extract ---------------------------------------------------------------------------------------
def extract(run: Run) -> dict[str, Any]:
    """Stage the interval's opens, clicks, bounces and unsubscribes of every recent campaign."""
    started_at = datetime.now(UTC).isoformat()
    hook = EspHook()
    lookback = timedelta(days=int(run.params.get("campaign_lookback_days", 30)))
    campaigns = [
        c["id"]
        for page in hook.iter_campaigns(
            since_send_time=(run.start - lookback).isoformat(), before_send_time=run.end.isoformat()
        )
        for c in page
    ]

    def events():
        for campaign in campaigns:
            for page in hook.iter_email_activity(campaign, since=run.start.isoformat()):
                yield _within(run, page)
            for page in hook.iter_unsubscribes(campaign):
                yield _within(run, page)

    rows = stage_pages(events(), run.area / "extract" / "activity", columns=EVENT_COLUMNS)
    log.info("Extracted %d activity rows of %d campaigns", rows, len(campaigns))
    return {"started_at": started_at, "campaigns": len(campaigns), "rows": rows, **hook.stats.as_dict()}


# -- validate --------------------------------------------------------------------------------------
def validate(run: Run) -> dict[str, Any]:
    out = run.area / "validated" / "activity"
    out.clear()
    return validate_chunks(
        mapping(),
        "activity",
        run.area / "extract" / "activity",
        run.area / "quality" / "activity",
        label=f"{run.dag_id} {run.label}",
        write_good=lambda i, good: out.write_parquet(f"part-{i:05d}.parquet", good),
    )


# -- transform -------------------------------------------------------------------------------------
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


NARROWING = {  # sent only when this interval holds the event (see transform)
    "unsubscribed_at": ("unsubscribed", "unsubscribed_at", "unsubscribe_campaign"),
    "hard_bounce_at": ("hard_bounced", "hard_bounce_at", "hard_bounce_campaign"),
}


def transform(run: Run) -> dict[str, Any]:
    """Replace this interval's day in the daily store; derive touched contacts' CRM values.

    Touched: contacts with events in this interval, those the interval's previous version
    had (a rerun that finds fewer events must lower their totals), and those whose last write
    the CRM refused (see `load`: they are sent again until it accepts them). An opt-out or an
    invalid email is written only by the interval that holds the unsubscribe or hard bounce
    (a later open of someone who re-subscribed elsewhere never opts them out again), or while
    its write is still pending.
    """
    import pyarrow.dataset as ds

    events = concat((run.area / "validated" / "activity").iter_parquet())
    day = daily_aggregate(events) if len(events) else None
    store = run.current / "daily"
    name = f"interval={run.label}.parquet"
    _store_clicks(run, events, name)
    before = set(store.read_parquet(name, columns=["email"])["email"]) if store.exists(name) else set()
    if day is None:
        if store.exists(name):
            store.file(name).unlink()
    else:
        store.write_parquet(name, day)
    pending = _pending(run)
    touched = sorted(before | set(day["email"] if day is not None else []) | pending)
    (run.area / "desired").clear()
    if not touched:
        return {"events": 0, "contacts_touched": 0}
    target = store.path
    dataset = (
        ds.dataset(target.path, filesystem=target.fs, format="parquet") if store.names(".parquet") else None
    )
    history = dataset.to_table(filter=ds.field("email").isin(touched)).to_pandas() if dataset else None
    raw = totals(history) if history is not None and len(history) else pd.DataFrame({"email": touched})
    raw = raw.set_index("email").reindex(touched).reset_index()  # a contact with no day left: totals zero
    m = mapping()
    for column in m.sources["totals"].inputs:
        if column not in raw:
            raw[column] = None
    for column in ("opens_total", "clicks_total", "soft_bounces_total", "campaigns_engaged"):
        raw[column] = raw[column].fillna(0)
    today = day.set_index("email") if day is not None else pd.DataFrame(columns=list(NARROWING))
    for moment, columns in NARROWING.items():
        here = raw["email"].map(today[moment]).notna().to_numpy() if moment in today else False
        here = here | raw["email"].isin(pending).to_numpy()
        for column in columns:
            if column in raw:
                raw[column] = raw[column].astype(object).where(here, None)
    desired = engine.transform(m, engine.prepare(m, "totals", raw))
    desired[sync.BUCKET] = engine.bucket_of(desired[engine.KEY], BUCKETS)
    (run.area / "desired").write_parquet("contacts.parquet", desired)
    return {
        "events": len(events),
        "contacts_touched": len(touched),
        "days_in_store": len(store.names(".parquet")),
    }


PENDING = "pending_writeback.parquet"  # emails whose last write the CRM refused


def _pending(run: Run) -> set[str]:
    return set(run.current.read_parquet(PENDING)["email"]) if run.current.exists(PENDING) else set()


def _keep_pending(run: Run, emails: list[str]) -> None:
    """Contacts the CRM refused are touched again by the next run (whatever its events), so a
    refused update is retried, not lost; the next run replaces this list."""
    if emails:
        run.current.write_parquet(PENDING, pd.DataFrame({"email": sorted(emails)}).astype("string"))
    elif run.current.exists(PENDING):
        run.current.file(PENDING).unlink()


def _store_clicks(run: Run, events: pd.DataFrame, name: str) -> None:
    """Every click of the interval (email, campaign, moment): the shop DAG attributes orders to
    the last click before them. Replaced on rerun, like the daily aggregate."""
    clicks = run.current / "clicks"
    if events.empty or not events["action"].eq("click").any():
        if clicks.exists(name):
            clicks.file(name).unlink()
        return
    hits = events[events["action"].eq("click").fillna(False).to_numpy()]
    frame = pd.DataFrame(
        {"email": hits[engine.KEY], "campaign_id": hits["campaign_id"], "clicked_at": hits["timestamp"]}
    ).astype({"email": "string", "campaign_id": "string", "clicked_at": _MOMENT})
    clicks.write_parquet(name, frame)


def clicks_between(start: datetime, end: datetime) -> pd.DataFrame:
    """Moved: mailsync.engagement.clicks.clicks_between (kept until the operators replace this module)."""
    from mailsync.engagement.clicks import clicks_between as between

    return between(INTEGRATION, start, end)


# -- diff and load ---------------------------------------------------------------------------------
def load(run: Run) -> dict[str, Any]:
    """Write changed contacts' values to the CRM (by email, to every record sharing it as the
    mapping's `write_back` says; never creates contacts)."""
    area = run.area / "desired"
    if not area.exists("contacts.parquet"):
        return {"written": 0, "unknown_contacts": 0, "api_calls": 0}
    desired = area.read_parquet("contacts.parquet")
    state = SyncState(INTEGRATION)
    acked = state.load(sorted(set(desired[sync.BUCKET])))
    upserts, _, counts = sync.diff(desired, acked)  # removals do not apply: only touched contacts
    if run.params.get("dry_run"):
        return {**counts, "dry_run": True, "would_write": len(upserts)}
    m = mapping()
    meta = sync.ack_meta(upserts)
    hook = CrmHook()
    written, rejected = 0, []
    all_records = m.destination.write_back == "all_records_with_email"
    for result in hook.update_contacts(sync.payloads(m, upserts), all_records=all_records):
        sync.acknowledge(state, result.accepted, meta, run.run_id)
        written += len(result.accepted)
        rejected.extend(result.rejected)
    unknown = sum(1 for r in rejected if r["reason"] == "unknown_contact")
    retry = sorted({r["key"] for r in rejected if r["reason"] != "unknown_contact"})
    _keep_pending(run, retry)
    path = (run.area / "load").write_text("rejected.csv", sync.rejected_csv(rejected))
    log.info(
        "CRM: %d contacts written, %d unknown to the CRM (reported, not created), %d other rejections",
        written,
        unknown,
        len(rejected) - unknown,
    )
    return {
        **counts,
        "written": written,
        "unknown_contacts": unknown,
        "rejected": len(rejected) - unknown,
        "retried_next_run": len(retry),
        "rejected_file": str(path),
        **hook.stats.as_dict(),
    }
