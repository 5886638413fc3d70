"""Stage the CRM contacts of a night: those modified in the interval (caught up from the last
completed night), or every contact on a full refresh; and the contacts archived in the CRM."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from mailsync.contacts.areas import contacts_snapshot
from mailsync.hooks.base import VendorError
from mailsync.hooks.crm import CrmHook, SearchWindowExceeded
from mailsync.mapping import engine
from mailsync.operators.run import Run
from mailsync.operators.staged import stage_pages
from mailsync.staging import Area

log = logging.getLogger(__name__)

SEARCH_INDEX_LAG = timedelta(minutes=15)

ID = "hs_object_id"

MODIFIED = "lastmodifieddate"


def extract(run: Run, hook: CrmHook, m) -> dict[str, Any]:
    """Stage CRM contacts of the interval (all of them on a full refresh or the very first run),
    with the properties the mapping `m` reads."""
    started_at = datetime.now(UTC).isoformat()
    full = (
        bool(run.params.get("full_refresh") or run.params.get("mirror"))
        or not contacts_snapshot(run).exists()
    )
    properties = [c for c in engine.source_columns(m.sources["contacts"]).values() if c != ID]
    out = run.area / "extract" / "contacts"
    # nights skipped (scheduler down) are caught up; the overlap covers HubSpot's search index lag
    # (edits just before the interval end can show up minutes later) and costs nothing: merging a
    # contact version twice changes nothing
    since = min(run.start, high_water(run) or run.start) - SEARCH_INDEX_LAG
    try:
        rows = (
            _extract_all(hook, properties, out)
            if full
            else stage_pages(
                hook.iter_modified_contacts(properties, since, run.end), out, columns=[*properties, ID]
            )
        )
    except SearchWindowExceeded as exc:  # a bulk edit gave >10k contacts one timestamp: list them all
        log.warning("%s: extracting every contact instead", exc)
        full = True
        rows = _extract_all(hook, properties, out)
    archived = [
        {"id": r[ID], "archived_at": r.get("archivedAt")}
        for page in hook.iter_contacts([MODIFIED], archived=True)
        for r in page
    ]
    archived_frame = pd.DataFrame(archived, columns=["id", "archived_at"]).astype("string")
    if not full:
        at = pd.to_datetime(archived_frame["archived_at"], utc=True, errors="coerce")
        archived_frame = archived_frame[((at >= since) & (at < run.end)).fillna(False).to_numpy()]
    (run.area / "extract").write_parquet("archived.parquet", archived_frame)
    result = {
        "started_at": started_at,
        "mode": "full" if full else "incremental",
        "since": since.isoformat(),
        "contacts": rows,
        "archived": len(archived_frame),
    }
    log.info("Extracted %d contacts (%s) and %d archived ones", rows, result["mode"], len(archived_frame))
    return {**result, **hook.stats.as_dict()}


class IncompleteExtract(VendorError):
    """A full listing returned fewer contacts than the CRM holds: it must not replace the snapshot."""


def _extract_all(hook: CrmHook, properties: list[str], out: Area) -> int:
    """Every contact; refused when the listing ended early. A full refresh rebuilds the snapshot
    from it, so a contact missing from a cut listing would be archived in the ESP."""
    before = hook.count_contacts()
    rows = stage_pages(hook.iter_contacts(properties), out, columns=[*properties, ID])
    after = hook.count_contacts()
    if rows < min(before, after):  # contacts deleted while we listed lower both counts
        raise IncompleteExtract(
            f"the CRM listing ended after {rows} contacts, but the CRM holds {min(before, after)}: "
            "refusing a partial full extract (the snapshot stays as it was); the retry lists again"
        )
    return rows


def high_water(run: Run):
    """End of the last interval whose sync completed (None before the first one)."""
    marker = run.current
    return (
        datetime.fromisoformat(marker.read_text("high_water.txt"))
        if marker.exists("high_water.txt")
        else None
    )


def advance_high_water(run: Run) -> None:
    current = high_water(run)
    if current is None or run.end > current:
        run.current.write_text("high_water.txt", run.end.isoformat())
