"""Task logic of the nightly CRM -> ESP contact sync (DAG crm_to_esp_contacts).

extract  CRM contacts modified in the interval (or all: full refresh) -> staged Parquet chunks.
validate the quality gate on the staged contacts and on the loyalty file; good rows are staged
         per key bucket.
transform per partition (a set of buckets): merge the good rows into the contacts snapshot
         (the latest validated version of every CRM contact), resolve duplicate emails, join the
         loyalty tiers, map to ESP members.
diff     per partition: desired members vs what the ESP acknowledged (sync state).
load     per partition: upsert the difference, archive the removed; state advances per batch.

Why a snapshot: a contact whose loyalty tier changed tonight was not modified in the CRM, and a
contact deleted in the CRM no longer appears in any extract; with the snapshot every night
computes the whole desired audience (CPU, cheap) while sending only its difference (API calls).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from mailsync.hooks.base import VendorError
from mailsync.hooks.crm import CrmHook, SearchWindowExceeded
from mailsync.hooks.esp import EspHook
from mailsync.hooks.sftp import LoyaltySftpHook
from mailsync.mapping import engine
from mailsync.mapping.spec import load_mapping
from mailsync.operators import sync
from mailsync.operators.run import Run
from mailsync.operators.staged import concat, stage_pages, validate_chunks
from mailsync.settings import BUCKETS
from mailsync.staging import Area
from mailsync.state import SyncState

log = logging.getLogger(__name__)

INTEGRATION = "crm_to_esp_contacts"
SEARCH_INDEX_LAG = timedelta(minutes=15)
ID = "hs_object_id"
MODIFIED = "lastmodifieddate"


def mapping():
    return load_mapping(INTEGRATION)


def _contacts_snapshot(run: Run) -> Area:
    return run.current / "snapshots" / "contacts"


def _loyalty_snapshot(run: Run) -> Area:
    return run.current / "snapshots" / "loyalty"


# -- extract -------------------------------------------------------------------------------------
def extract(run: Run) -> dict[str, Any]:
    """Stage CRM contacts of the interval (all of them on a full refresh or the very first run)."""
    started_at = datetime.now(UTC).isoformat()
    full = (
        bool(run.params.get("full_refresh") or run.params.get("mirror"))
        or not _contacts_snapshot(run).exists()
    )
    hook = CrmHook()
    properties = [c for c in engine.source_columns(mapping().sources["contacts"]).values() if c != ID]
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


class LoyaltyFileRejected(Exception):
    """The night's loyalty file cannot be used and the run says `loyalty_required`."""


REJECTED = "Loyalty file rejected (%s): %s. The sync goes on with the last known tiers."


def _bad_lines_area(run: Run) -> Area:
    """Lines of the loyalty file that never became rows; beside the data chunks, never among them."""
    return run.area / "extract" / "loyalty_bad_lines"


def extract_loyalty(run: Run, sensed: dict[str, Any]) -> dict[str, Any]:
    """Download the night's loyalty file (if the sensor found one) and parse it in the dialect
    the mapping declares. A file that cannot be used (a damaged transfer, a cut file, another
    dialect, a server whose host key is not the connection's) is refused whole: the night goes
    on with the last known tiers, unless `loyalty_required`; the reason is in the return value,
    the run summary and a WARNING. The file is staged on disk and read a block at a time, its
    rows staged in chunks: memory does not grow with the file."""
    from mailsync.files import FileRefused, read_partner_file

    out, bad_lines = run.area / "extract" / "loyalty", _bad_lines_area(run)
    out.clear()
    bad_lines.clear()
    if sensed.get("reason"):  # the sensor could not look (a host key mismatch)
        return _rejected(run, sensed["day"], sensed["reason"])
    day = sensed.get("day") if sensed.get("found") else None
    if not day:
        log.warning("No loyalty file for this night: tiers stay as last known")
        return {"status": "missing", "file": None, "rows": 0}
    source = mapping().sources["loyalty"]
    got: dict[str, Any] = {}
    hook, night = LoyaltySftpHook(), date.fromisoformat(day)
    try:  # kept for people to look at; only a file that matches its marker takes its name
        staged = out.write_stream(hook.file_name, lambda f: got.update(download=hook.download(night, f)))
    except VendorError as exc:  # half-written, damaged, or not the partner's server: never read
        return _rejected(run, day, f"transfer: {exc}", exc)
    download, parts = got["download"], []

    def stage(rows: pd.DataFrame) -> None:
        parts.append(out.write_parquet(f"part-{len(parts):05d}.parquet", rows.astype("string")))

    try:
        parsed = read_partner_file(
            staged,
            columns=list(dict.fromkeys(engine.source_columns(source).values())),
            encodings=source.file.encoding,
            delimiters=source.file.delimiter,
            bom=source.file.bom,
            header_case=source.file.header_case,
            final_newline=source.file.final_newline,
            expected_rows=download.rows,
            max_undecodable_share=source.checks.bad_row_threshold,
            on_rows=stage,
        )
    except FileRefused as exc:
        for part in parts:  # rows of a refused file are never validated
            part.fs.rm(part.path)
        return _rejected(run, day, str(exc), exc, file=download.path)
    if parsed.bad:
        bad_lines.write_parquet("lines.parquet", _bad_line_frame(parsed, source))
    log.info(
        "Loyalty file %s: %d rows, %d unparseable lines; dialect %s",
        day,
        parsed.rows,
        len(parsed.bad),
        parsed.dialect(),
    )
    return {
        "status": "loaded",
        "file": download.path,
        "day": day,
        "sha256": download.sha256,
        "rows": parsed.rows,
        "rows_declared": download.rows,
        "unparsed_lines": len(parsed.bad),
        "dialect": parsed.dialect(),
    }


