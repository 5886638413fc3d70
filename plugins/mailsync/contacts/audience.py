"""`mirror`: the ESP audience as it is, for a first sync against an audience that already
holds people the CRM does not have."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from mailsync.contacts.areas import audience_area
from mailsync.hooks.esp import EspHook
from mailsync.mapping import engine
from mailsync.operators.run import Run
from mailsync.operators.staged import concat
from mailsync.settings import BUCKETS

log = logging.getLogger(__name__)


def list_audience(run: Run, hook: EspHook) -> dict[str, Any]:
    """With `mirror`: list the ESP audience (email and status, 1,000 per call) and stage, per key
    bucket, the members no contact of tonight's full CRM extract has (archived or deleted in the
    CRM before our first sync, or never there). Every extracted contact counts, valid or not: a
    contact whose row was quarantined tonight is not a reason to archive anybody. Members the
    ESP already keeps archived are left alone. Without `mirror` nothing is listed."""
    out = audience_area(run)
    out.clear()
    if not run.params.get("mirror"):
        return {"mirror": False}
    from mailsync.mapping import types as t

    crm = set(
        t.email(concat((run.area / "extract" / "contacts").iter_parquet(columns=["email"]))["email"]).dropna()
    )
    pages = [
        pd.DataFrame(page, columns=["email_address", "status"])
        for page in hook.iter_members(fields="email_address,status")
    ]
    listed = concat(pages, columns=["email_address", "status"]).astype("string")
    members = pd.DataFrame({"key": t.email(listed["email_address"]), "status": listed["status"]})
    members = members[
        members["key"].notna().to_numpy() & members["status"].ne("archived").fillna(True).to_numpy()
    ]
    members = members.drop_duplicates("key")
    members["bucket"] = engine.bucket_of(members["key"], BUCKETS)
    absent = members[~members["key"].isin(crm).to_numpy()]
    for bucket, rows in absent.groupby("bucket", sort=True):
        out.write_parquet(f"bucket={bucket:02d}.parquet", rows.reset_index(drop=True))
    sizes = members.groupby("bucket").size().rename("members").reset_index()
    out.write_parquet("sizes.parquet", sizes)
    log.info(
        "Mirror: the ESP audience holds %d members, %d of them unknown to the CRM", len(members), len(absent)
    )
    return {"mirror": True, "audience": len(members), "absent_from_crm": len(absent), **hook.stats.as_dict()}


def mirror_removals(run: Run, buckets: list[int], desired: pd.DataFrame, removals: pd.DataFrame):
    """(the partition's audience members to archive by `mirror`, the partition's audience size)."""
    area = audience_area(run)
    if not area.exists("sizes.parquet"):
        return removals.iloc[0:0], 0
    sizes = area.read_parquet("sizes.parquet")
    size = int(sizes.loc[sizes["bucket"].isin(buckets), "members"].sum())
    absent = concat(
        area.read_parquet(f"bucket={b:02d}.parquet")
        for b in buckets
        if area.exists(f"bucket={b:02d}.parquet")
    )
    if absent.empty:
        return removals.iloc[0:0], size
    keep = absent["key"].isin(desired[engine.KEY]) | absent["key"].isin(removals["key"])
    absent = absent[~keep.to_numpy()]
    frame = pd.DataFrame(
        {
            "key": absent["key"].astype("string"),
            "fingerprint": pd.Series(pd.NA, index=absent.index, dtype="string"),
            "status": absent["status"].astype("string"),
            "bucket": absent["bucket"].astype("int64"),
        }
    )
    return frame.reset_index(drop=True), size
