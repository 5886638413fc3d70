"""crm_to_esp_contacts full sync on the native CeleryExecutor topology, with 1 and with 2 workers.

    python -m bench.bench_celery_topology [--contacts 100000] [--latency-ms 50] [--partitions 4]
                                          [--concurrency 2]

The topology of docker-compose.yaml as local processes (devtools/celery_airflow.py: PostgreSQL
metadata and state DBs, Redis broker, api-server, scheduler, dag-processor, triggerer and the
Celery workers). Both worker counts run in one invocation, one after the other, each on a
freshly generated sandbox (same seed) and a fresh topology, with the same per-call latency on
every vendor. Measured: wall time from trigger to run success, and per task instance its
duration, queue wait and the worker that ran it (from Airflow's task instances).
Not part of `make test`; writes bench/results/celery_topology_<contacts>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from bench.common import PeakMemory, write_result

DAG = "crm_to_esp_contacts"
NIGHT = "2026-11-20T02:00:00+00:00"


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 2)


def run_once(tmp: Path, sb, *, workers: int, args) -> dict:
    from devtools.celery_airflow import CeleryAirflow

    sb.reset(seed=42, contacts=args.contacts, days=7)  # same data for every worker count
    for system in ("esp", "crm", "shop"):
        sb.set_faults(system, latency_ms=args.latency_ms)
    connections = {k: json.loads(v) for k, v in sb.airflow_connections().items()}
    airflow = CeleryAirflow(tmp / f"airflow-{workers}w", workers=workers, concurrency=args.concurrency)
    airflow.start(connections=connections)
    try:
        airflow.wait_for_dag(DAG)
        airflow.unpause(DAG)
        sb.clear_requests()
        conf = {"full_refresh": True, "loyalty_wait_minutes": 0, "partitions": args.partitions}
        with PeakMemory(airflow.workers["w1"].pid) as memory:
            started = time.perf_counter()
            run_id = airflow.trigger(DAG, logical_date=NIGHT, conf=conf)
            state = airflow.wait_for_run(DAG, run_id, timeout=7200)
            wall = time.perf_counter() - started
        assert state == "success", airflow.task_states(DAG, run_id)
        tries = airflow.all_tries(DAG, run_id)
        report = airflow.xcom(DAG, run_id, "report")
    finally:
        airflow.stop()
    tasks = [
        {
            "task": t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else ""),
            "try": t["try_number"],
            "worker": (t.get("hostname") or "").split("@", 1)[0],
            "duration_s": round(t["duration"], 2) if t.get("duration") is not None else None,
            "queued_s": _seconds(t.get("queued_when"), t.get("start_date")),
            "start": t.get("start_date"),
            "end": t.get("end_date"),
        }
        for t in sorted(tries, key=lambda t: t.get("start_date") or "")
    ]
    per_task: dict[str, float] = {}
    for t in tasks:
        name = t["task"].split("[", 1)[0]
        per_task[name] = round(per_task.get(name, 0) + (t["duration_s"] or 0), 2)
    return {
        "workers": workers,
        "concurrency_per_worker": args.concurrency,
        "wall_s": round(wall, 1),
        "sum_of_task_durations_s": round(sum(t["duration_s"] or 0 for t in tasks), 1),
        "task_seconds_by_task": per_task,
        "tasks_per_worker": dict(Counter(t["worker"] for t in tasks)),
        "created": report["created"],
        "updated": report["updated"],
        "esp_calls": len(sb.requests("esp")),
        "crm_calls": len(sb.requests("crm")),
        "peak_rss_mib_under_w1": memory.max_mib(),
        "task_instances": tasks,
    }


def main() -> None:
    from bench.common import sandbox

    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2, help="task slots per worker")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, sandbox(Path(tmp), contacts=args.contacts) as sb:
        runs = [run_once(Path(tmp), sb, workers=n, args=args) for n in (1, 2)]
    one, two = runs
    write_result(
        f"celery_topology_{args.contacts}",
        {
            "contacts": args.contacts,
            "latency_ms": args.latency_ms,
            "partitions": args.partitions,
            "one_worker": one,
            "two_workers": two,
            "wall_ratio_one_over_two": round(one["wall_s"] / two["wall_s"], 2),
            # the machine is shared: a load far above its CPU count inflates every figure
            "load_average_1_5_15_before": [round(x, 1) for x in load_before],
            "load_average_1_5_15_after": [round(x, 1) for x in os.getloadavg()],
        },
    )


if __name__ == "__main__":
    main()
