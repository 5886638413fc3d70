"""The CRM write-back step integrations share: desired contact records against the sync state,
the difference written to the CRM by email (never creating a contact).

The step before it writes the desired records (mapped, keyed by email, bucketed) to the run's
staging folder; this one writes what changed since the CRM last acknowledged it, as the
mapping's `destination.write_back` says (`all_records_with_email`: every CRM record sharing the
email). The state advances per acknowledged batch, so a retry resumes. Contacts the CRM does not
know are reported, not created; other refusals are kept (`pending` in the DAG's state area) for
the next run, whose step before this one touches them again, so a refused write is retried,
not lost.

With `ids_from_dag` (the brand's contacts sync) the ids of the touched emails come from that
DAG's contacts snapshot, so the write needs no batch read by email: one update call per 100
records. The snapshot keeps every CRM record of an email that passed the contacts sync's gate once
(duplicates are deduplicated only for the ESP members, after the snapshot is written), but not a
record created since the last night, nor one quarantined ever since it was created (about 4 % of
the sandbox's records: bad birthdays, amounts): the ids of records quarantined in the runs whose
quarantine files are still kept come from those files. One search for the contacts modified since
the snapshot's high-water mark finds the records it cannot have (created since, or their email
changed), so an email in none of them is reported unknown to the CRM without a read, and read by
email when the next run touches it again (kept pending): a record the snapshot lacks for another
reason, or a contact created minutes ago (HubSpot's search index lags), is then written. Read by
email are also the emails
when that search would cost more than reading them (or no contacts sync ran yet), an email with a
quarantined row without a usable id, and an email one of whose ids the CRM no longer has
(deleted or archived since the snapshot): that one is then written by email or reported
unknown. Left, when that search was skipped: a record created or given a known email since the
snapshot misses the values, and one whose email changed gets its old email's; and a record
quarantined since before the quarantine files' retention misses them until it passes the gate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from mailsync import links

if TYPE_CHECKING:
    from mailsync.staging import Area

log = logging.getLogger(__name__)
PENDING = "pending_writeback.parquet"  # emails whose last write the CRM refused (DAG state area)
UNKNOWN = "unknown_contact"
SNAPSHOT_ROWS = 50_000  # snapshot rows read at a time when looking up ids


def pending_emails(current: Area, name: str = PENDING) -> set[str]:
    """The emails whose last write-back the CRM refused (kept by `keep_pending`)."""
    return set(current.read_parquet(name)["email"]) if current.exists(name) else set()


def keep_pending(current: Area, emails: Iterable[str], name: str = PENDING) -> None:
    """Keep the refused emails for the next run (which replaces this list); none: no file."""
    import pandas as pd

    emails = sorted(set(emails))
    if emails:
        current.write_parquet(name, pd.DataFrame({"email": emails}).astype("string"))
    elif current.exists(name):
        current.file(name).unlink()


def snapshot_ids(snapshot: Area, keys: Iterable[str], *, rows: int = SNAPSHOT_ROWS) -> dict[str, list[str]]:
    """Every CRM record id of these emails (normalised keys) a contacts snapshot keeps.

    Only the key buckets of these emails are read, `rows` rows of two columns at a time, filtered
    on the keys as they are read: memory follows the emails asked for, not the size of the CRM.
    An id listed under two emails (a contact whose email changed between two versions) is left
    out of both (listed with no ids): which email it has now is not known, so both are read by
    email."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from mailsync.contacts.extract import ID
    from mailsync.mapping import engine
    from mailsync.settings import BUCKETS

    wanted = pd.Series(sorted(set(keys)), dtype="string")
    found: dict[str, list[str]] = {}
    if wanted.empty or not snapshot.exists():
        return found
    owners: dict[str, set[str]] = {}
    for bucket, part in wanted.groupby(engine.bucket_of(wanted, BUCKETS)):
        target = snapshot.file(f"bucket={bucket:02d}.parquet")
        if not target.fs.exists(target.path):
            continue
        value_set = pa.array(part.tolist(), pa.string())
        reader = pq.ParquetFile(target.path, filesystem=target.fs)
        for batch in reader.iter_batches(batch_size=rows, columns=[engine.KEY, ID]):
            key_column = batch.column(engine.KEY).cast(pa.string())
            hit = batch.filter(pc.is_in(key_column, value_set=value_set))
            for key, contact_id in zip(
                hit.column(engine.KEY).to_pylist(), hit.column(ID).to_pylist(), strict=True
            ):
                if key and contact_id:
                    ids = found.setdefault(key, [])
                    if str(contact_id) not in ids:
                        ids.append(str(contact_id))
                    owners.setdefault(str(contact_id), set()).add(key)
    ambiguous = {k for keys_of_id in owners.values() if len(keys_of_id) > 1 for k in keys_of_id}
    return {k: [] if k in ambiguous else ids for k, ids in found.items()}


