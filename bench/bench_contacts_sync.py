"""crm_to_esp_contacts end to end through Airflow: a full initial sync and a 1%-change night.

    python -m bench.bench_contacts_sync [--contacts 20000] [--latency-ms 100] [--partitions 2] [--no-limits]

A real Airflow (scheduler, LocalExecutor, each component its own process) runs the DAG against
the sandbox with the vendors' limiters and a per-call latency on (bench/limits.py). Measured: wall
time from trigger to run success, seconds per task (from Airflow's task instances), API calls
(from the sandbox's request log), peak RSS of the task processes; each night beside its floor
(bench/limits.py) computed from the same run's counts. Beside it, in the same run on the same
data: the naive baseline a hand-written script would be, row by row with no diff: page the CRM,
then one PUT per member. It is timed on a sample of members and extrapolated; its API calls are
counted. (bench/baseline_sdk.py does the same with the vendors' official SDKs.)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import requests

from bench import limits
from bench.common import PeakMemory, add_limit_args, one_percent_night, sandbox, write_result

DAG = "crm_to_esp_contacts"


def calls(sb, system: str, *, writes: bool = False) -> int:
    rows = sb.requests(system)
    if writes:
        rows = [r for r in rows if r["method"] in ("POST", "PUT", "PATCH", "DELETE")]
    return len(rows)


def run_night(airflow, sb, logical_date: str, conf: dict) -> dict:
    sb.clear_requests()
    started = time.perf_counter()
    run_id = airflow.trigger(DAG, logical_date=logical_date, conf=conf)
    state = airflow.wait_for_run(DAG, run_id, timeout=7200)
    wall = time.perf_counter() - started
    assert state == "success", airflow.task_states(DAG, run_id)
    report = airflow.xcom(DAG, run_id, "report")
    # the sandbox's own seconds on these calls (one event loop serves every vendor): a floor of
    # this machine beside the vendors' (a vendor serves many calls at once; the sandbox one by one)
    served = [r["served_ms"] or 0 for r in sb.requests()]
    return {
        "run_id": run_id,
        "wall_s": round(wall, 1),
        "task_seconds_by_task": task_seconds(airflow, run_id),
        "airflow_time": airflow_time(airflow, run_id),
        "crm_calls": calls(sb, "crm"),
        "esp_calls": calls(sb, "esp"),
        "esp_write_calls": calls(sb, "esp", writes=True),
        "sandbox_busy_s": round(sum(served) / 1000, 1),
        "extracted": report["extracted"],
        "quarantined": report["quarantined"],
        "created": report["created"],
        "updated": report["updated"],
        "unchanged": report["unchanged"],
    }


def task_seconds(airflow, run_id: str) -> dict[str, float]:
    """Seconds per task of a run (mapped tasks summed), from Airflow's task instances."""
    path = f"dags/{DAG}/dagRuns/{run_id.replace('+', '%2B')}/taskInstances"
    per_task: dict[str, float] = {}
    for t in airflow.api("GET", path)["task_instances"]:
        per_task[t["task_id"]] = round(per_task.get(t["task_id"], 0) + (t.get("duration") or 0), 2)
    return per_task


def airflow_time(airflow, run_id: str) -> dict[str, float]:
    """Where a run's wall time went besides the tasks' own work, from its task instances: seconds
    from the first task's queueing to the last task's end (`span_s`), of which no task was
    running (`no_task_running_s`: the scheduler choosing, the executor starting the next task's
    process), and the seconds each task spent between queued and running, summed
    (`queued_to_running_s`)."""
    from datetime import datetime

    path = f"dags/{DAG}/dagRuns/{run_id.replace('+', '%2B')}/taskInstances"
    spans, waits = [], 0.0
    for t in airflow.api("GET", path)["task_instances"]:
        moments = [t.get(k) for k in ("queued_when", "start_date", "end_date")]
        if not all(moments):
            continue
        queued, start, end = (datetime.fromisoformat(m.replace("Z", "+00:00")) for m in moments)
        spans.append((queued, start, end))
        waits += max(0.0, (start - queued).total_seconds())
    if not spans:
        return {}
    first, last = min(q for q, _, _ in spans), max(e for _, _, e in spans)
    running, covered, reach = sorted((s, e) for _, s, e in spans), 0.0, first
    for start, end in running:  # the union of the tasks' running intervals
        start = max(start, reach)
        if end > start:
            covered += (end - start).total_seconds()
            reach = end
    span = (last - first).total_seconds()
    return {
        "span_s": round(span, 2),
        "no_task_running_s": round(span - covered, 2),
        "queued_to_running_s": round(waits, 2),
        "task_instances": len(spans),
    }


