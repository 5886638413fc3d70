"""Stage the CRM contacts of a night: those modified in the interval (caught up from the last
completed night), or every contact on a full refresh; and the contacts archived in the CRM.

A full extract (full refresh, mirror, the first night, a search window that overflowed) of a
big CRM goes through HubSpot's exports API: one start, a status read every `export_poll_s`, one
file, instead of a list call per 100 contacts (10,102 calls per 1M contacts). The `crm`
connection's extra chooses the path:

- `full_extract`: `auto` (default: an export when the CRM holds more than `export_over`
  contacts, else the list API), `export`, or `list` (100 per page: the fallback when exports
  are not allowed for the token, lack the `crm.export` scope, or misbehave);
- `export_over`: contacts above which `auto` exports (default 10,000: below, a listing costs
  at most 100 calls and seconds, while an export waits in HubSpot's queue and is polled);
- `export_poll_s`: seconds between status reads (default 2: at most 5 of HubSpot's 190 calls
  per 10 s, and a finished export is noticed within 2 s);
- `export_timeout_s`: how long an export may take before the task fails (default 3600; a
  million contacts take minutes).

Every path stages the same rows: a CSV cell cannot tell an empty string from null, so an empty
string is staged as null (the mapping reads both as missing anyway).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from mailsync.contacts.areas import contacts_snapshot
from mailsync.hooks.base import JobFailed, JobTimeout, VendorError
from mailsync.hooks.crm import CrmHook, SearchWindowExceeded
from mailsync.mapping import engine
from mailsync.operators.run import Run
from mailsync.operators.staged import stage_pages
from mailsync.staging import Area

log = logging.getLogger(__name__)

SEARCH_INDEX_LAG = timedelta(minutes=15)

ID = "hs_object_id"

MODIFIED = "lastmodifieddate"

FULL_EXTRACT = "full_extract"  # the crm connection's extra: auto | export | list
MODES = ("auto", "export", "list")
EXPORT_OVER = 10_000
EXPORT_POLL_S = 2.0
EXPORT_TIMEOUT_S = 3600.0


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
    since = min(run.start, high_water(run.current) or run.start) - SEARCH_INDEX_LAG
    mode, path = full_extract_mode(hook), None
    # the archived contacts are listed beside the extract (HubSpot has no filter for them: every
    # night lists them all, ~50 calls per 5k): the hook paces both, and the search waits on its
    # 5/s limit anyway
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="CRM-archived") as pool:
        listing = pool.submit(_archived, hook)
        try:
            if full:
                rows, path = _extract_all(hook, properties, out, mode)
            else:
                modified = hook.iter_modified_contacts(properties, since, run.end)
                rows = stage_pages(blank_as_null(modified), out, columns=[*properties, ID])
        except SearchWindowExceeded as exc:  # a bulk edit gave >10k contacts one timestamp: take them all
            log.warning("%s: extracting every contact instead", exc)
            full = True
            rows, path = _extract_all(hook, properties, out, mode)
        archived_frame = listing.result()
    if not full:
        at = pd.to_datetime(archived_frame["archived_at"], utc=True, errors="coerce")
        archived_frame = archived_frame[((at >= since) & (at < run.end)).fillna(False).to_numpy()]
    (run.area / "extract").write_parquet("archived.parquet", archived_frame)
    result = {
        "started_at": started_at,
        "mode": "full" if full else "incremental",
        "full_extract": path,
        "since": since.isoformat(),
        "contacts": rows,
        "archived": len(archived_frame),
    }
    log.info("Extracted %d contacts (%s) and %d archived ones", rows, result["mode"], len(archived_frame))
    return {**result, **hook.stats.as_dict()}


def _archived(hook: CrmHook) -> pd.DataFrame:
    """id and archivedAt of every contact archived in the CRM."""
    archived = [
        {"id": r[ID], "archived_at": r.get("archivedAt")}
        for page in hook.iter_contacts([MODIFIED], archived=True)
        for r in page
    ]
    return pd.DataFrame(archived, columns=["id", "archived_at"]).astype("string")


class IncompleteExtract(VendorError):
    """A full extract returned fewer contacts than the CRM holds: it must not replace the snapshot."""


def full_extract_mode(hook: CrmHook) -> str:
    """`auto`, `export` or `list`: the connection's extra `full_extract` (default auto)."""
    mode = str(hook.options.get(FULL_EXTRACT, "auto")).strip().lower()
    if mode not in MODES:
        raise ValueError(
            f"connection {hook.http_conn_id!r}: extra {FULL_EXTRACT}={mode!r}, "
            f"expected one of {', '.join(MODES)}"
        )
    return mode


def blank_as_null(pages: Iterable[list[dict]]) -> Iterator[list[dict]]:
    """Pages with every empty string as None: an export's CSV cannot tell "" from null, the list
    and search APIs can, so without this a change of path would look like a change of every
    contact with an empty property."""
    for page in pages:
        yield [{k: (None if v == "" else v) for k, v in record.items()} for record in page]


def _extract_all(hook: CrmHook, properties: list[str], out: Area, mode: str = "auto") -> tuple[int, str]:
    """Every contact, by export or by listing (`mode`); (rows, the path taken). Refused when it
    came back short: a full refresh rebuilds the snapshot from it, so a contact missing from a cut
    extract would be archived in the ESP."""
    before = hook.count_contacts()
    path = mode
    if mode == "auto":  # an export pays off for a big CRM only
        path = "export" if before > int(hook.options.get("export_over", EXPORT_OVER)) else "list"
    log.info("Full extract of %d contacts by %s (%s=%s)", before, path, FULL_EXTRACT, mode)
    if path == "export":
        pages = hook.export_contacts(
            properties,
            poll_interval_s=float(hook.options.get("export_poll_s", EXPORT_POLL_S)),
            timeout_s=float(hook.options.get("export_timeout_s", EXPORT_TIMEOUT_S)),
        )
    else:
        pages = hook.iter_contacts(properties)
    try:
        rows = stage_pages(blank_as_null(pages), out, columns=[*properties, ID])  # clears `out` first
    except (JobFailed, JobTimeout) as exc:
        raise type(exc)(
            f"full extract through HubSpot's exports API failed: {exc} (nothing staged, the snapshot "
            f"stays as it was; extra {FULL_EXTRACT}=list on connection {hook.http_conn_id!r} lists the "
            "contacts instead)"
        ) from exc
    after = hook.count_contacts()
    if rows < min(before, after):  # contacts deleted while we extracted lower both counts
        what = "export" if path == "export" else "listing"
        raise IncompleteExtract(
            f"the CRM {what} ended after {rows} contacts, but the CRM holds {min(before, after)}: "
            "refusing a partial full extract (the snapshot stays as it was); the retry extracts again"
        )
    return rows, path


def high_water(current: Area) -> datetime | None:
    """End of the last interval whose sync completed (None before the first one), from the DAG's
    state area (`Run.current`)."""
    if not current.exists("high_water.txt"):
        return None
    return datetime.fromisoformat(current.read_text("high_water.txt"))


def advance_high_water(run: Run) -> None:
    current = high_water(run.current)
    if current is None or run.end > current:
        run.current.write_text("high_water.txt", run.end.isoformat())
