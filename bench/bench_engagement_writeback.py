"""The engagement write-back's CRM calls: ids from the contacts snapshot vs read by email.

    python -m bench.bench_engagement_writeback [--contacts 20000] [--days 7] [--latency-ms 100] [--no-limits]

Issue 22 asks for at most 1 CRM call per 100 touched contacts, the CRM ids kept from the
contacts sync so that the write-back needs no batch read by email. Against the sandbox with the
vendors' limiters and a per-call latency on (bench/limits.py), the operators' `execute` called
in this process as the operator tests do: one contacts sync night (extract, gate, transform,
commit; nothing loaded to the ESP, which this benchmark does not measure) leaves the contacts
snapshot and its quarantine file; then the engagement steps (extract, quality gate, transform)
over the last `--days` of the generated world as one data interval (a week by default: a day
at 20k contacts: about 700 contacts with events, 7 batches) write the
touched contacts' desired records once. The same records are written back twice, each with its
own sync state so that both write every touched contact (the snapshot path first: the other's
writes would count as modifications since the snapshot): by id from the snapshot and one search
for the contacts modified since it (`ids_from_dag` = the contacts sync), and by email (the
fallback when that DAG has no snapshot: a search with an IN filter per 100 emails, batch reads by
email for the emails the search misses, then the updates). Measured for each, from the
sandbox's request log: CRM calls by kind, 429s answered, ESP calls, wall seconds, CRM calls per
100 touched contacts, beside the floor (one batch update per 100 touched contacts at HubSpot's
190 per 10 s) and the engagement path's floor (bench/limits.floor_engagement).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import limits
from bench.common import PeakMemory, add_limit_args, sandbox, write_result
from devtools.operator_run import contacts_night as night_steps
from devtools.operator_run import operator_context

CONTACTS_DAG = "crm_to_esp_contacts__bench"  # the contacts sync whose snapshot gives the ids
NO_SNAPSHOT_DAG = "crm_to_esp_contacts__never_ran"  # a contacts sync with no snapshot yet
ENGAGEMENT_DAG = "esp_to_crm_engagement__bench"
MAPPING = "esp_to_crm_engagement"
END = datetime(2026, 11, 20, tzinfo=UTC)  # the sandbox's generated world ends here
NIGHT = {"partitions": 1, "max_removal_share": 0.1, "allow_mass_removal": False, "full_refresh": True}
CRM_CONTACTS = "/crm/v3/objects/contacts"
PATHS = {  # result key -> the contacts sync DAG whose snapshot the write-back reads
    "with_snapshot": CONTACTS_DAG,
    "without_snapshot": NO_SNAPSHOT_DAG,
}


def contacts_night(sb) -> dict:
    """One full contacts night up to its commit: the snapshot (ids by email) and the quarantine
    file the write-back reads. Nothing is loaded to the ESP."""
    context = operator_context(CONTACTS_DAG, "scheduled__bench", END - timedelta(days=1), END, **NIGHT)
    started = time.perf_counter()
    done = night_steps(context, load=False)
    extracted, gate, committed = done["extract_contacts"], done["validate"], done["commit"]
    assert committed.get("committed"), committed
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "crm_records_extracted": extracted.get("contacts"),
        "crm_records_quarantined": gate["contacts"].get("rows_quarantined"),
    }


def engagement_desired(sb, days: int) -> tuple[dict, dict]:
    """Extract, gate and transform `days` of engagement as one interval: the desired records of
    every touched contact in that run's staging folder. (the context, the workload's figures)"""
    from mailsync.operators.engagement import EngagementTotalsOperator, ExtractEspActivityOperator
    from mailsync.operators.steps import QualityGateOperator

    start = END - timedelta(days=days)
    context = operator_context(ENGAGEMENT_DAG, "manual__bench", start, END, campaign_lookback_days=30)
    sb.clear_requests()
    started = time.perf_counter()
    extracted = ExtractEspActivityOperator(task_id="extract").execute(context)
    extract_s = time.perf_counter() - started
    esp_calls = len(sb.requests("esp"))
    started = time.perf_counter()
    QualityGateOperator(task_id="validate", mapping=MAPPING, source="activity").execute(context)
    gate_s = time.perf_counter() - started
    started = time.perf_counter()
    totals = EngagementTotalsOperator(task_id="transform", mapping=MAPPING).execute(context)
    transform_s = time.perf_counter() - started
    workload = {
        "contacts_with_events_in_the_last_day": _last_day_contacts(context),
        "interval": {"start": start.isoformat(), "end": END.isoformat(), "days": days},
        "campaigns": extracted["campaigns"],
        "activity_rows": extracted["rows"],
        "events_valid": totals["events"],
        "contacts_touched": totals["contacts_touched"],
        "extract_seconds": round(extract_s, 2),
        "extract_esp_calls": esp_calls,
        "gate_seconds": round(gate_s, 2),
        "transform_seconds": round(transform_s, 2),
    }
    return context, workload


def _last_day_contacts(context: dict) -> int:
    """Contacts with a valid event in the interval's last day: what a daily run would touch
    (before the contacts an earlier version of that day had, or pending ones)."""
    import pandas as pd

    from mailsync.mapping import engine
    from mailsync.operators.run import Run
    from mailsync.operators.staged import concat
    from mailsync.operators.steps import VALID

    events = concat((Run.from_context(context).area / VALID / "activity").iter_parquet())
    if events.empty:
        return 0
    moments = pd.to_datetime(events["timestamp"], utc=True, errors="coerce")
    return int(events[engine.KEY][(moments >= pd.Timestamp(END - timedelta(days=1))).to_numpy()].nunique())


def _why_by_email(context: dict, contacts_dag: str, done: dict) -> dict:
    """What the snapshot path found outside the snapshot (counted after the clock stops): emails
    not in it (ESP members the CRM never had, read by email; or whose every record the contacts
    sync's gate quarantined, whose ids the kept quarantine files give), and emails in it with a
    quarantined record (that record's id from the same files)."""
    from mailsync.mapping import engine
    from mailsync.operators.crm import contacts_snapshot_of, quarantined_ids, snapshot_ids
    from mailsync.operators.run import Run

    keys = Run.from_context(context).area.read_parquet("desired/contacts.parquet")[engine.KEY].tolist()
    known = snapshot_ids(contacts_snapshot_of(contacts_dag), keys)
    missing = set(keys) - set(known)
    return {
        "not_in_snapshot": len(missing),
        "not_in_snapshot_unknown_to_the_crm": done["unknown_contacts"] - done["ids_gone_since_snapshot"],
        "not_in_snapshot_quarantined_by_its_gate": len(quarantined_ids(contacts_dag, missing)),
        "in_snapshot_with_a_quarantined_record": len(quarantined_ids(contacts_dag, known)),
    }


def write_back(sb, context: dict, path: str, latency_ms: int) -> dict:
    """One write-back of the run's desired records, with its own sync state (so every touched
    contact is written), reading ids from the snapshot of `PATHS[path]`."""
    from mailsync.operators.crm import WriteBackCrmContactsOperator
    from mailsync.state import SyncState

    SyncState(f"bench_engagement_{path}").count()  # the state database migrated before the clock starts
    op = WriteBackCrmContactsOperator(
        task_id="load", mapping=MAPPING, state=f"bench_engagement_{path}", ids_from_dag=PATHS[path]
    )
    sb.clear_requests()
    with PeakMemory() as memory:
        started = time.perf_counter()
        done = op.execute(context)
        wall = time.perf_counter() - started
    crm = [r for r in sb.requests("crm") if r["path"].startswith(CRM_CONTACTS)]
    why = _why_by_email(context, PATHS[path], done) if path == "with_snapshot" else None
    by_kind = {
        "search (modified since the snapshot; ids by email, IN filter)": sum(
            r["path"] == f"{CRM_CONTACTS}/search" for r in crm
        ),
        "batch read (ids by email)": sum(r["path"] == f"{CRM_CONTACTS}/batch/read" for r in crm),
        "batch update": sum(r["path"] == f"{CRM_CONTACTS}/batch/update" for r in crm),
    }
    by_kind["other"] = len(crm) - sum(by_kind.values())
    touched = done["new"] + done["changed"] + done.get("unchanged", 0)
    floor = limits.floor({"hubspot": math.ceil(touched / limits.HUBSPOT_BATCH)}, latency_ms)
    return {
        "ids_from": "contacts snapshot" if path == "with_snapshot" else "read by email (no snapshot)",
        "contacts_touched": touched,
        "written": done["written"],
        "unknown_contacts": done["unknown_contacts"],
        "rejected": done["rejected"],
        "sent_by_id": done["sent_by_id"],
        "read_by_email": touched
        - done["sent_by_id"]
        - done.get("unknown_without_read", 0)
        + done["ids_gone_since_snapshot"],
        "unknown_without_read": done.get("unknown_without_read", 0),
        "ids_gone_since_snapshot": done["ids_gone_since_snapshot"],
        **({"outside_the_snapshot": why} if why else {}),
        "seconds": round(wall, 2),
        "crm_calls": len(crm),
        "crm_calls_by_kind": by_kind,
        "crm_reads_by_email": len(crm) - by_kind["batch update"] - by_kind["other"],  # with the search since
        "crm_hook_api_calls": done.get("api_calls"),
        "crm_hook_retries": done.get("retries"),
        "answered_429": sum(r["status"] == 429 for r in crm),
        "esp_calls": len(sb.requests("esp")),
        "crm_calls_per_100_touched_contacts": round(len(crm) / max(touched, 1) * 100, 2),
        "peak_rss_mib": memory.max_mib("bench_engagement_writeback"),
        "floor": floor,
        "ratio_to_floor": limits.ratio(wall, floor["seconds"]),
        "calls_ratio_to_floor": limits.ratio(len(crm), floor["total_calls"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument(
        "--days", type=int, default=7, help="days of engagement written back as one interval (≤ 7)"
    )
    args = add_limit_args(parser).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MAILSYNC_STAGING_URL"] = (Path(tmp) / "staging").as_uri()
        os.environ["AIRFLOW_CONN_MAILSYNC_STATE"] = json.dumps(
            {"conn_type": "sqlite", "host": str(Path(tmp) / "state.db")}
        )
        with sandbox(
            Path(tmp), contacts=args.contacts, days=7, limits=not args.no_limits, latency_ms=args.latency_ms
        ) as sb:
            night = contacts_night(sb)
            context, workload = engagement_desired(sb, args.days)
            paths = {}
            for path in ("with_snapshot", "without_snapshot"):  # by email first: modifications since
                time.sleep(10)  # a fresh 10-s window of HubSpot's burst limit for each path
                paths[path] = write_back(sb, context, path, args.latency_ms)
    new, old = paths["with_snapshot"], paths["without_snapshot"]
    engagement_floor = limits.floor_engagement(
        workload["activity_rows"], workload["contacts_touched"], args.latency_ms
    )
    shared_s = workload["extract_seconds"] + workload["gate_seconds"] + workload["transform_seconds"]
    write_result(
        f"engagement_writeback_{args.contacts}",
        {
            "contacts": args.contacts,
            "days": args.days,
            "latency_ms": args.latency_ms,
            "contacts_sync_night": night,
            "workload": workload,
            "with_snapshot": new,
            "without_snapshot": old,
            "engagement_path": {
                "seconds_with_snapshot": round(shared_s + new["seconds"], 2),
                "seconds_without_snapshot": round(shared_s + old["seconds"], 2),
                "floor": engagement_floor,
                "ratio_to_floor": limits.ratio(shared_s + new["seconds"], engagement_floor["seconds"]),
            },
            "summary": {
                "crm_calls_per_100_touched_contacts": {
                    "with_snapshot": new["crm_calls_per_100_touched_contacts"],
                    "without_snapshot": old["crm_calls_per_100_touched_contacts"],
                    "goal": 1.0,
                },
                "fewer_crm_calls_x": round(old["crm_calls"] / max(new["crm_calls"], 1), 2),
                "write_back_speedup_x": round(old["seconds"] / max(new["seconds"], 0.01), 2),
                "same_outcome": all(new[k] == old[k] for k in ("written", "unknown_contacts", "rejected")),
            },
            "note": (
                "The same desired records written twice, each path with its own sync state; by id "
                "first, then by email, 10 s apart. The ESP calls of the write-back are 0 on both paths: "
                "the activity is read once by the extract (workload.extract_esp_calls). On the snapshot "
                "path the ids of records the contacts sync's gate quarantined come from its kept "
                "quarantine files (outside_the_snapshot), and one search for the contacts modified "
                "since the snapshot finds those it cannot have; emails in none of them (the CRM lacks "
                "them) are unknown without a read (unknown_without_read). "
                "The by-email path's searches are paced to HubSpot's 5 search requests per s, which "
                "bounds its seconds; the floor of both is the ids-known one (one batch update per 100 "
                "touched contacts). engagement_path: extract + gate + transform + the snapshot path's "
                "write-back against bench/limits.floor_engagement."
            ),
        },
    )


if __name__ == "__main__":
    main()
