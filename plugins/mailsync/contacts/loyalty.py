"""The night's loyalty tier file from the partner's SFTP: downloaded against its done-marker,
parsed in the dialect the mapping declares, checked, and kept as a snapshot per bucket of the
customer id. A file that cannot be used is refused whole (the night keeps the last tiers)."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from mailsync.contacts.areas import bad_lines_area, loyalty_snapshot, next_snapshot
from mailsync.hooks.base import VendorError
from mailsync.hooks.sftp import LoyaltySftpHook
from mailsync.mapping import engine
from mailsync.operators.run import Run
from mailsync.operators.staged import concat, validate_chunks
from mailsync.settings import BUCKETS
from mailsync.staging import Area

log = logging.getLogger(__name__)


class LoyaltyFileRejected(Exception):
    """The night's loyalty file cannot be used and the run says `loyalty_required`."""


REJECTED = "Loyalty file rejected (%s): %s. The sync goes on with the last known tiers."


def extract_loyalty(run: Run, sensed: dict[str, Any], hook: LoyaltySftpHook, m) -> dict[str, Any]:
    """Download the night's loyalty file (if the sensor found one) and parse it in the dialect
    the mapping declares. A file that cannot be used (a damaged transfer, a cut file, another
    dialect, a server whose host key is not the connection's) is refused whole: the night goes
    on with the last known tiers, unless `loyalty_required`; the reason is in the return value,
    the run summary and a WARNING. The file is staged on disk and read a block at a time, its
    rows staged in chunks: memory does not grow with the file."""
    from mailsync.files import FileRefused, read_partner_file

    out, bad_lines = run.area / "extract" / "loyalty", bad_lines_area(run)
    out.clear()
    bad_lines.clear()
    if sensed.get("reason"):  # the sensor could not look (a host key mismatch)
        return _rejected(run, sensed["day"], sensed["reason"])
    day = sensed.get("day") if sensed.get("found") else None
    if not day:
        log.warning("No loyalty file for this night: tiers stay as last known")
        return {"status": "missing", "file": None, "rows": 0}
    source = m.sources["loyalty"]
    got: dict[str, Any] = {}
    night = date.fromisoformat(day)
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


def validate_loyalty(run: Run, m) -> dict[str, Any]:
    """Quality gate on the loyalty rows (unparseable lines count as quarantined, with line number
    and reason); tonight's tiers are staged for commit. With `on_invalid: keep_last` a customer
    whose row was quarantined keeps the last snapshot's row; one missing from the (complete)
    file is no longer a member, and the tier is cleared.

    Memory stays flat however long the file (issue 19): the good rows are staged per key bucket,
    and duplicates and keep_last are resolved bucket by bucket (every row of a customer is in
    that customer's bucket); only the keys of quarantined rows are held across the file."""
    from mailsync.files import BadLine

    staged = run.area / "extract" / "loyalty"
    staged_next = next_snapshot(run) / "loyalty"
    staged_next.clear()  # what an earlier try of this night staged
    if not staged.exists("part-00000.parquet"):
        return {"file": None}
    bad_area = bad_lines_area(run)
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
    last = loyalty_snapshot(run)
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
            staged_next.write_parquet(bucket_file(bucket), kept)
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


def bucket_file(bucket: int) -> str:
    """The loyalty snapshot is kept per bucket of the customer id (as contacts per bucket of the
    email), so that no step needs the whole snapshot at once."""
    return f"bucket={bucket:02d}.parquet"


def has_loyalty(area: Area) -> bool:
    return area.exists(bucket_file(0)) or area.exists(LEGACY_LOYALTY)


def loyalty_rows(area: Area, column: str, values: pd.Series) -> pd.DataFrame:
    """The rows of a loyalty snapshot whose `column` is one of `values`, read a batch at a time
    (a pyarrow dataset filter): only those rows are ever held, however large the snapshot."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if area.exists(bucket_file(0)):
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
    if not has_loyalty(last) or raw.empty:
        return None
    source = m.sources["loyalty"]
    probe = pd.DataFrame(
        {c: pd.Series(pd.NA, index=raw.index, dtype="string") for c in engine.source_columns(source).values()}
    )
    probe[_key_column(m)] = raw.astype("string").to_numpy()
    keys = engine.prepare(m, "loyalty", probe)[engine.KEY].dropna()
    if keys.empty:
        return None
    previous = loyalty_rows(last, engine.KEY, keys)
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
