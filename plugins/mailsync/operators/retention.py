"""Task logic of the daily retention DAG (mailsync_retention): personal data only as long as needed.

Every run folder (`<dag>/runs/<interval>/`) holds full extracts with emails, names and birthdays,
and the quarantine and rejected files hold raw bad rows by design. The policy in
`include/retention.yaml` (mailsync.settings.retention) says how long each is kept:

delete_old_runs         run folders whose interval ended more than `run_days` ago (by the
                        interval in the folder name: an mtime changes on a copy or a rerun).
delete_people_files     quarantine / rejected / unparsed files past `quarantine_days`.
apply_erasures          every person in the erasure ledger (mailsync.state.ErasureLedger) leaves
                        the files we keep — snapshots and daily stores under `<dag>/current/`, and
                        the run folders still kept — and the sync state of every integration.

A DAG's files are only touched while this run holds that DAG's run lease, so a nightly run
never commits a snapshot read before an erasure over the erased one, and a backfill never loses
the folder it is writing; a DAG that is busy is left for the next day (its erasures stay
pending, and fail this DAG loudly once past `erasure_days`).

The ledger holds hashes only (mailsync.state.pseudonym), and so do the logs: files are matched
by hashing their email-like cells, customer-id and CRM-id columns. It is applied to every kept
file each day, not once: a partner's loyalty file or a backfill can bring an erased person back.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mailsync.settings import Retention, retention, run_lock_ttl_s
from mailsync.staging import root

if TYPE_CHECKING:
    import pyarrow as pa
    from airflow.sdk import ObjectStoragePath

    from mailsync.operators.run import Run
    from mailsync.state import Erasure

log = logging.getLogger(__name__)
DAG_ID = "mailsync_retention"
SHOP, ORDERS_STATE, CONTACTS = "shop_conversions_to_esp", "shop_orders_to_esp", "crm_to_esp_contacts"
PEOPLE_FILES = {"quarantine.csv", "unparsed.parquet", "unknown_customer_orders.csv"}
PEOPLE_FOLDERS = {"loyalty_bad_lines"}  # the loyalty file's lines that never became rows
CUSTOMER_COLUMNS = {"customer_id"}  # the CRM's and the loyalty partner's customer id
CRM_COLUMNS = {"hs_object_id"}
RAW_COLUMNS = {"text"}  # raw partner lines (unparsed loyalty lines): searched token by token
_TOKENS = re.compile(r"[;,|\t\s\"']+")
_LABEL = re.compile(r"^(\d{8}T\d{6})__(\d{8}T\d{6})$")
_EMAIL = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+")


class ErasureOverdue(RuntimeError):
    """Erasures are still pending past the configured deadline: someone must act."""


def is_people_file(path: str) -> bool:
    """Files that hold raw rows of people by design (kept `quarantine_days`)."""
    *folders, name = path.split("/")
    return (
        name in PEOPLE_FILES
        or (name.startswith("rejected") and name.endswith(".csv"))
        or bool(PEOPLE_FOLDERS & set(folders))
    )


def interval_end(label: str) -> datetime | None:
    """The end of the data interval a run folder is named after (None: not a run folder)."""
    found = _LABEL.match(label)
    return datetime.strptime(found.group(2), "%Y%m%dT%H%M%S").replace(tzinfo=UTC) if found else None


# -- the staging area, DAG by DAG ----------------------------------------------------------------
def _ls(path: str, fs) -> list[tuple[str, str]]:
    """(name, type) of a folder's entries; empty if it does not exist."""
    if not fs.exists(path):
        return []
    return [(e["name"].rstrip("/").rsplit("/", 1)[-1], e["type"]) for e in fs.ls(path, detail=True)]


def brand_dag_ids(integration: str, state: str | None = None) -> dict[str, str]:
    """Every brand's DAG id of an integration, with that brand's name of `state` (the
    integration's own state name by default); the default brand's are the plain names."""
    from mailsync.brands import brands_for

    return {b.dag_id(integration): b.state(state or integration) for b in brands_for(integration)}


def dag_folders() -> list[str]:
    """DAG ids that have a folder in staging (this DAG writes none)."""
    base = root()
    return sorted(n for n, kind in _ls(base.path, base.fs) if kind == "directory" and n != DAG_ID)