def _bad_line_frame(parsed, source) -> pd.DataFrame:
    """Line number, reason, text and, where the line has that field, the raw key (for keep_last)."""
    import csv

    names = [c for c in parsed.frame.columns if c != "file_line"]
    position = names.index(engine.source_columns(source)[source.key.input])
    keys = []
    for b in parsed.bad:
        fields = next(csv.reader([b.text], delimiter=parsed.delimiter), [])
        keys.append(fields[position] if len(fields) > position else None)
    return pd.DataFrame(
        {
            "line": [b.line for b in parsed.bad],
            "reason": [b.reason for b in parsed.bad],
            "text": [b.text for b in parsed.bad],
            "key": pd.array(keys, dtype="string"),
        }
    )


def _rejected(run: Run, day: str, reason: str, exc: Exception | None = None, **extra) -> dict[str, Any]:
    """A loyalty file that cannot be used: the run fails when it requires the file; otherwise
    the refusal is logged as one WARNING line (no personal data: reasons name columns, counts,
    paths) and returned for the run summary."""
    reason = " ".join(reason.split())
    if run.params.get("loyalty_required"):
        raise LoyaltyFileRejected(f"Loyalty file for {day} rejected and loyalty_required: {reason}") from exc
    log.warning(REJECTED, day, reason)
    return {"status": "rejected", "file": None, "day": day, "reason": reason, "rows": 0, **extra}


# -- validate ------------------------------------------------------------------------------------
def validate(run: Run) -> dict[str, Any]:
    """Quality gate on contacts and loyalty rows; good rows staged per bucket for the partitions."""
    from mailsync.quality.gate import QualityGateFailed

    m = mapping()
    result = {"contacts": _validate_contacts(run, m)}
    try:
        result["loyalty"] = _validate_loyalty(run, m)
    except (QualityGateFailed, engine.SchemaError) as exc:  # refused whole: tonight's tiers not staged
        if run.params.get("loyalty_required"):
            raise
        reason = "quality gate: " + " ".join(str(exc).split())
        log.warning(REJECTED, run.start.date().isoformat(), reason)
        result["loyalty"] = {"file": "rejected", "status": "rejected", "reason": reason}
    return result


def _validate_contacts(run: Run, m) -> dict[str, Any]:
    out = run.area / "validated" / "contacts"
    out.clear()

    def write_good(i: int, good: pd.DataFrame) -> None:
        buckets = engine.bucket_of(good[engine.KEY], BUCKETS)
        for bucket, rows in good.groupby(buckets, sort=True):
            (out / f"bucket={bucket:02d}").write_parquet(f"part-{i:05d}.parquet", rows)
        out.write_parquet(f"ids-{i:05d}.parquet", good[[ID, MODIFIED]])  # for cross-bucket merges

    return validate_chunks(
        m,
        "contacts",
        run.area / "extract" / "contacts",
        run.area / "quality" / "contacts",
        label=f"{run.dag_id} {run.label}",
        write_good=write_good,
    )


