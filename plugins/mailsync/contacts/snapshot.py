"""The contacts snapshot: the latest validated version of every CRM contact, per key bucket.

Why a snapshot: a contact whose loyalty tier changed tonight was not modified in the CRM, and a
contact deleted in the CRM no longer appears in any extract; with the snapshot every night
computes the whole desired audience (CPU, cheap) while sending only its difference (API calls).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from mailsync.contacts.areas import contacts_snapshot, loyalty_snapshot, next_snapshot
from mailsync.contacts.extract import ID, MODIFIED, advance_high_water
from mailsync.contacts.loyalty import has_loyalty, loyalty_rows
from mailsync.mapping import engine
from mailsync.mapping import types as t
from mailsync.operators import sync
from mailsync.operators.run import Run
from mailsync.operators.staged import concat
from mailsync.staging import Area

log = logging.getLogger(__name__)


def transform(run: Run, m, partition: int, buckets: list[int], *, full: bool) -> dict[str, Any]:
    """Merge tonight's good rows into the snapshot of these buckets; map them to ESP members.

    After a full extract the snapshot is rebuilt from it: contacts gone from the CRM (deleted,
    erased) drop out, while a contact whose row was quarantined tonight keeps its last good
    version (a bad birthday must not archive anybody). After an incremental extract, tonight's
    versions are merged in.
    """
    validated = run.area / "validated" / "contacts"
    delta_ids = concat(validated.iter_parquet(), columns=[ID, MODIFIED])
    # ids as Arrow text, matched by Arrow's hash set: a Python set of a million ids takes 86 MiB
    extracted = concat((run.area / "extract" / "contacts").iter_parquet(columns=[ID]))[ID] if full else None
    good_ids = delta_ids[ID]
    archived = (run.area / "extract").read_parquet("archived.parquet")
    desired_out = run.area / "desired"
    snapshot, tonight = contacts_snapshot(run), next_snapshot(run) / "contacts"
    loyalty = partition_loyalty(run, m, buckets, validated, snapshot)
    counts = {"partition": partition, "buckets": buckets, "contacts": 0, "duplicates": 0, "members": 0}
    for bucket in buckets:
        name = f"bucket={bucket:02d}"
        delta = concat((validated / name).iter_parquet())
        current = snapshot.read_parquet(f"{name}.parquet") if snapshot.exists(f"{name}.parquet") else None
        if current is None:
            merged = delta
        elif full:
            still_there = t.is_in(current[ID], extracted) & ~t.is_in(current[ID], good_ids)
            merged = pd.concat([delta, current[still_there]], ignore_index=True)
        else:
            merged = _merge(current, delta, delta_ids, archived)
        tonight.write_parquet(f"{name}.parquet", merged)
        kept, dropped = engine.deduplicate(m, "contacts", merged)
        members = engine.transform(m, kept, {"loyalty": loyalty} if loyalty is not None else {})
        members[sync.BUCKET] = bucket
        desired_out.write_parquet(f"{name}.parquet", members)
        counts["contacts"] += len(merged)
        counts["duplicates"] += len(dropped)
        counts["members"] += len(members)
    return counts


def partition_loyalty(run: Run, m, buckets: list[int], validated: Area, snapshot: Area):
    """Tonight's loyalty tiers (else the last committed ones) of the customers this partition's
    contacts name: the snapshot is filed by customer id and the partition by email, so it is
    read filtered on the customer ids of the partition's contacts (tonight's and the snapshot's),
    never whole. None when there is no loyalty snapshot yet."""
    area = next((a for a in (next_snapshot(run) / "loyalty", loyalty_snapshot(run)) if has_loyalty(a)), None)
    if area is None:
        return None
    join = m.sources["loyalty"].join
    ids = []
    for bucket in buckets:
        name = f"bucket={bucket:02d}"
        ids += [f[join] for f in (validated / name).iter_parquet(columns=[join])]
        if snapshot.exists(f"{name}.parquet"):
            ids.append(snapshot.read_parquet(f"{name}.parquet", columns=[join])[join])
    customers = pd.concat(ids, ignore_index=True) if ids else pd.Series(dtype="string")
    return loyalty_rows(area, m.sources["loyalty"].key.input, customers)


def _merge(
    current: pd.DataFrame, delta: pd.DataFrame, delta_ids: pd.DataFrame, archived: pd.DataFrame
) -> pd.DataFrame:
    """Latest version of every contact of a bucket; a rerun or an older backfill changes nothing.

    A contact may move between buckets when its email changes, so versions are compared against
    tonight's ids of all buckets, not only this one.
    """
    both = pd.concat([current, delta], ignore_index=True)
    if both.empty:
        return both
    newest = pd.concat([both[[ID, MODIFIED]], delta_ids], ignore_index=True).groupby(ID)[MODIFIED].max()
    # instants compared as numpy datetime64 in UTC (`.values`): `to_numpy()` of a zoned column makes
    # a Timestamp object per row (5 s of a 500k-contact partition's 17); NaT equals nothing either way
    is_newest = both[MODIFIED].values == newest.reindex(both[ID]).values
    latest = both[is_newest].drop_duplicates(ID, keep="last")  # the same version twice (rerun): keep one
    gone_at = pd.to_datetime(archived.set_index("id")["archived_at"], utc=True, errors="coerce")
    gone_at = gone_at[~gone_at.index.duplicated()].reindex(latest[ID])
    archived_after = (gone_at.values >= latest[MODIFIED].values) & gone_at.notna().to_numpy()
    return latest[~archived_after].reset_index(drop=True)


def commit(run: Run, *, full: bool) -> dict[str, Any]:
    """After every partition's load: tonight's snapshots replace the current ones and the
    high-water mark moves to the interval's end. Until then a failed or stopped run has changed
    neither, so its rerun (or the next night) starts from the same place.

    Only after a full extract can a contact leave the snapshot without an archive (an erasure):
    an incremental night merges its rows in and drops only the archived ones (`_merge`), so the
    comparison of both snapshots, a read of each whole, is made on full extracts alone."""
    if run.params.get("dry_run"):
        return {"committed": False, "reason": "dry_run"}
    staged = next_snapshot(run)
    from mailsync.operators.retention import record_crm_erasures

    # contacts gone without an archive were erased in the CRM: noted before the snapshot forgets them
    erased = record_crm_erasures(run, contacts_snapshot(run), staged / "contacts") if full else 0
    files = 0
    for kind, target in (("contacts", contacts_snapshot(run)), ("loyalty", loyalty_snapshot(run))):
        source = staged / kind
        for name in sorted(source.names(), key=lambda n: (n.endswith(".txt"), n)):  # asof.txt last
            target.write_bytes(name, source.file(name).read_bytes())
            files += 1
    advance_high_water(run)
    log.info("Committed %d snapshot files; high-water mark %s", files, run.end.isoformat())
    return {
        "committed": True,
        "snapshot_files": files,
        "high_water": run.end.isoformat(),
        "erasures_recorded": erased,
    }