def run_folders(dag_id: str) -> list[tuple[str, datetime]]:
    """(label, interval end) of a DAG's run folders, oldest first."""
    runs = root() / dag_id / "runs"
    found = [(n, interval_end(n)) for n, kind in _ls(runs.path, runs.fs) if kind == "directory"]
    return sorted(((n, end) for n, end in found if end is not None), key=lambda x: x[1])


@contextmanager
def dag_lease(dag_id: str, run_id: str) -> Iterator[bool]:
    """Hold another DAG's run lease while its files change (yields False when one of its runs
    is working: its files are left for the next day)."""
    from mailsync.state import RunLock

    holder = f"{DAG_ID}:{run_id}"  # never mistaken for a run of that DAG with the same run id
    lock = RunLock(dag_id)
    other = lock.acquire(holder, run_lock_ttl_s())
    if other is not None:
        log.warning("%s is busy (%s): left for the next retention run", dag_id, other.describe())
        yield False
        return
    try:
        yield True
    finally:
        lock.release(holder)


# -- deletion by age -----------------------------------------------------------------------------
def delete_old_runs(run: Run, policy: Retention | None = None) -> dict[str, Any]:
    """Delete run folders whose interval ended `run_days` or more before this run's interval end."""
    policy = policy or retention()
    cutoff = run.end - timedelta(days=policy.run_days)
    started, deleted, busy = time.monotonic(), 0, []
    for folder in _leased_folders(run, cutoff, busy):
        folder.fs.rm(folder.path, recursive=True)
        deleted += 1
    kept = sum(len(run_folders(dag_id)) for dag_id in dag_folders())
    log.info(
        "Run folders: %d deleted (interval ended on or before %s), %d kept; busy DAGs: %s",
        deleted,
        cutoff.isoformat(),
        kept,
        busy or "none",
    )
    return {
        "deleted": deleted,
        "kept": kept,
        "cutoff": cutoff.isoformat(),
        "busy": busy,
        "seconds": _since(started),
    }


def delete_people_files(run: Run, policy: Retention | None = None) -> dict[str, Any]:
    """Delete quarantine, rejected and unparsed-line files of runs older than `quarantine_days`."""
    policy = policy or retention()
    cutoff = run.end - timedelta(days=policy.quarantine_days)
    started, deleted, busy = time.monotonic(), 0, []
    for folder in _leased_folders(run, cutoff, busy):
        for path in folder.fs.find(folder.path):
            if is_people_file(path[len(folder.path) :]):
                folder.fs.rm(path)
                deleted += 1
    log.info("Quarantine and rejected files: %d deleted (runs ended on or before %s)", deleted, cutoff)
    return {"deleted": deleted, "cutoff": cutoff.isoformat(), "busy": busy, "seconds": _since(started)}


def _leased_folders(run: Run, cutoff: datetime, busy: list[str]) -> Iterator[ObjectStoragePath]:
    """The run folders whose interval ended on or before `cutoff`, each DAG's while this run
    holds that DAG's run lease; a DAG that is running is left for the next day (in `busy`)."""
    for dag_id in dag_folders():
        old = [label for label, end in run_folders(dag_id) if end <= cutoff]
        if not old:
            continue
        with dag_lease(dag_id, run.run_id) as held:
            if not held:
                busy.append(dag_id)
                continue
            for label in old:
                yield root() / dag_id / "runs" / label


def _since(started: float) -> float:
    return round(time.monotonic() - started, 2)


