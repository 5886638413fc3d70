"""A full CRM extract (the contacts sync's extract step): HubSpot's exports API vs the list API.

    python -m bench.bench_crm_extract [--contacts 100000] [--latency-ms 100] [--poll-s 2] [--no-limits]

Both paths run `mailsync.contacts.extract.extract` on a full refresh in this process, one after
the other against the same sandbox CRM, with HubSpot's burst limiter (190 calls per rolling 10 s)
and a per-call latency on (bench/limits.py): the counts before and after, the contacts (by an
export: start, status reads every `--poll-s`, one file; or by the list API: 100 per page), the
archived listing, the staging. The export goes first, so the listing's calls do not fill the
window it starts in. Measured: wall seconds, CRM API calls (the hook's count and the sandbox's
request log; an export's file download is not an API call), 429s answered, rows staged; each
path beside its floor (its fewest calls at the published limits). The staged rows of both paths
are compared (they must be equal: a change of path must not look like a change of contacts).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import limits
from bench.common import add_limit_args, sandbox, write_result

DAG = "crm_to_esp_contacts"
START, END = datetime(2026, 11, 19, 2, tzinfo=UTC), datetime(2026, 11, 20, 2, tzinfo=UTC)


def connection(sb, conn_id: str, **extra) -> str:
    definition = json.loads(sb.airflow_connections()["crm_default"])
    definition.setdefault("extra", {}).update(extra)
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(definition)
    return conn_id


def full_extract(sb, conn_id: str, run_id: str) -> tuple[dict, object]:
    """One full extract on its own run folder; (figures, the staged frame sorted by id)."""
    import pandas as pd

    from mailsync.contacts.extract import ID, extract
    from mailsync.hooks.crm import CrmHook
    from mailsync.mapping.spec import load_mapping
    from mailsync.operators.run import Run

    run = Run(dag_id=f"{DAG}__{run_id}", run_id=run_id, start=START, end=END, params={"full_refresh": True})
    sb.clear_requests()
    started = time.perf_counter()
    summary = extract(run, CrmHook(conn_id), load_mapping(DAG))
    wall = time.perf_counter() - started
    log = sb.requests("crm")
    api = [r for r in log if not r["path"].startswith("/hubspot-exports/")]
    pages = [r for r in api if r["path"] == "/crm/v3/objects/contacts"]
    by_kind = {
        "count (search)": sum(r["path"].endswith("/search") for r in api),
        "export start": sum(r["path"] == "/crm/v3/exports/export/async" for r in api),
        "export status reads": sum("/exports/export/async/tasks/" in r["path"] for r in api),
        "list pages": sum("archived=true" not in r["query"] for r in pages),
        "archived list pages": sum("archived=true" in r["query"] for r in pages),
    }
    staged = pd.concat((run.area / "extract" / "contacts").iter_parquet(), ignore_index=True)
    figures = {
        "path": summary["full_extract"],
        "seconds": round(wall, 2),
        "contacts": summary["contacts"],
        "archived": summary["archived"],
        "crm_api_calls": summary["api_calls"],
        "crm_api_calls_in_request_log": len(api),
        "crm_calls_by_kind": by_kind,
        "answered_429": sum(r["status"] == 429 for r in api),
        "retries": summary["retries"],
        "file_downloads": len(log) - len(api),
    }
    return figures, staged.sort_values(ID, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument(
        "--poll-s", type=float, default=2.0, help="export status reads every N s (production: 2)"
    )
    args = add_limit_args(parser).parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        sandbox(
            Path(tmp), contacts=args.contacts, limits=not args.no_limits, latency_ms=args.latency_ms
        ) as sb,
    ):
        os.environ["MAILSYNC_STAGING_URL"] = (Path(tmp) / "staging").as_uri()
        by_export = connection(sb, "crm_bench_export", full_extract="export", export_poll_s=args.poll_s)
        by_list = connection(sb, "crm_bench_list", full_extract="list")
        export, export_rows = full_extract(sb, by_export, "export")
        time.sleep(10)  # a fresh 10-s window for the listing
        listing, list_rows = full_extract(sb, by_list, "list")
    same_rows = export_rows.equals(list_rows) and list(export_rows.dtypes) == list(list_rows.dtypes)
    floors = {
        "export": limits.floor({"hubspot": limits.HUBSPOT_EXPORT_CALLS}, args.latency_ms),
        "list": limits.floor({"hubspot": math.ceil(args.contacts / limits.HUBSPOT_PAGE)}, args.latency_ms),
    }
    for figures in (export, listing):
        floor = floors[figures["path"]]
        figures["floor"] = floor
        figures["ratio_to_floor"] = limits.ratio(figures["seconds"], floor["seconds"])
        figures["calls_ratio_to_floor"] = limits.ratio(figures["crm_api_calls"], floor["total_calls"])
    write_result(
        "crm_extract",
        {
            "contacts": args.contacts,
            "latency_ms": args.latency_ms,
            "export_poll_s": args.poll_s,
            "export": export,
            "list": listing,
            "staged_rows_identical": same_rows,
            "speedup_export_over_list": round(listing["seconds"] / export["seconds"], 1),
            "calls_list_over_export": round(listing["crm_api_calls"] / export["crm_api_calls"], 1),
            "note": (
                "Both paths also make 2 count searches and list the archived contacts (100 per page): "
                "calls the floors leave out. The export's seconds are the sandbox building its file "
                "plus up to one poll interval; HubSpot's own export time is not known here."
            ),
        },
    )


if __name__ == "__main__":
    main()
