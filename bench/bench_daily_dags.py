"""Throughput of the two daily DAGs through Airflow, and their API calls per volume.

    python bench/bench_daily_dags.py [--contacts 50000] [--latency-ms 50]

Runs (dag.test, in this process) the contacts sync once, then a week of esp_to_crm_engagement
and a week of shop_conversions_to_esp against the sandbox with a per-call latency. Reports
activity rows/s and CRM write calls per 100k activity rows; orders/s and ESP API calls per 10k
orders. Rates divide the rows by the summed wall time of the runs (Airflow's own overhead
included).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import ROOT, sandbox, write_result


def dag_run(dag_id: str, logical_date: str, **conf):
    import pendulum
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py"))
    started = time.perf_counter()
    run = bag.get_dag(dag_id).test(logical_date=pendulum.parse(logical_date), run_conf=conf)
    assert run.state == "success", f"{dag_id} {logical_date} {run.state}"
    return run, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--latency-ms", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        from devtools.airflow_env import airflow_env

        os.environ.update(airflow_env(Path(tmp) / "airflow"))
        os.environ["MAILSYNC_STAGING_URL"] = (Path(tmp) / "staging").as_uri()
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
        with sandbox(Path(tmp), contacts=args.contacts) as sb:
            dag_run("crm_to_esp_contacts", "2026-11-20T02:00:00Z", full_refresh=True, loyalty_wait_minutes=0)
            for system in ("esp", "crm", "shop"):
                sb.set_faults(system, latency_ms=args.latency_ms)
            days = [datetime(2026, 11, 14, tzinfo=UTC) + timedelta(days=i) for i in range(7)]
            sb.clear_requests()
            rows = seconds = 0.0
            for day in days:
                run, elapsed = dag_run("esp_to_crm_engagement", day.isoformat())
                rows += _report(run)["activity_rows"]
                seconds += elapsed
            posts = [r["path"] for r in sb.requests("crm") if r["method"] == "POST"]
            crm_writes = sum(1 for p in posts if p.endswith("batch/update"))
            crm_reads = sum(1 for p in posts if p.endswith("batch/read"))  # email -> id look-ups
            engagement = {
                "activity_rows": int(rows),
                "seconds": round(seconds, 1),
                "activity_rows_per_s": round(rows / seconds),
                "crm_write_calls": crm_writes,
                "crm_write_calls_per_100k_rows": round(crm_writes / rows * 100_000, 1),
                "crm_calls_per_100k_rows": round((crm_writes + crm_reads) / rows * 100_000, 1),
            }
            sb.clear_requests()
            orders = seconds = 0.0
            for day in days:
                run, elapsed = dag_run("shop_conversions_to_esp", day.isoformat())
                orders += _report(run)["orders_extracted"]
                seconds += elapsed
            esp_calls = len(sb.requests("esp"))
            esp_writes = sum(1 for r in sb.requests("esp") if r["method"] in ("POST", "PUT", "PATCH"))
            shop = {
                "orders": int(orders),
                "seconds": round(seconds, 1),
                "orders_per_s": round(orders / seconds, 1),
                "esp_api_calls": esp_calls,
                "esp_api_calls_per_10k_orders": round(esp_calls / orders * 10_000),
                "esp_write_calls_per_10k_orders": round(esp_writes / orders * 10_000),
                "shop_api_calls": len(sb.requests("shop")),
            }
    write_result(
        f"daily_dags_{args.contacts}",
        {"contacts": args.contacts, "latency_ms": args.latency_ms, "engagement": engagement, "shop": shop},
    )


def _report(run) -> dict:
    import json

    from mailsync.staging import run_area

    return json.loads(
        run_area(run.dag_id, run.data_interval_start, run.data_interval_end).read_text("report.json")
    )


if __name__ == "__main__":
    main()