# -- erasure -------------------------------------------------------------------------------------
@dataclass
class Matcher:
    """Recognises rows of erased people by hashing candidate cells (emails anywhere; customer
    and CRM ids in their columns; order ids of the erased people's orders in `order_id`)."""

    subjects: set[str]
    customers: set[str]
    crm_ids: set[str]
    order_ids: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, erasures: list[Erasure]) -> Matcher:
        return cls(
            {e.subject for e in erasures},
            {e.customer_hash for e in erasures if e.customer_hash},
            {e.crm_hash for e in erasures if e.crm_hash},
        )

    def rows(self, table: pa.Table) -> pa.Array | None:
        """Boolean mask of the table's rows that belong to an erased person (None: no row)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        mask = None
        for name in table.column_names:
            column = table[name]
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                continue
            lowered = pc.utf8_lower(pc.utf8_trim_whitespace(column))
            base = name.rsplit(".", 1)[-1].lower()  # "merge_fields.CLIENTID" -> "clientid"
            hits = [v for v in pc.unique(lowered).to_pylist() if v and self.cell(v, base)]
            if hits:
                here = pc.fill_null(pc.is_in(lowered, value_set=pa.array(hits, type=lowered.type)), False)
                mask = here if mask is None else pc.or_(mask, here)
        return mask if mask is not None and pc.any(mask).as_py() else None

    def cell(self, text: str, column: str) -> bool:
        """Whether a cell (Parquet or CSV) is an erased person's: an email anywhere in it, or a
        customer / CRM / order id in its own column (ids elsewhere would match by chance)."""
        from mailsync.state import pseudonym

        if "@" in text and any(pseudonym("email", m) in self.subjects for m in _EMAIL.findall(text)):
            return True
        value = text.strip()
        if column in CUSTOMER_COLUMNS:
            return bool(value) and pseudonym("customer_id", value) in self.customers
        if column in CRM_COLUMNS:
            return bool(value) and pseudonym("crm_id", value) in self.crm_ids
        if column in RAW_COLUMNS and self.customers:  # a partner line that never became a row
            return any(pseudonym("customer_id", t) in self.customers for t in _TOKENS.split(value) if t)
        return column == "order_id" and value.lower() in self.order_ids


@dataclass
class Scrubbed:
    files_scanned: int = 0
    files_rewritten: int = 0
    rows_removed: int = 0
    unreadable: int = 0


def scrub_parquet(path: str, fs, matcher: Matcher, tally: Scrubbed) -> pa.Table | None:
    """Rewrite a Parquet file without the erased people's rows; return the removed rows."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path, filesystem=fs)
    mask = matcher.rows(table)
    if mask is None:
        return None
    removed = table.filter(mask)
    _atomic_write(fs, path, lambda f: pq.write_table(table.filter(pc.invert(mask)), f, compression="zstd"))
    tally.files_rewritten += 1
    tally.rows_removed += removed.num_rows
    return removed


def scrub_text(path: str, fs, matcher: Matcher, tally: Scrubbed) -> None:
    """CSV: drop the records of erased people (any delimiter, the file's encoding kept). Other
    text (HTML, JSON): erased emails replaced by `[erased]`."""
    with fs.open(path, "rb") as f:
        data = f.read()
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        tally.unreadable += 1
        return
    if path.endswith(".csv"):
        out, removed = _scrub_csv(text, matcher)
    else:
        out = _EMAIL.sub(lambda m: "[erased]" if matcher.cell(m.group(0), "") else m.group(0), text)
        removed = int(out != text)
    if removed:
        payload = out.encode("utf-8" if encoding == "utf-8-sig" else encoding)
        if data.startswith(b"\xef\xbb\xbf"):
            payload = b"\xef\xbb\xbf" + payload
        _atomic_write(fs, path, lambda f: f.write(payload))
        tally.files_rewritten += 1
        tally.rows_removed += removed


def _scrub_csv(text: str, matcher: Matcher) -> tuple[str, int]:
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t|", key=first.count) if first else ","
    records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    if not records:
        return text, 0
    header = [h.strip().lower() for h in records[0]]
    kept = [records[0]]
    for record in records[1:]:
        if any(matcher.cell(v, header[i] if i < len(header) else "") for i, v in enumerate(record)):
            continue
        kept.append(record)
    if len(kept) == len(records):
        return text, 0
    buffer = io.StringIO()
    terminator = "\r\n" if "\r\n" in text else "\n"
    csv.writer(buffer, delimiter=delimiter, lineterminator=terminator).writerows(kept)
    return buffer.getvalue(), len(records) - len(kept)


