"""Throughput of the two daily DAGs through Airflow, and their API calls per volume.

    python -m bench.bench_daily_dags [--contacts 20000] [--latency-ms 100] [--no-limits]

Runs (dag.test, in this process) the contacts sync once, then a week of esp_to_crm_engagement
and a week of shop_conversions_to_esp against the sandbox with the vendors' limiters and a
per-call latency on (bench/limits.py). Reports activity rows/s, CRM calls per 100k activity rows
and per 100 touched contacts; orders/s and ESP API calls per 10k orders; each week's seconds and
calls beside its floor (bench/limits.py) from the same run's counts. Rates divide the rows by the
summed wall time of the runs (Airflow's own overhead included).
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

from bench import limits
from bench.common import ROOT, add_limit_args, sandbox, write_result


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
    parser.add_argument("--contacts", type=int, default=20_000)
    args = add_limit_args(parser).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        from devtools.airflow_env import airflow_env, notifications_without_deadlines

        os.environ.update(airflow_env(Path(tmp) / "airflow"))
        os.environ.update(notifications_without_deadlines(Path(tmp)))  # runs by dag.test()
        os.environ["MAILSYNC_STAGING_URL"] = (Path(tmp) / "staging").as_uri()
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
        with sandbox(
            Path(tmp), contacts=args.contacts, limits=not args.no_limits, latency_ms=args.latency_ms
        ) as sb:
            dag_run("crm_to_esp_contacts", "2026-11-20T02:00:00Z", full_refresh=True, loyalty_wait_minutes=0)
            days = [datetime(2026, 11, 14, tzinfo=UTC) + timedelta(days=i) for i in range(7)]
            sb.clear_requests()
            rows = seconds = touched = 0.0
            for day in days:
                run, elapsed = dag_run("esp_to_crm_engagement", day.isoformat())
                rows += _report(run)["activity_rows"]
                touched += _report(run).get("contacts_touched", 0)
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
                "contacts_touched": int(touched),
                "crm_calls": len(sb.requests("crm")),
                "esp_calls": len(sb.requests("esp")),
                "crm_calls_per_100_touched_contacts": round(
                    len(sb.requests("crm")) / max(touched, 1) * 100, 2
                ),
                "floor": limits.floor_engagement(int(rows), int(touched), args.latency_ms),
            }
            engagement["ratio_to_floor"] = limits.ratio(seconds, engagement["floor"]["seconds"])
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
                "floor": limits.floor_shop(int(orders), args.latency_ms),
            }
            shop["ratio_to_floor"] = limits.ratio(seconds, shop["floor"]["seconds"])
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
