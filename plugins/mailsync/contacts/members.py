"""A partition's desired ESP members against what the ESP acknowledged, the safety stop on
removals over all partitions, and the load of the difference."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from mailsync.contacts.audience import mirror_removals
from mailsync.hooks.esp import EspHook
from mailsync.operators import sync
from mailsync.operators.run import Run
from mailsync.operators.staged import concat
from mailsync.state import SyncState

log = logging.getLogger(__name__)


def diff(run: Run, state_name: str, transformed: dict[str, Any]) -> dict[str, Any]:
    """Compare a partition's desired members with the acknowledged state; with `mirror`, also
    with the audience the ESP holds (members unknown to the CRM are removed, `mirror` column)."""
    partition, buckets = transformed["partition"], transformed["buckets"]
    desired = concat((run.area / "desired").read_parquet(f"bucket={b:02d}.parquet") for b in buckets)
    state = SyncState(state_name)
    acked = state.load(buckets)
    upserts, removals, counts = sync.diff(desired, acked, state)
    mirrored, audience = mirror_removals(run, buckets, desired, removals)
    removals = pd.concat(
        [removals.assign(**{sync.MIRROR: False}), mirrored.assign(**{sync.MIRROR: True})], ignore_index=True
    )
    counts["to_remove"] += len(mirrored)
    out = run.area / "diff" / f"partition={partition:03d}"
    out.write_parquet("upserts.parquet", upserts)
    out.write_parquet("removals.parquet", removals)
    return {
        **transformed,
        **counts,
        "acked": len(acked),
        "audience": audience,
        "mirror_remove": len(mirrored),
    }


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
    upserts, removals = area.read_parquet("upserts.parquet"), area.read_parquet("removals.parquet")
    if run.params.get("dry_run"):
        log.info("Dry run: would send %d upserts and %d removals", len(upserts), len(removals))
        return {**diffed, "dry_run": True, "would_send": len(upserts), "would_remove": len(removals)}
    counts = sync.load_members(
        hook,
        m,
        state_name,
        upserts,
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