def _atomic_write(fs, path: str, write) -> None:
    import uuid

    from mailsync.staging import private

    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open(tmp, "wb") as f:
            write(f)
        private(fs, tmp)
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def scrub_dag(dag_id: str, matcher: Matcher, tally: Scrubbed) -> set[str]:
    """Every file a DAG keeps (current/ and run folders), without the erased people. Returns
    the ids of the erased people's orders found (the shop DAG), whose lines go in a second pass."""
    import pyarrow.parquet as pq

    base = root() / dag_id
    fs = base.fs
    files = [p for p in fs.find(base.path) if ".tmp-" not in p.rsplit("/", 1)[-1]]
    order_ids: set[str] = set()
    for path in files:
        tally.files_scanned += 1
        if path.endswith(".parquet"):
            removed = scrub_parquet(path, fs, matcher, tally)
            if removed is not None and {"id", "email"} <= set(removed.column_names):
                order_ids |= {str(v).strip().lower() for v in removed["id"].to_pylist() if v is not None}
        else:
            scrub_text(path, fs, matcher, tally)
    if order_ids:  # lines and other rows keyed by those orders only
        lines = Matcher(set(), set(), set(), order_ids)
        for path in files:
            if path.endswith(".parquet") and "order_id" in pq.read_schema(path, filesystem=fs).names:
                scrub_parquet(path, fs, lines, tally)
            elif path.endswith(".csv"):
                scrub_text(path, fs, lines, tally)
    return order_ids


def live_crm_subjects() -> set[str]:
    """Hashes of the emails the contacts snapshot holds: people the CRM still has."""
    from mailsync.staging import state_area
    from mailsync.state import pseudonym

    emails: set[str] = set()
    for dag_id in brand_dag_ids(CONTACTS):  # any brand's CRM still holding them brings them back
        snapshot = state_area(dag_id) / "snapshots" / "contacts"
        for name in snapshot.names(".parquet"):
            emails |= set(snapshot.read_parquet(name, columns=["__key"])["__key"].dropna())
    return {pseudonym("email", e) for e in emails}


def apply_erasures(run: Run, policy: Retention | None = None) -> dict[str, Any]:
    """Remove every person in the ledger from the files we keep and from the sync state.

    A requested erasure of someone the CRM still has is held back (the next sync would bring
    them back): erase them in the CRM first. Fails when an erasure is still pending past
    `erasure_days`, naming what keeps it (hashes only)."""
    from mailsync.state import ErasureLedger

    policy = policy or retention()
    started = time.monotonic()
    ledger = ErasureLedger()
    everyone = ledger.all()
    if not everyone:
        return {"erasures": 0, "pending": 0, "seconds": _since(started)}
    live = live_crm_subjects()
    held_back = [e for e in everyone if e.applied_at is None and e.subject in live]
    active = [e for e in everyone if e.subject not in live]
    matcher = Matcher.of(active)
    tally, busy, order_ids = Scrubbed(), [], {}
    orders_state = brand_dag_ids(SHOP, ORDERS_STATE)  # each brand's shop DAG -> its orders' state
    for dag_id in dag_folders() if active else []:  # all held back: nothing to look for
        with dag_lease(dag_id, run.run_id) as held:
            if not held:
                busy.append(dag_id)
                continue
            found = scrub_dag(dag_id, matcher, tally)
            if dag_id in orders_state and found:
                order_ids[orders_state[dag_id]] = sorted(found)
    pending = [e for e in active if e.applied_at is None]
    state_rows = ledger.erase_state({e.subject for e in active}, order_ids or None)
    if not busy:
        ledger.mark_applied([e.subject for e in pending])
    result = {
        "erasures": len(everyone),
        "applied_now": 0 if busy else len(pending),
        "held_back_in_crm": [e.subject[:12] for e in held_back],
        "busy": busy,
        "files_scanned": tally.files_scanned,
        "files_rewritten": tally.files_rewritten,
        "rows_removed": tally.rows_removed,
        "unreadable_files": tally.unreadable,
        "state_rows_removed": state_rows,
        "seconds": _since(started),
    }
    log.info("Erasures: %s", result)
    deadline = run.end - timedelta(days=policy.erasure_days)
    overdue = [e for e in held_back + (pending if busy else []) if _aware(e.recorded_at) <= deadline]
    if overdue:
        raise ErasureOverdue(
            f"{len(overdue)} erasure(s) pending for more than {policy.erasure_days} days "
            f"(subjects {', '.join(e.subject[:12] for e in overdue[:10])}): "
            + (
                f"{len(held_back)} still in the CRM (erase them there, then run a full refresh); "
                if held_back
                else ""
            )
            + (f"DAGs busy every time: {', '.join(busy)}" if busy else "")
        )
    return result


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite drops the zone