def quarantined_ids(
    dag_id: str, keys: Iterable[str], *, rows: int = SNAPSHOT_ROWS
) -> dict[str, set[str] | None]:
    """email -> the CRM ids of its records the contacts sync `dag_id`'s gate quarantined in runs
    whose quarantine file is still kept (include/retention.yaml: quarantine_days), for the emails
    among `keys` that have such records. Such a record is in the snapshot only if an earlier
    version of it passed the gate, so its id comes from here. A record quarantined in several
    runs counts under the email of its latest row (an email changed since is not its email).
    None for an email one of whose quarantined rows has no usable id (blank or not a HubSpot id:
    the row may be quarantined for its id): that email is read by email. Read `rows` at a time,
    two columns only."""
    import pandas as pd

    from mailsync.contacts.extract import ID
    from mailsync.staging import Area, root

    wanted, found, seen = set(keys), {}, set()
    runs = Area(root() / dag_id / "runs")
    for label in sorted(runs.names(), reverse=True) if wanted else []:  # the latest run first
        target = (runs / label / "quality" / "contacts").file("quarantine.csv")
        if not target.fs.exists(target.path):
            continue
        with target.open("r") as text:
            columns = lambda c: c in ("email", ID)  # noqa: E731 (older files may lack the id)
            for chunk in pd.read_csv(text, usecols=columns, dtype="string", chunksize=rows):
                emails = chunk["email"].str.strip().str.lower().fillna("")
                ids = chunk[ID].fillna("").str.strip() if ID in chunk else pd.Series([""] * len(chunk))
                for key, contact_id in zip(emails, ids, strict=True):
                    if not contact_id.isdigit():
                        if key in wanted:
                            found[key] = None
                        continue
                    if contact_id in seen:
                        continue  # a later run's row of this record said its email
                    seen.add(contact_id)
                    if key in wanted and found.get(key, set()) is not None:
                        found.setdefault(key, set()).add(contact_id)
    return found


def contacts_snapshot_of(dag_id: str) -> Area:
    """The contacts snapshot of a contacts sync DAG (mailsync.contacts.areas.contacts_snapshot)."""
    from mailsync.staging import state_area

    return state_area(dag_id) / "snapshots" / "contacts"


def _owners(ids_by_key: dict[str, set[str]]) -> dict[str, set[str]]:
    """contact id -> the keys listing it."""
    owners: dict[str, set[str]] = {}
    for key, ids in ids_by_key.items():
        for contact_id in ids:
            owners.setdefault(contact_id, set()).add(key)
    return owners


def _split(path: str) -> tuple[str, str]:
    folder, _, name = path.rpartition("/")
    return folder, name