def _validate_loyalty(run: Run, m) -> dict[str, Any]:
    """Quality gate on the loyalty rows (unparseable lines count as quarantined, with line number
    and reason); tonight's tiers are staged for commit. With `on_invalid: keep_last` a customer
    whose row was quarantined keeps the last snapshot's row; one missing from the (complete)
    file is no longer a member, and the tier is cleared.

    Memory stays flat however long the file (issue 19): the good rows are staged per key bucket,
    and duplicates and keep_last are resolved bucket by bucket (every row of a customer is in
    that customer's bucket); only the keys of quarantined rows are held across the file."""
    from mailsync.files import BadLine

    staged = run.area / "extract" / "loyalty"
    staged_next = _next(run) / "loyalty"
    staged_next.clear()  # what an earlier try of this night staged
    if not staged.exists("part-00000.parquet"):
        return {"file": None}
    bad_area = _bad_lines_area(run)
    unparsed = bad_area.read_parquet("lines.parquet") if bad_area.exists("lines.parquet") else None
    good_area = run.area / "validated" / "loyalty"
    good_area.clear()
    keep_last = m.sources["loyalty"].on_invalid == "keep_last"
    chunks, key_column = staged.names(".parquet"), _key_column(m)
    bad_keys: list[pd.Series] = [unparsed["key"]] if unparsed is not None else []  # raw, as in the file
    empty: list[pd.DataFrame] = []  # the good rows' columns, for buckets without a row
    offset = [0]

    def write_good(i: int, good: pd.DataFrame) -> None:
        empty[:] = empty or [good.iloc[0:0]]
        for bucket, rows in good.groupby(engine.bucket_of(good[engine.KEY], BUCKETS), sort=True):
            (good_area / f"bucket={bucket:02d}").write_parquet(f"part-{i:05d}.parquet", rows)
        if keep_last:  # the keys of the chunk's quarantined rows (few: the gate's threshold caps them)
            raw = staged.read_parquet(chunks[i], columns=[key_column])[key_column]
            passed = np.zeros(len(raw), dtype=bool)
            passed[good[engine.ROW].to_numpy() - offset[0]] = True
            bad_keys.append(raw[~passed])
            offset[0] += len(raw)

    def unparsed_lines(gate) -> None:
        if unparsed is not None:
            gate.quarantine_unparsed([BadLine(int(r.line), r.reason, r.text) for r in unparsed.itertuples()])

    summary = validate_chunks(
        m,
        "loyalty",
        staged,
        run.area / "quality" / "loyalty",
        label=f"{run.dag_id} {run.label}",
        write_good=write_good,
        before=unparsed_lines,
    )
    day = run.end.date().isoformat()
    last = _loyalty_snapshot(run)
    current_day = _asof(last)
    stage = day >= current_day  # a backfill of an older night never replaces newer tiers
    failing = _keep_last_candidates(m, last, bad_keys) if keep_last else None
    kept_last = 0
    for bucket in range(BUCKETS):
        good = concat([*empty, *(good_area / f"bucket={bucket:02d}").iter_parquet()])
        kept, _ = engine.deduplicate(m, "loyalty", good)
        if failing is not None:
            kept, carried = _keep_last(kept, failing[failing["__bucket"].to_numpy() == bucket])
            kept_last += carried
        if stage:
            staged_next.write_parquet(_bucket_file(bucket), kept)
    if failing is not None and kept_last:
        log.info("Loyalty: %d customers with a quarantined row keep their last tier", kept_last)
    if stage:
        if last.exists(LEGACY_LOYALTY):  # the one-file layout: emptied by the commit, not left behind
            staged_next.write_parquet(LEGACY_LOYALTY, concat(empty))
        staged_next.write_text("asof.txt", day)
    return {**summary, "snapshot_day": max(day, current_day), "kept_last": kept_last}


def _key_column(m) -> str:
    source = m.sources["loyalty"]
    return engine.source_columns(source)[source.key.input]


LEGACY_LOYALTY = "loyalty.parquet"  # the loyalty snapshot as one file, before issue 19


def _bucket_file(bucket: int) -> str:
    """The loyalty snapshot is kept per bucket of the customer id (as contacts per bucket of the
    email), so that no step needs the whole snapshot at once."""
    return f"bucket={bucket:02d}.parquet"


def _has_loyalty(area: Area) -> bool:
    return area.exists(_bucket_file(0)) or area.exists(LEGACY_LOYALTY)


