"""Diff desired records against the sync state, and load the difference into ESP members.

Shared by every integration that writes audience members (contacts, shop totals): the same
rules everywhere — only new and changed records are sent, the state advances per acknowledged
batch, rejected records are quarantined with the ESP's reason, and a retried task skips what
an earlier try already got acknowledged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mailsync.mapping import types as t
from mailsync.mapping.engine import FINGERPRINT, KEY, PRINT_PREFIX, legacy_pandas_fingerprint, record_fields
from mailsync.mapping.spec import Mapping
from mailsync.reporting import csv_for_people
from mailsync.staging import Area
from mailsync.state import SyncState

if TYPE_CHECKING:
    from mailsync.hooks.esp import EspHook

log = logging.getLogger(__name__)
BUCKET = "__bucket"
CHANGE = "__change"
MIRROR = "mirror"  # a removal column: True for audience members the source lacks (not in the state)


class MassRemovalRefused(Exception):
    """A run would remove a large share of the audience; almost always an extract problem."""


def diff(
    desired: pd.DataFrame, acked: pd.DataFrame, state: SyncState | None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """(records to upsert with their change kind, state rows to remove, counts): the desired
    records against `acked`, the rows `state.load()` returned (`state` None: rows of no state,
    whose prints nothing rewrites).

    A print stored before prints were versioned (bare hex: pandas' hash) is compared with the
    record's print by that algorithm (`engine.legacy_pandas_fingerprint`, computed for those
    records alone). When they match, the record is unchanged and its stored print is rewritten
    to the new one in `state` (`reprint`: no vendor call, in a dry run too as it changes no
    meaning); else it is changed.
    """
    prints = acked.set_index("key")["fingerprint"] if len(acked) else pd.Series(dtype="string")
    known = desired[KEY].map(prints)
    new = known.isna()
    reprint = _unchanged_by_the_pandas_print(desired, known)
    changed = ~new & (known != desired[FINGERPRINT]) & ~reprint
    upserts = desired[(new | changed).to_numpy()].copy()
    upserts[CHANGE] = np.where(new[new | changed], "new", "changed")
    removals = acked[~t.is_in(acked["key"], desired[KEY])]
    counts = {
        "desired": len(desired),
        "new": int(new.sum()),
        "changed": int(changed.sum()),
        "unchanged": int(len(desired) - new.sum() - changed.sum()),
        "to_remove": len(removals),
        "reprinted": int(reprint.sum()),
    }
    if reprint.any() and state is not None:
        done = state.reprint(
            list(zip(desired[KEY][reprint], known[reprint], desired[FINGERPRINT][reprint], strict=True))
        )
        log.info("Rewrote %d stored prints of unchanged records to the current print (nothing sent)", done)
    return upserts.reset_index(drop=True), removals.reset_index(drop=True), counts


# -- prints stored before "v2:" (issue 20) ---------------------------------------------------------
# Until then a print was pandas' `hash_pandas_object`, which pandas does not promise to keep. The
# first diff that meets such a print (every night for contacts, whose whole audience is diffed;
# the next touch of a record for engagement, shop orders and buyers) rewrites it, so this path
# goes idle by itself; until then a night with no such print computes no pandas print at all. It
# can be removed, with `engine.legacy_pandas_fingerprint`, once
#   SELECT integration, count(*) FROM mailsync_sync_state
#   WHERE fingerprint NOT LIKE 'v2:%' AND integration NOT IN ('shop_products')
#     AND integration NOT LIKE 'segment:%' GROUP BY integration
# finds none (products and segment tags keep prints of their own); records still holding one
# would then count as changed and be sent once. Until then keep pandas at the version that
# wrote those prints (3.1.1): another may hash some values differently (pandas has changed how it
# hashes -0.0 and NaN, GH#28363), and the records holding them would be sent once.
def _unchanged_by_the_pandas_print(desired: pd.DataFrame, known: pd.Series) -> pd.Series:
    """True where the stored print is a pandas one and equals the record's pandas print, which is
    computed for those records only (`engine.record_fields`: the transform's fields). A caller may
    append to the engine's print (shop orders append their lines' digest): the stored print
    carries the same suffix. Records whose print is not the engine's (products keep prints of
    their own) are not looked at."""
    unchanged = np.zeros(len(desired), dtype=bool)
    if not len(desired):
        return pd.Series(unchanged, index=desired.index)
    stored, current = known.astype("string"), desired[FINGERPRINT].astype("string")
    old_style = ~stored.str.startswith(PRINT_PREFIX).fillna(True).to_numpy(dtype=bool)
    old_style &= current.str.startswith(PRINT_PREFIX).fillna(False).to_numpy(dtype=bool)
    fields = record_fields(desired)
    if old_style.any() and fields:
        records = desired[old_style]
        suffix = records[FINGERPRINT].astype("string").str.slice(len(PRINT_PREFIX) + 16)
        expected = legacy_pandas_fingerprint(records, fields) + suffix
        unchanged[old_style] = (stored[old_style] == expected).fillna(False).to_numpy(dtype=bool)
    return pd.Series(unchanged, index=desired.index)


def audience_members(integration: str = "crm_to_esp_contacts") -> set[str]:
    """Emails the contacts sync has acknowledged as audience members (removed ones are forgotten;
    members the ESP keeps archived are not counted)."""
    state = SyncState(integration).load()
    return set(state.loc[state["status"].ne("archived").fillna(True).to_numpy(), "key"])


def ack_meta(records: pd.DataFrame) -> dict[str, tuple[str, int]]:
    """key -> (fingerprint, bucket) of the records being sent, to acknowledge what is accepted."""
    return dict(zip(records[KEY], zip(records[FINGERPRINT], records[BUCKET], strict=True), strict=True))


def acknowledge(
    state: SyncState, accepted: list[dict], meta: dict[str, tuple[str, int]], run_id: str
) -> None:
    """Advance the state for exactly the records the destination accepted."""
    state.acknowledge(
        [
            {
                "key": a["key"],
                "fingerprint": meta[a["key"]][0],
                "bucket": meta[a["key"]][1],
                "status": a.get("status"),
            }
            for a in accepted
            if a["key"] in meta
        ],
        run_id,
    )


def guard_mass_removal(to_remove: int, state_size: int, *, max_share: float, allowed: bool) -> None:
    """Refuse removing more than `max_share` of what the destination holds (small audiences exempt)."""
    if allowed or state_size < 100:
        return
    share = to_remove / state_size
    if share > max_share:
        raise MassRemovalRefused(
            f"this run would remove {to_remove} of {state_size} acknowledged records "
            f"({share:.1%} > {max_share:.0%}); check the extract, or trigger with allow_mass_removal=true"
        )


def payloads(mapping: Mapping, frame: pd.DataFrame, *, chunk: int = 5_000) -> Iterator[dict[str, Any]]:
    """Destination JSON per record, built a chunk at a time (a full sync of a million members
    would otherwise hold a million dicts): dotted field paths nest ("merge_fields.FNAME"); a null
    is sent as "" (clears the field) or left out, as the field's `on_null` says."""
    fields = list(mapping.fields)
    for start in range(0, len(frame), chunk):
        part = frame[fields].iloc[start : start + chunk]
        for record in part.astype(object).where(part.notna(), None).to_dict("records"):
            doc: dict[str, Any] = {}
            for name in fields:
                value = record[name]
                if value is None:
                    if mapping.fields[name].on_null == "omit":
                        continue
                    value = ""
                elif isinstance(value, float) and mapping.fields[name].type == "integer":
                    value = int(value)
                head, _, tail = name.partition(".")
                if tail:
                    doc.setdefault(head, {})[tail] = value
                else:
                    doc[head] = value
            yield doc


