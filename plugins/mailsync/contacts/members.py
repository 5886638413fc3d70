"""A partition's desired ESP members against what the ESP acknowledged, the safety stop on
removals over all partitions, and the load of the difference."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pandas as pd

from mailsync.contacts.audience import mirror_removals
from mailsync.hooks.esp import EspHook
from mailsync.operators import sync
from mailsync.operators.run import Run
from mailsync.state import SyncState

log = logging.getLogger(__name__)
UPSERTS = "upserts"  # a partition's diff folder: one file of upserts per key bucket


def diff(run: Run, state_name: str, transformed: dict[str, Any]) -> dict[str, Any]:
    """Compare a partition's desired members with the acknowledged state; with `mirror`, also
    with the audience the ESP holds (members unknown to the CRM are removed, `mirror` column).

    One key bucket at a time (a bucket's desired members against its acknowledged state), so
    the task's memory does not grow with the audience; the upserts are staged per bucket for the
    load to read the same way."""
    partition, buckets = transformed["partition"], transformed["buckets"]
    out = run.area / "diff" / f"partition={partition:03d}"
    out.clear()  # an earlier try's buckets
    state = SyncState(state_name)
    removed, counts, acked, audience, mirror_remove = [], Counter(), 0, 0, 0  # a partition has a bucket
    for bucket in buckets:
        desired = (run.area / "desired").read_parquet(f"bucket={bucket:02d}.parquet")
        known = state.load([bucket])
        upserts, removals, bucket_counts = sync.diff(desired, known, state)
        mirrored, members = mirror_removals(run, [bucket], desired, removals)
        if len(upserts):
            (out / UPSERTS).write_parquet(f"bucket={bucket:02d}.parquet", upserts)
        removed += [removals.assign(**{sync.MIRROR: False}), mirrored.assign(**{sync.MIRROR: True})]
        counts.update(bucket_counts)
        acked += len(known)
        audience += members
        mirror_remove += len(mirrored)
    out.write_parquet("removals.parquet", pd.concat(removed, ignore_index=True))
    counts["to_remove"] += mirror_remove
    return {**transformed, **counts, "acked": acked, "audience": audience, "mirror_remove": mirror_remove}


def guard_removals(run: Run, diffs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stop before any load when the run as a whole would remove a large share of the audience
    (almost always an extract problem); hand the partitions on otherwise. Removals are counted
    against what the ESP holds: the acknowledged members, or with `mirror` the listed audience
    when that is larger."""
    diffs = [diffs] if isinstance(diffs, dict) else list(diffs)
    sync.guard_mass_removal(
        sum(d["to_remove"] for d in diffs),
        sum(max(d["acked"], d.get("audience", 0)) for d in diffs),
        max_share=float(run.params.get("max_removal_share", 0.1)),
        allowed=bool(run.params.get("allow_mass_removal")),
    )
    return diffs


def load(
    run: Run, hook: EspHook, m, state_name: str, diffed: dict[str, Any], partitions: int
) -> dict[str, Any]:
    """Send a partition's difference to the ESP (nothing with dry_run)."""
    partition = diffed["partition"]
    area = run.area / "diff" / f"partition={partition:03d}"
    removals = area.read_parquet("removals.parquet")
    if run.params.get("dry_run"):
        would_send = diffed["new"] + diffed["changed"]
        log.info("Dry run: would send %d upserts and %d removals", would_send, len(removals))
        return {**diffed, "dry_run": True, "would_send": would_send, "would_remove": len(removals)}
    counts = sync.load_members(
        hook,
        m,
        state_name,
        (area / UPSERTS).iter_parquet(),  # a bucket at a time, read as the batches go out
        removals,
        run_id=run.run_id,
        out=run.area / "load" / f"partition={partition:03d}",
        permanently=m.destination.on_removed == "delete",
        concurrency=sync.concurrency_share(hook.max_connections, partitions),
    )
    log.info(
        "Partition %d: sent %d (created %d, updated %d), removed %d, rejected %d, %d API calls",
        partition,
        counts["sent"],
        counts["created"],
        counts["updated"],
        counts["removed"],
        counts["rejected"],
        counts["api_calls"],
    )
    return {**diffed, **counts}
