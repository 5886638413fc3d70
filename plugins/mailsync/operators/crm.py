"""The CRM write-back step integrations share: desired contact records against the sync state,
the difference written to the CRM by email (never creating a contact).

The step before it writes the desired records (mapped, keyed by email, bucketed) to the run's
staging folder; this one writes what changed since the CRM last acknowledged it, as the
mapping's `destination.write_back` says (`all_records_with_email`: every CRM record sharing the
email). The state advances per acknowledged batch, so a retry resumes. Contacts the CRM does not
know are reported, not created; other refusals are kept (`pending` in the DAG's state area) for
the next run, whose step before this one touches them again, so a refused write is retried,
not lost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from mailsync import links

if TYPE_CHECKING:
    from mailsync.staging import Area

log = logging.getLogger(__name__)
PENDING = "pending_writeback.parquet"  # emails whose last write the CRM refused (DAG state area)
UNKNOWN = "unknown_contact"


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


def _split(path: str) -> tuple[str, str]:
    folder, _, name = path.rpartition("/")
    return folder, name


class WriteBackCrmContactsOperator(BaseOperator):
    """Write the desired contact records that differ from the sync state `state` to the CRM, by
    email, as the mapping's `write_back` says; never creates a contact.

    `desired` is the records' file in the run's staging folder. With the `dry_run` param it
    counts what it would write. Refused records are in the rejected file (the task's Rejected
    records link); those refused for another reason than an unknown contact are kept in
    `pending` (a file of the DAG's state area) for the next run."""

    template_fields: Sequence[str] = ("mapping", "state", "crm_conn_id", "desired", "pending")
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mapping = mapping
        self.state = state
        self.crm_conn_id = crm_conn_id
        self.desired = desired
        self.pending = pending

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
        written, rejected = 0, []
        all_records = m.destination.write_back == "all_records_with_email"
        for result in hook.update_contacts(sync.payloads(m, upserts), all_records=all_records):
            sync.acknowledge(state, result.accepted, meta, run.run_id)
            written += len(result.accepted)
            rejected.extend(result.rejected)
        unknown = sum(1 for r in rejected if r["reason"] == UNKNOWN)
        retry = sorted({r["key"] for r in rejected if r["reason"] != UNKNOWN})
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
            "rejected_file": str(path),
            **hook.stats.as_dict(),
        }