def peak_rss_by_task(airflow, run_ids: list[str], memory: PeakMemory) -> dict[str, float]:
    """Highest RSS (MiB) of each task's processes over these runs: a task process is named by its
    task instance id (`airflow worker -- <id>`), which the API lists per run."""
    names = {}
    for run_id in run_ids:
        path = f"dags/{DAG}/dagRuns/{run_id.replace('+', '%2B')}/taskInstances"
        names |= {t["id"]: t["task_id"] for t in airflow.api("GET", path)["task_instances"]}
    peaks: dict[str, float] = {}
    for rss, cmdline in memory.peaks.values():
        task = next((task for ti_id, task in names.items() if ti_id in cmdline), None)
        if task:
            peaks[task] = round(max(peaks.get(task, 0.0), rss), 1)
    return dict(sorted(peaks.items(), key=lambda kv: -kv[1]))


def naive(sb, contacts: int, sample: int, crm_seconds_per_page: float) -> dict:
    """Row by row, no diff: every member PUT on every run (timed on `sample` members)."""
    from mailsync.hooks.esp import subscriber_hash

    session = requests.Session()
    session.auth = ("naive", sb.info["credentials"]["esp_api_key"])
    base = f"{sb.url('esp')}/lists/{sb.info['list_id']}/members"
    members = [c for c in sb.crm_contacts()[:sample] if c["properties"]["email"]]
    started = time.perf_counter()
    for c in members:
        email = c["properties"]["email"].strip()
        body = {"email_address": email, "status_if_new": "subscribed", "merge_fields": {"FNAME": "x"}}
        session.put(f"{base}/{subscriber_hash(email)}", json=body, timeout=30)
    per_member = (time.perf_counter() - started) / len(members)
    pages = contacts / 100
    return {
        "sample": len(members),
        "seconds_per_member": round(per_member, 4),
        "estimated_wall_s": round(contacts * per_member + pages * crm_seconds_per_page),
        "api_calls": int(contacts + pages),
        "write_calls": contacts,
    }


def main() -> None:
    from devtools.local_airflow import LocalAirflow

    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--naive-sample", type=int, default=100)
    args = add_limit_args(parser).parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        sandbox(
            Path(tmp), contacts=args.contacts, limits=not args.no_limits, latency_ms=args.latency_ms
        ) as sb,
    ):
        import os

        env = {
            "MAILSYNC_STAGING_URL": (Path(tmp) / "staging").as_uri(),
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        }
        env |= {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CONN_")}
        airflow = LocalAirflow(Path(tmp) / "airflow", env=env)
        airflow.start()
        try:
            airflow.wait_for_dag(DAG)
            airflow.unpause(DAG)
            conf = {"loyalty_wait_minutes": 0, "partitions": args.partitions}
            with PeakMemory(airflow.processes["scheduler"].pid) as memory:
                full = run_night(airflow, sb, "2026-11-20T02:00:00+00:00", {**conf, "full_refresh": True})
                changed = one_percent_night(sb)
                night = run_night(airflow, sb, "2026-11-21T02:00:00+00:00", conf)
            night["contacts_changed"] = len(changed)
            task_peak = max(
                (rss for pid, (rss, _) in memory.peaks.items() if pid != memory.root.pid), default=0
            )
            by_task = peak_rss_by_task(airflow, [full["run_id"], night["run_id"]], memory)
        finally:
            airflow.stop()
        crm_page_s = full["wall_s"] / max(full["crm_calls"], 1)  # an upper bound per CRM page, from our run
        baseline = naive(sb, args.contacts, args.naive_sample, crm_page_s)
    full["floor"] = limits.floor_full_sync(args.contacts, full["created"] + full["updated"], args.latency_ms)
    full["floor_list_api"] = limits.floor_full_sync_list_api(
        args.contacts, full["created"] + full["updated"], args.latency_ms
    )
    full["ratio_to_floor"] = limits.ratio(full["wall_s"], full["floor"]["seconds"])
    full["ratio_to_floor_list_api"] = limits.ratio(full["wall_s"], full["floor_list_api"]["seconds"])
    night["floor"] = limits.floor_night(night["contacts_changed"], args.latency_ms)
    night["ratio_to_floor"] = limits.ratio(night["wall_s"], night["floor"]["seconds"])
    for run in (full, night):  # against the higher of both floors: what this machine can reach at best
        floor_here = max(run["floor"]["seconds"], run["sandbox_busy_s"])
        run["ratio_to_floor_or_sandbox_busy"] = limits.ratio(run["wall_s"], floor_here)
    write_result(
        f"contacts_sync_{args.contacts}",
        {
            "contacts": args.contacts,
            "latency_ms": args.latency_ms,
            "partitions": args.partitions,
            "full_sync": full,
            "one_percent_night": night,
            "peak_rss_mib_per_task_process": round(task_peak, 1),  # any process under the scheduler
            "peak_rss_mib_by_task": by_task,
            "naive_row_by_row_no_diff": baseline,
            "full_sync_speedup_vs_naive": round(baseline["estimated_wall_s"] / full["wall_s"], 1),
            "night_speedup_vs_naive": round(baseline["estimated_wall_s"] / night["wall_s"], 1),
            "night_write_calls_ratio_naive_over_ours": round(
                baseline["write_calls"] / max(night["esp_write_calls"], 1)
            ),
        },
    )


if __name__ == "__main__":
    main()