def load_members(
    hook: EspHook,
    mapping: Mapping,
    integration: str,
    upserts: Iterable[pd.DataFrame],
    removals: pd.DataFrame,
    *,
    run_id: str,
    out: Area,
    permanently: bool = False,
    concurrency: int | None = None,
) -> dict[str, Any]:
    """Send upserts and removals; acknowledge per batch; quarantine rejections; return counts.

    `upserts` are frames of records (a partition's key buckets, read one by one as the batches
    go out), so the task holds one frame and the records in flight, not the whole difference."""
    state = SyncState(integration)
    counts = {"sent": 0, "created": 0, "updated": 0, "rejected": 0, "removed": 0, "resumed_skip": 0}
    meta: dict[str, tuple[str, int]] = {}  # (print, bucket) of the records sent and not answered yet

    def pending_payloads() -> Iterator[dict[str, Any]]:
        for frame in upserts:
            # what an earlier try got acknowledged, of exactly these records (not their buckets)
            acked = _acked_prints(state, frame[KEY])
            pending = frame[frame[KEY].map(acked).ne(frame[FINGERPRINT]).fillna(True).to_numpy()]
            counts["resumed_skip"] += len(frame) - len(pending)
            counts["sent"] += len(pending)
            meta.update(ack_meta(pending))
            yield from payloads(mapping, pending)

    rejected: list[dict[str, Any]] = []
    for result in hook.upsert_members(pending_payloads(), concurrency=concurrency):
        acknowledge(state, result.accepted, meta, run_id)
        for answered in (*result.accepted, *result.rejected):
            meta.pop(answered["key"], None)
        counts["created"] += sum(1 for a in result.accepted if a.get("created"))
        counts["updated"] += sum(1 for a in result.accepted if not a.get("created"))
        rejected.extend(result.rejected)
    if counts["resumed_skip"]:
        log.info(
            "Resumed: %d records were acknowledged by an earlier try and were not sent again",
            counts["resumed_skip"],
        )
    # removals of the state: only what is still acknowledged (a retry skips what an earlier try
    # removed); mirror removals were never ours to acknowledge, and archiving twice is harmless
    mirror = removals[MIRROR].fillna(False).astype(bool) if MIRROR in removals else False
    still = removals["key"].isin(_acked_prints(state, removals["key"]).index)
    remove_keys = removals["key"][(still | mirror).to_numpy()].tolist()
    for result in hook.remove_members(remove_keys, permanently=permanently, concurrency=concurrency):
        state.forget([a["key"] for a in result.accepted])
        counts["removed"] += len(result.accepted)
        rejected.extend(result.rejected)
    counts["rejected"] = len(rejected)
    counts["rejected_file"] = str(out.write_text("rejected.csv", rejected_csv(rejected)))
    counts.update(hook.stats.as_dict())
    return counts


def _acked_prints(state: SyncState, keys: pd.Series) -> pd.Series:
    """key -> acknowledged print, of these keys only."""
    return state.load(keys=keys.drop_duplicates().tolist()).set_index("key")["fingerprint"]


def rejected_csv(rejected: list[dict[str, Any]]) -> str:
    return csv_for_people(pd.DataFrame(rejected, columns=["key", "reason"]))


def concurrency_share(total: int, partitions: int) -> int:
    """Each of N parallel load tasks gets its share of the vendor's connection limit."""
    return max(1, math.floor(total / max(1, partitions)))