def _loyalty_rows(area: Area, column: str, values: pd.Series) -> pd.DataFrame:
    """The rows of a loyalty snapshot whose `column` is one of `values`, read a batch at a time
    (a pyarrow dataset filter): only those rows are ever held, however large the snapshot."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if area.exists(_bucket_file(0)):
        names = [n for n in area.names(".parquet") if n.startswith("bucket=")]
    else:
        names = [LEGACY_LOYALTY]
    dataset = ds.dataset([area.file(n).path for n in names], filesystem=area.path.fs, format="parquet")
    wanted = pa.array(pd.Series(values, dtype="string").dropna().unique(), type=pa.string())
    return dataset.to_table(filter=ds.field(column).isin(wanted)).to_pandas()


def _keep_last_candidates(m, last: Area, raw_keys: list[pd.Series]) -> pd.DataFrame | None:
    """The last snapshot's rows of the customers that had a quarantined row or an unparseable
    line tonight (keys normalised as the mapping says), with their bucket; None when there is no
    snapshot or no such customer. Whether such a customer also had a good row is for each
    bucket to say (`_keep_last`)."""
    raw = pd.concat(raw_keys, ignore_index=True) if raw_keys else pd.Series(dtype="string")
    if not _has_loyalty(last) or raw.empty:
        return None
    source = m.sources["loyalty"]
    probe = pd.DataFrame(
        {c: pd.Series(pd.NA, index=raw.index, dtype="string") for c in engine.source_columns(source).values()}
    )
    probe[_key_column(m)] = raw.astype("string").to_numpy()
    keys = engine.prepare(m, "loyalty", probe)[engine.KEY].dropna()
    if keys.empty:
        return None
    previous = _loyalty_rows(last, engine.KEY, keys)
    return previous.assign(__bucket=engine.bucket_of(previous[engine.KEY], BUCKETS))


def _keep_last(kept: pd.DataFrame, previous: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """A bucket's good rows tonight, plus the last snapshot's rows (`previous`, the bucket's
    candidates) of the keys that had a row in the file but none that passed. Returns the rows
    and how many were kept."""
    carried = previous[~previous[engine.KEY].isin(kept[engine.KEY].dropna()).to_numpy()]
    if carried.empty:
        return kept, 0
    return pd.concat([kept, carried.drop(columns="__bucket")], ignore_index=True), len(carried)


def _asof(area: Area) -> str:
    return area.read_text("asof.txt").strip() if area.exists("asof.txt") else ""


def _next(run: Run) -> Area:
    """Tonight's snapshots, committed over the current ones only when the whole run succeeded
    (see commit): a run stopped by the removal guard or a failed load changes nothing."""
    return run.area / "next_snapshot"


# -- transform -----------------------------------------------------------------------------------
def transform(run: Run, partition: int, buckets: list[int], *, full: bool) -> dict[str, Any]:
    """Merge tonight's good rows into the snapshot of these buckets; map them to ESP members.

    After a full extract the snapshot is rebuilt from it: contacts gone from the CRM (deleted,
    erased) drop out, while a contact whose row was quarantined tonight keeps its last good
    version (a bad birthday must not archive anybody). After an incremental extract, tonight's
    versions are merged in.
    """
    m = mapping()
    validated = run.area / "validated" / "contacts"
    delta_ids = concat(validated.iter_parquet(), columns=[ID, MODIFIED])
    extracted = (
        set(concat((run.area / "extract" / "contacts").iter_parquet(columns=[ID]))[ID]) if full else set()
    )
    good_ids = set(delta_ids[ID])
    archived = (run.area / "extract").read_parquet("archived.parquet")
    desired_out = run.area / "desired"
    snapshot, next_snapshot = _contacts_snapshot(run), _next(run) / "contacts"
    loyalty = _partition_loyalty(run, m, buckets, validated, snapshot)
    counts = {"partition": partition, "buckets": buckets, "contacts": 0, "duplicates": 0, "members": 0}
    for bucket in buckets:
        name = f"bucket={bucket:02d}"
        delta = concat((validated / name).iter_parquet())
        current = snapshot.read_parquet(f"{name}.parquet") if snapshot.exists(f"{name}.parquet") else None
        if current is None:
            merged = delta
        elif full:
            still_there = current[ID].isin(extracted) & ~current[ID].isin(good_ids)
            merged = pd.concat([delta, current[still_there.to_numpy()]], ignore_index=True)
        else:
            merged = _merge(current, delta, delta_ids, archived)
        next_snapshot.write_parquet(f"{name}.parquet", merged)
        kept, dropped = engine.deduplicate(m, "contacts", merged)
        members = engine.transform(m, kept, {"loyalty": loyalty} if loyalty is not None else {})
        members[sync.BUCKET] = bucket
        desired_out.write_parquet(f"{name}.parquet", members)
        counts["contacts"] += len(merged)
        counts["duplicates"] += len(dropped)
        counts["members"] += len(members)
    return counts


def _partition_loyalty(run: Run, m, buckets: list[int], validated: Area, snapshot: Area):
    """Tonight's loyalty tiers (else the last committed ones) of the customers this partition's
    contacts name: the snapshot is filed by customer id and the partition by email, so it is
    read filtered on the customer ids of the partition's contacts (tonight's and the snapshot's),
    never whole. None when there is no loyalty snapshot yet."""
    area = next((a for a in (_next(run) / "loyalty", _loyalty_snapshot(run)) if _has_loyalty(a)), None)
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
    return _loyalty_rows(area, m.sources["loyalty"].key.input, customers)


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
    is_newest = both[MODIFIED].to_numpy() == newest.reindex(both[ID]).to_numpy()
    latest = both[is_newest].drop_duplicates(ID, keep="last")  # the same version twice (rerun): keep one
    gone_at = pd.to_datetime(archived.set_index("id")["archived_at"], utc=True, errors="coerce")
    gone_at = gone_at[~gone_at.index.duplicated()].reindex(latest[ID])
    archived_after = (gone_at.to_numpy() >= latest[MODIFIED].to_numpy()) & gone_at.notna().to_numpy()
    return latest[~archived_after].reset_index(drop=True)


# -- commit --------------------------------------------------------------------------------------
def commit(run: Run) -> dict[str, Any]:
    """After every partition's load: tonight's snapshots replace the current ones and the
    high-water mark moves to the interval's end. Until then a failed or stopped run has changed
    neither, so its rerun (or the next night) starts from the same place."""
    if run.params.get("dry_run"):
        return {"committed": False, "reason": "dry_run"}
    staged = _next(run)
    from mailsync.operators.retention import record_crm_erasures

    # contacts gone without an archive were erased in the CRM: noted before the snapshot forgets them
    erased = record_crm_erasures(run, _contacts_snapshot(run), staged / "contacts")
    files = 0
    for kind, target in (("contacts", _contacts_snapshot(run)), ("loyalty", _loyalty_snapshot(run))):
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


# -- mirror: the ESP audience as it is ------------------------------------------------------------
def _audience(run: Run) -> Area:
    return run.area / "audience"


def list_audience(run: Run) -> dict[str, Any]:
    """With `mirror`: list the ESP audience (email and status, 1,000 per call) and stage, per key
    bucket, the members no contact of tonight's full CRM extract has (archived or deleted in the
    CRM before our first sync, or never there). Every extracted contact counts, valid or not: a
    contact whose row was quarantined tonight is not a reason to archive anybody. Members the
    ESP already keeps archived are left alone. Without `mirror` nothing is listed."""
    out = _audience(run)
    out.clear()
    if not run.params.get("mirror"):
        return {"mirror": False}
    from mailsync.mapping import types as t

    crm = set(
        t.email(concat((run.area / "extract" / "contacts").iter_parquet(columns=["email"]))["email"]).dropna()
    )
    hook = EspHook()
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


def _mirror_removals(run: Run, buckets: list[int], desired: pd.DataFrame, removals: pd.DataFrame):
    """(the partition's audience members to archive by `mirror`, the partition's audience size)."""
    area = _audience(run)
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


# -- diff and load -------------------------------------------------------------------------------
def diff(run: Run, transformed: dict[str, Any]) -> dict[str, Any]:
    """Compare a partition's desired members with the acknowledged state; with `mirror`, also
    with the audience the ESP holds (members unknown to the CRM are removed, `mirror` column)."""
    partition, buckets = transformed["partition"], transformed["buckets"]
    desired = concat((run.area / "desired").read_parquet(f"bucket={b:02d}.parquet") for b in buckets)
    state = SyncState(INTEGRATION)
    acked = state.load(buckets)
    upserts, removals, counts = sync.diff(desired, acked)
    mirrored, audience = _mirror_removals(run, buckets, desired, removals)
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


def load(run: Run, diffed: dict[str, Any], partitions: int) -> dict[str, Any]:
    """Send a partition's difference to the ESP (nothing with dry_run)."""
    partition = diffed["partition"]
    area = run.area / "diff" / f"partition={partition:03d}"
    upserts, removals = area.read_parquet("upserts.parquet"), area.read_parquet("removals.parquet")
    if run.params.get("dry_run"):
        log.info("Dry run: would send %d upserts and %d removals", len(upserts), len(removals))
        return {**diffed, "dry_run": True, "would_send": len(upserts), "would_remove": len(removals)}
    hook = EspHook()
    m = mapping()
    counts = sync.load_members(
        hook,
        m,
        INTEGRATION,
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