# -- recording -----------------------------------------------------------------------------------
def record_crm_erasures(run: Run, current, staged) -> int:
    """Called by the contacts `commit` before tonight's snapshot replaces the current one: the
    contacts that left the snapshot without being archived in the CRM were erased (a GDPR
    delete leaves no trace; only a full refresh notices). An email or customer id another
    contact still holds is not erased. Tonight's ids, emails and customer ids are held as Arrow
    arrays (a million contacts: ~100 MiB) and the current snapshot is read a bucket at a time;
    a contact may have moved to another bucket (its email changed), so the look-ups are global."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    if not current.names(".parquet"):
        return 0

    def text(values) -> pa.Array:
        """One Arrow array (a column read from a file of several row groups comes chunked)."""
        arr = pa.array(values, pa.large_string(), from_pandas=True)
        return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr

    def column(area, name: str) -> pa.Array:
        parts = [text(area.read_parquet(n, columns=[name])[name]) for n in area.names(".parquet")]
        return pa.concat_arrays(parts) if parts else pa.array([], pa.large_string())

    def among(values: pd.Series, value_set: pa.Array) -> pd.Series:
        found = pc.is_in(text(values), value_set=value_set)
        return pd.Series(pc.fill_null(found, False).to_numpy(zero_copy_only=False), index=values.index)

    archived = (run.area / "extract").read_parquet("archived.parquet")["id"].dropna()
    kept_ids = pa.concat_arrays([column(staged, "hs_object_id"), text(archived)])
    kept_emails = column(staged, "__key")
    gone = []
    for name in current.names(".parquet"):
        before = current.read_parquet(name, columns=["__key", "customer_id", "hs_object_id"])
        left = ~among(before["hs_object_id"], kept_ids) & ~among(before["__key"], kept_emails)
        gone.append(before[left.to_numpy()])
    del kept_ids, kept_emails
    gone = pd.concat(gone, ignore_index=True)
    if gone.empty:
        return 0
    from mailsync.state import ErasureLedger

    still = among(gone["customer_id"], column(staged, "customer_id"))
    people = [
        {
            "email": r["__key"],
            "customer_id": r["customer_id"] if pd.notna(r["customer_id"]) and not held else None,
            "crm_id": r["hs_object_id"],
        }
        for r, held in zip(gone.to_dict("records"), still, strict=True)
    ]
    recorded = ErasureLedger().record(people, source="crm_full_refresh", run_id=run.run_id)
    log.info("Recorded %d erasures (contacts gone from the CRM without an archive)", recorded)
    return recorded


def request_erasure(emails: list[str], customer_ids: list[str] | None = None) -> list[str]:
    """Record erasure requests by hand; returns their hashed subjects (what logs show)."""
    from mailsync.state import ErasureLedger, pseudonym

    ids = list(customer_ids or []) + [None] * (len(emails) - len(customer_ids or []))
    ErasureLedger().record(
        [{"email": e, "customer_id": c} for e, c in zip(emails, ids, strict=True)], source="request"
    )
    return [pseudonym("email", e) for e in emails]


def main(argv: list[str] | None = None) -> int:
    """`python -m mailsync.operators.retention erase EMAIL [--customer-id ID]`: record a request
    (in the environment of the Airflow components, where the `mailsync_state` connection is)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m mailsync.operators.retention")
    sub = parser.add_subparsers(dest="command", required=True)
    erase = sub.add_parser("erase", help="record an erasure request; the retention DAG applies it")
    erase.add_argument("email")
    erase.add_argument("--customer-id", default=None)
    args = parser.parse_args(argv)
    (subject,) = request_erasure([args.email], [args.customer_id] if args.customer_id else None)
    sys.stdout.write(
        f"erasure recorded: subject {subject[:12]} (applied by the next mailsync_retention run)\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