class WriteBackCrmContactsOperator(BaseOperator):
    """Write the desired contact records that differ from the sync state `state` to the CRM, by
    email, as the mapping's `write_back` says; never creates a contact.

    `desired` is the records' file in the run's staging folder. With the `dry_run` param it
    counts what it would write. Refused records are in the rejected file (the task's Rejected
    records link); those refused for another reason than an unknown contact, and those found
    unknown without a read, are kept in `pending` (a file of the DAG's state area) for the next
    run. With `ids_from_dag` (a contacts sync DAG id) the CRM ids come from that DAG's snapshot
    and one search for the contacts modified since it, written by id with no read first (see the
    module's docstring)."""

    template_fields: Sequence[str] = (
        "mapping",
        "state",
        "crm_conn_id",
        "desired",
        "pending",
        "ids_from_dag",
    )
    operator_extra_links = links.REJECTED
    ui_color = "#e3f4f4"

    def __init__(
        self,
        *,
        mapping: str,
        state: str,
        crm_conn_id: str = "crm_default",
        desired: str = "desired/contacts.parquet",
        pending: str = PENDING,
        ids_from_dag: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mapping = mapping
        self.state = state
        self.crm_conn_id = crm_conn_id
        self.desired = desired
        self.pending = pending
        self.ids_from_dag = ids_from_dag

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.hooks.crm import CrmHook
        from mailsync.mapping.spec import load_mapping
        from mailsync.operators import sync
        from mailsync.operators.run import Run
        from mailsync.state import SyncState

        run = Run.from_context(context)
        folder, name = _split(self.desired)
        area = run.area / folder if folder else run.area
        if not area.exists(name):
            return {"written": 0, "unknown_contacts": 0, "api_calls": 0}
        desired = area.read_parquet(name)
        state = SyncState(self.state)
        acked = state.load(sorted(set(desired[sync.BUCKET])))
        upserts, _, counts = sync.diff(desired, acked, state)  # removals do not apply: only touched contacts
        if run.params.get("dry_run"):
            return {**counts, "dry_run": True, "would_write": len(upserts)}
        m = load_mapping(self.mapping)
        meta = sync.ack_meta(upserts)
        hook = CrmHook(self.crm_conn_id)
        all_records = m.destination.write_back == "all_records_with_email"
        known, absent = self._known_ids(upserts, all_records, hook)
        # unknown by the search alone: reported, and read by email when the next run touches it
        # again (a record the snapshot lacks for another reason, a contact not yet in the index)
        absent -= pending_emails(run.current, self.pending)
        written, rejected = 0, [{"key": key, "reason": UNKNOWN} for key in sorted(absent)]

        def record(results: Iterable, again: set[str] | None = None) -> None:
            nonlocal written
            for result in results:
                sync.acknowledge(state, result.accepted, meta, run.run_id)
                written += len(result.accepted)
                for r in result.rejected:
                    if again is not None and r["reason"] == UNKNOWN:
                        again.add(r["key"])  # an id the CRM no longer has: read the email again
                    else:
                        rejected.append(r)

        by_id = upserts[sync.KEY].isin(known).to_numpy()
        again: set[str] = set()
        if by_id.any():
            with_ids = (
                {**doc, "ids": known[key]}
                for key, doc in zip(upserts[sync.KEY][by_id], sync.payloads(m, upserts[by_id]), strict=True)
            )
            record(hook.update_contacts_by_id(with_ids), again)
        by_email = ~by_id & ~upserts[sync.KEY].isin(absent).to_numpy()  # with last run's unknown ones
        by_email |= upserts[sync.KEY].isin(again).to_numpy()
        if by_email.any():
            record(hook.update_contacts(sync.payloads(m, upserts[by_email]), all_records=all_records))
        unknown = sum(1 for r in rejected if r["reason"] == UNKNOWN)
        retry = sorted({r["key"] for r in rejected if r["reason"] != UNKNOWN} | absent)
        keep_pending(run.current, retry, self.pending)
        path = (run.area / "load").write_text("rejected.csv", sync.rejected_csv(rejected))
        log.info(
            "CRM: %d contacts written, %d unknown to the CRM (reported, not created), %d other rejections",
            written,
            unknown,
            len(rejected) - unknown,
        )
        return {
            **counts,
            "written": written,
            "unknown_contacts": unknown,
            "rejected": len(rejected) - unknown,
            "retried_next_run": len(retry),
            "sent_by_id": int(by_id.sum()),  # emails whose ids the contacts snapshot gave
            "ids_gone_since_snapshot": len(again),  # of those, read by email again
            "unknown_without_read": len(absent),  # neither in the snapshot nor modified since it
            "rejected_file": str(path),
            **hook.stats.as_dict(),
        }

    def _known_ids(self, upserts, all_records: bool, hook) -> tuple[dict[str, list[str]], set[str]]:
        """(key -> the CRM ids to write, the keys the CRM does not have) for the touched emails.

        The ids come from `ids_from_dag`'s snapshot and kept quarantine files, then from one
        search for the contacts modified since that snapshot's high-water mark (created since,
        or their email changed: a record takes the values of the email it has now, as by email):
        an email found in none of them is not in the CRM, with no read by email. When that search
        would take more calls than reading the missing emails by email (after a busy day, or a
        write-back that touched many contacts since) they are read and the snapshot's ids kept
        for the others. Every record of the email counts with `all_records`; without, only emails
        with one record (which one HubSpot's read by email would pick among several is the CRM's
        to say). An id listed under two emails is left out of both, and an email with a
        quarantined row without a usable id is not known: those are read by email."""
        if not self.ids_from_dag or upserts.empty:
            return {}, set()
        from mailsync.contacts.extract import SEARCH_INDEX_LAG, high_water
        from mailsync.operators import sync
        from mailsync.staging import state_area

        keys = upserts[sync.KEY]
        since = high_water(state_area(self.ids_from_dag))  # first: a commit meanwhile only widens the search
        snapshot = contacts_snapshot_of(self.ids_from_dag)
        known = {k: set(ids) for k, ids in snapshot_ids(snapshot, keys).items()}
        unreadable = {k for k, ids in known.items() if not ids}  # its id is another email's too
        for key, ids in quarantined_ids(self.ids_from_dag, keys).items():
            if ids is None:
                known.pop(key, None)
                unreadable.add(key)
            else:
                known[key] = known.get(key, set()) | ids
        outside = set(keys) - set(known) - unreadable
        absent: set[str] = set()
        if since is not None and snapshot.exists():  # worth a search with every email known: records move
            reads = max(1, (2 if all_records else 1) * -(-len(outside) // 100))  # search + batch read per 100
            end = datetime.now(UTC) + timedelta(hours=1)  # a CRM clock ahead of ours
            modified = hook.ids_modified_since(since - SEARCH_INDEX_LAG, end, max_searches=reads)
            if modified is not None:
                owners = _owners(known)
                for email, ids in modified.items():
                    for contact_id in ids:  # the email these records have now
                        for key in owners.get(contact_id, ()):
                            known[key].discard(contact_id)
                    if email in outside or email in known:
                        known[email] = known.get(email, set()) | set(ids)
                absent = outside - set(modified)
        owners = _owners(known)
        ambiguous = {k for keys_of_id in owners.values() if len(keys_of_id) > 1 for k in keys_of_id}
        return {
            k: sorted(ids)
            for k, ids in known.items()
            if ids and k not in ambiguous and (all_records or len(ids) == 1)
        }, absent
